import argparse
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from runs import services
from runs.models import Run, Task

S = Run.Status
OWN_FLAGS = {"--wait"}


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
        "command). With --wait, stream the log and exit with the script's code."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--wait", action="store_true", help="Stream the log until the run ends.")
        parser.add_argument("script_args", nargs=argparse.REMAINDER, metavar="args")

    def handle(self, *, name, script_args, wait, **options):
        script_args, wait = self._split(script_args, wait)
        task = Task.objects.filter(name=name).first()
        if task is None:
            raise CommandError(f"No task named '{name}'. Run sync_tasks to import scripts.")
        try:
            run = services.start_run(
                task, trigger=Run.Trigger.CLI, args=script_args if script_args else None
            )
        except services.RunRefused as exc:
            raise CommandError(str(exc)) from None
        if not wait:
            self.stdout.write(str(run.pk))
            return
        self.stderr.write(f"run #{run.pk} of {name} queued")
        sys.exit(self._follow(run))

    def _split(self, args: list[str], wait: bool) -> tuple[list[str], bool]:
        if "--" in args:
            cut = args.index("--")
            before, after = args[:cut], args[cut + 1 :]
        else:
            before, after = args, []
        kept = []
        for arg in before:
            if arg in OWN_FLAGS:
                wait = True
            else:
                kept.append(arg)
        return kept + after, wait

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
                if run.status == S.QUEUED and time.monotonic() > waited_note:
                    self.stderr.write("still queued: is a worker cluster running (manage.py qcluster or serve)?")
                    waited_note = float("inf")
                time.sleep(0.2)
        except KeyboardInterrupt:
            self.stderr.write(f"\nstopped following; run #{run.pk} goes on (cancel_run {run.pk} stops it)")
            return 130
        line = f"run #{run.pk} {run.status}"
        if run.reason:
            line += f": {run.reason}"
        self.stderr.write(line)
        return exit_code_for(run)
