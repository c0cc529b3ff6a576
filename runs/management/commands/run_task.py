import argparse
import json
import logging
import sys
import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from runs import schedules, services
from runs.models import Run, Task
from runs.parameters import ParamError, params_to_argv, read_parameters

S = Run.Status
OWN_FLAGS = {"--wait"}
# Options of this command that take a value, also when given after the name.
OWN_OPTIONS = {"--delay", "--at"}


def exit_code_for(run: Run) -> int:
    """The shell's view of a finished run: the script's own code, 124 for a
    timeout (like timeout(1)), 1 for anything else that did not succeed."""
    if run.status == S.SUCCEEDED:
        return 0
    if run.status == S.TIMED_OUT:
        return 124
    if run.status == S.FAILED and run.exit_code and 0 < run.exit_code < 256:
        return run.exit_code
    return 1


class Command(BaseCommand):
    help = (
        "Queue a run of a task and print its id. Arguments after the name go to "
        "the script (put them after -- if they look like options of this "
        "command). With --wait, stream the log and exit with the script's code. "
        "With --delay or --at, the run waits until then."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--wait", action="store_true", help="Stream the log until the run ends."
        )
        parser.add_argument(
            "--delay", metavar="SECONDS", help="Start no earlier than this many seconds from now."
        )
        parser.add_argument(
            "--at", metavar="TIME", help="Start no earlier than this ISO 8601 time."
        )
        parser.add_argument(
            "--help-params",
            action="store_true",
            help="Print the parameters read from the script's argparse, and exit.",
        )
        parser.add_argument(
            "--param",
            action="append",
            metavar="NAME=VALUE",
            help="A parameter of the script (see --help-params); repeat it for more, "
            "or give one name several times for a list. Instead of plain arguments.",
        )
        parser.add_argument("script_args", nargs=argparse.REMAINDER, metavar="args")

    passthrough: list[str] = []

    def run_from_argv(self, argv: list[str]) -> None:
        # argparse drops the first "--" before REMAINDER sees it; keep what
        # follows it aside, so it always reaches the script untouched.
        if "--" in argv[2:]:
            cut = argv.index("--", 2)
            argv, self.passthrough = argv[:cut], argv[cut + 1 :]
        super().run_from_argv(argv)

    def handle(self, *, name, script_args, wait, delay=None, at=None, **options):
        if self.passthrough:
            script_args = [*script_args, "--", *self.passthrough]
        # This command's stdout is data (the run id, the log): keep the
        # queue's own "Enqueued" chatter out of it.
        logging.getLogger("django-q").setLevel(logging.WARNING)
        when = {"--delay": delay, "--at": at}
        script_args = self._take_param_options(script_args, options)
        script_args, wait = self._split(script_args, wait, when)
        task = Task.objects.filter(name=name).first()
        if task is None:
            raise CommandError(f"No task named '{name}'. Run sync_tasks to import scripts.")
        if options["help_params"]:
            self._print_params(task)
            return
        if options["param"]:
            script_args = self._params_argv(task, options["param"], script_args)
        try:
            not_before = schedules.parse_start_time(delay=when["--delay"], at=when["--at"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        try:
            run = services.start_run(
                task,
                trigger=Run.Trigger.CLI,
                args=script_args if script_args else None,
                not_before=not_before,
            )
        except services.RunRefused as exc:
            raise CommandError(str(exc)) from None
        if not wait:
            self.stdout.write(str(run.pk))
            return
        if run.not_before:
            self.stderr.write(f"run #{run.pk} of {name} waits until {run.not_before.isoformat()}")
        else:
            self.stderr.write(f"run #{run.pk} of {name} queued")
        sys.exit(self._follow(run))

    def _split(
        self, args: list[str], wait: bool, when: dict[str, str | None]
    ) -> tuple[list[str], bool]:
        if "--" in args:
            cut = args.index("--")
            before, after = args[:cut], args[cut + 1 :]
        else:
            before, after = args, []
        kept = []
        rest = iter(before)
        for arg in rest:
            option, eq, value = arg.partition("=")
            if arg in OWN_FLAGS:
                wait = True
            elif option in OWN_OPTIONS:
                if not eq:
                    value = next(rest, None)
                    if value is None:
                        raise CommandError(f"{option} needs a value.")
                when[option] = value
            else:
                kept.append(arg)
        return kept + after, wait

    def _take_param_options(self, args: list[str], options: dict) -> list[str]:
        """--help-params and --param given after the name land in the script's
        arguments (REMAINDER); take them back, up to a "--"."""
        kept: list[str] = []
        rest = iter(args)
        for arg in rest:
            if arg == "--":
                return [*kept, arg, *rest]
            if arg == "--help-params":
                options["help_params"] = True
            elif arg == "--param" or arg.startswith("--param="):
                value = arg.partition("=")[2] if "=" in arg else next(rest, None)
                if value is None:
                    raise CommandError("--param needs NAME=VALUE.")
                options["param"] = [*(options["param"] or []), value]
            else:
                kept.append(arg)
        return kept

    def _params_argv(self, task: Task, pairs: list[str], script_args: list[str]) -> list[str]:
        if script_args:
            raise CommandError(
                "Give the script's arguments as --param or as plain arguments, not both."
            )
        params: dict[str, str | list[str]] = {}
        for pair in pairs:
            key, eq, value = pair.partition("=")
            if not eq or not key:
                raise CommandError(f"--param {pair}: expected NAME=VALUE.")
            if key in params:
                # A name given again makes a list, for nargs and append options.
                before = params[key]
                params[key] = [*(before if isinstance(before, list) else [before]), value]
            else:
                params[key] = value
        try:
            return params_to_argv(read_parameters(task.read_code()), params)
        except ParamError as exc:
            raise CommandError(str(exc)) from None

    def _print_params(self, task: Task) -> None:
        spec = read_parameters(task.read_code())
        if not spec.readable:
            raise CommandError(f"{task.name} has no parameter form: {spec.note}")
        if not spec.parameters:
            self.stdout.write(f"{task.name} takes no parameters.")
            return
        rows = [("NAME", "KIND", "OPTION", "TYPE", "DEFAULT", "REQUIRED", "CHOICES", "HELP")]
        for p in spec.parameters:
            shown = p.public()
            rows.append(
                (
                    p.name,
                    p.kind,
                    (p.option or "") + (" ..." if p.multiple else ""),
                    p.type,
                    "-" if shown["default"] is None else json.dumps(shown["default"]),
                    "yes" if p.required else "no",
                    "|".join(map(str, shown["choices"] or [])),
                    p.help,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            self.stdout.write("  ".join([*cells, row[-1]]).rstrip())
        if spec.note:
            self.stdout.write(spec.note)
        self.stdout.write(f"Give them as: run_task {task.name} --param NAME=VALUE ...")

    def _follow(self, run: Run) -> int:
        out = sys.stdout.buffer
        offset = 0
        waited_note = time.monotonic() + 10
        try:
            while True:
                run.refresh_from_db()
                data = run.read_log(offset)
                if data:
                    out.write(data)
                    out.flush()
                    offset += len(data)
                if not run.is_active and offset >= run.log_size:
                    break
                if run.status == S.QUEUED and run.not_before:
                    waited_note = time.monotonic() + 10
                elif run.status == S.QUEUED and time.monotonic() > waited_note:
                    self.stderr.write(
                        "still queued: is a worker cluster running (manage.py qcluster or serve)?"
                    )
                    waited_note = float("inf")
                time.sleep(0.2)
        except KeyboardInterrupt:
            self.stderr.write(
                f"\nstopped following; run #{run.pk} goes on (cancel_run {run.pk} stops it)"
            )
            return 130
        line = f"run #{run.pk} {run.status}"
        if run.reason:
            line += f": {run.reason}"
        self.stderr.write(line)
        return exit_code_for(run)
