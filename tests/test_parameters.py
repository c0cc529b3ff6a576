"""Run forms read from a script's argparse (runs/parameters.py): reading the
source with ast, validating params and building the argv the script expects."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import textwrap

import pytest
from django.core.management import CommandError, call_command

from runs import services
from runs.models import Run
from runs.parameters import ParamError, params_to_argv, read_parameters
from runs.serializers import task_json
from tests.conftest import ROOT, subprocess_env


def script(body: str) -> str:
    """A script whose parser is built by ``body`` (indented code)."""
    return "import argparse\n\nparser = argparse.ArgumentParser()\n" + textwrap.dedent(body)


def public(code: str) -> list[dict]:
    spec = read_parameters(code)
    assert spec.readable, spec.note
    return spec.public()


def one(code: str) -> dict:
    [param] = public(code)
    return param


def P(name, kind="option", type="str", choices=None, default=None, required=False, help=""):
    return {
        "name": name,
        "kind": kind,
        "type": type,
        "choices": choices,
        "default": default,
        "required": required,
        "help": help,
    }


# Reading ------------------------------------------------------------------

READ_CASES = {
    "positional": ('parser.add_argument("source")', P("source", "positional", required=True)),
    "optional positional with default": (
        'parser.add_argument("target", nargs="?", default="out.txt")',
        P("target", "positional", default="out.txt"),
    ),
    "option with default and help": (
        'parser.add_argument("--name", default="world", help="who to greet")',
        P("name", default="world", help="who to greet"),
    ),
    "store_true flag": (
        'parser.add_argument("--dry-run", action="store_true")',
        P("dry_run", "flag", "bool", default=False),
    ),
    "store_false flag": (
        'parser.add_argument("--no-cache", dest="cache", action="store_false")',
        P("cache", "flag", "bool", default=True),
    ),
    "choices": (
        'parser.add_argument("--mode", choices=["fast", "slow"], default="fast")',
        P("mode", choices=["fast", "slow"], default="fast"),
    ),
    "type int, string default converted like argparse does": (
        'parser.add_argument("--count", type=int, default="3")',
        P("count", type="int", default=3),
    ),
    "type float": (
        'parser.add_argument("--rate", type=float, default=0.5)',
        P("rate", type="float", default=0.5),
    ),
    "other types read as text": (
        'parser.add_argument("--path", type=pathlib.Path)',
        P("path", type="str"),
    ),
    "nargs ?": ('parser.add_argument("--level", nargs="?")', P("level")),
    "nargs * positional": (
        'parser.add_argument("files", nargs="*")',
        P("files", "positional"),
    ),
    "nargs + positional": (
        'parser.add_argument("files", nargs="+")',
        P("files", "positional", required=True),
    ),
    "nargs from argparse constant": (
        'parser.add_argument("rest", nargs=argparse.REMAINDER)',
        P("rest", "positional"),
    ),
    "required option": (
        'parser.add_argument("--token", required=True)',
        P("token", required=True),
    ),
    "dest": (
        'parser.add_argument("--out", dest="output_path")',
        P("output_path"),
    ),
    "short and long names: dest from the long one": (
        'parser.add_argument("-b", "--batch-size", type=int, default=50)',
        P("batch_size", type="int", default=50),
    ),
    "short name only": (
        'parser.add_argument("-q", action="store_true")',
        P("q", "flag", "bool", default=False),
    ),
    "count": (
        'parser.add_argument("-v", "--verbose", action="count")',
        P("verbose", type="int", default=0),
    ),
    "help with %(default)s": (
        'parser.add_argument("--n", type=int, default=5, help="how many (default: %(default)s)")',
        P("n", type="int", default=5, help="how many (default: 5)"),
    ),
    "choices and default from module constants": (
        'parser.add_argument("--mode", choices=MODES, default=DEFAULT)\nMODES = ("a", "b")\n'
        'DEFAULT = "b"',
        P("mode", choices=["a", "b"], default="b"),
    ),
    "choices as a range": (
        'parser.add_argument("--level", type=int, choices=range(1, 4))',
        P("level", type="int", choices=[1, 2, 3]),
    ),
    "computed default is null": (
        'parser.add_argument("--home", default=os.environ.get("HOME"))',
        P("home"),
    ),
    "BooleanOptionalAction": (
        'parser.add_argument("--color", action=argparse.BooleanOptionalAction, default=True)',
        P("color", "flag", "bool", default=True),
    ),
    "append": ('parser.add_argument("--tag", action="append")', P("tag")),
    "set_defaults after add_argument wins": (
        'parser.add_argument("--size", type=int, default=1)\nparser.set_defaults(size=9)',
        P("size", type="int", default=9),
    ),
}


@pytest.mark.parametrize("body, expected", READ_CASES.values(), ids=READ_CASES.keys())
def test_argparse_styles_are_read(body, expected):
    assert one(script(body)) == expected


def test_read_description_matches_what_argparse_itself_builds():
    """The same parser, run for real here (never the script), agrees with the
    description on names, defaults and required."""
    body = """
    parser.add_argument("src")
    parser.add_argument("-n", "--count", type=int, default=3)
    parser.add_argument("--no-cache", dest="cache", action="store_false")
    parser.add_argument("--mode", choices=["a", "b"], default="a")
    parser.add_argument("--files", nargs="*", default=[])
    """
    namespace: dict = {}
    exec(script(body), namespace)
    actions = {a.dest: a for a in namespace["parser"]._actions if a.dest != "help"}
    for param in public(script(body)):
        action = actions[param["name"]]
        assert param["default"] == action.default
        assert param["required"] == action.required
        assert param["choices"] == (list(action.choices) if action.choices else None)


def test_internals_keep_option_string_nargs_and_groups():
    spec = read_parameters(
        script(
            """
            grp = parser.add_argument_group("Output")
            grp.add_argument("-o", "--output-file", nargs=2)
            ex = parser.add_mutually_exclusive_group(required=True)
            ex.add_argument("--json", action="store_true")
            ex.add_argument("--csv", action="store_true")
            ex2 = parser.add_mutually_exclusive_group()
            ex2.add_argument("--quiet", action="store_true")
            ex2.add_argument("--loud", action="store_true")
            parser.add_argument_group("Chained").add_argument("--x")
            """
        )
    )
    assert spec.readable
    out = spec.get("output_file")
    assert (out.option, out.option_strings, out.nargs, out.section) == (
        "--output-file",
        ("-o", "--output-file"),
        2,
        "Output",
    )
    assert out.multiple
    assert spec.get("x").section == "Chained"
    assert spec.get("json").exclusive_group == spec.get("csv").exclusive_group == 0
    assert spec.get("quiet").exclusive_group == spec.get("loud").exclusive_group == 1
    assert [(g.required, g.names) for g in spec.exclusive_groups] == [
        (True, ("json", "csv")),
        (False, ("quiet", "loud")),
    ]
    assert "One of json, csv is required." in spec.note


def test_help_is_skipped_and_suppressed_arguments_are_hidden():
    code = script(
        """
        parser.add_argument("--version", action="version", version="1.0")
        parser.add_argument("--secret-debug", help=argparse.SUPPRESS)
        parser.add_argument("--shown")
        """
    )
    assert [p["name"] for p in public(code)] == ["shown"]


def test_computed_default_is_noted():
    spec = read_parameters(script('parser.add_argument("--when", default=time.time())'))
    assert spec.readable
    assert spec.get("when").default is None
    assert spec.get("when").default_computed
    assert "computes the default of when" in spec.note


def test_parser_inside_main_under_main_guard_is_read():
    code = """
    import argparse

    def main():
        parser = argparse.ArgumentParser(description="x")
        parser.add_argument("--n", type=int, default=2)
        return parser.parse_args()

    if __name__ == "__main__":
        args = main()
    """
    assert public(textwrap.dedent(code)) == [P("n", type="int", default=2)]


def test_parser_with_no_arguments_is_readable_and_empty():
    spec = read_parameters(
        "import argparse\nargparse.ArgumentParser\np = argparse.ArgumentParser()"
    )
    assert spec.readable and spec.public() == []


UNREADABLE_CASES = {
    "subparsers": (
        script('sub = parser.add_subparsers()\nrun = sub.add_parser("run")'),
        "subcommands",
    ),
    "arguments added in a loop": (
        script('for name in ["a", "b"]:\n    parser.add_argument("--" + name)'),
        "loop",
    ),
    "computed names": (script("NAME = input()\nparser.add_argument(NAME)"), "is computed"),
    "f-string names": (script('x = "a"\nparser.add_argument(f"--{x}")'), "is computed"),
    "**kwargs": (script('opts = {}\nparser.add_argument("--a", **opts)'), "keyword arguments"),
    "conditional arguments": (
        script('import sys\nif sys.platform == "linux":\n    parser.add_argument("--a")'),
        "under a condition",
    ),
    "parser handed to a helper": (
        script('def common(p):\n    p.add_argument("--a")\n\ncommon(parser)'),
        "add_argument is called on 'p'",
    ),
    "parser built by a factory": (
        "import argparse\n\ndef make():\n    return argparse.ArgumentParser()\n\np = make()",
        "plain name",
    ),
    "several parsers": (
        script("other = argparse.ArgumentParser(parents=[parser])"),
        "several argument parsers",
    ),
    "custom action": (
        script('parser.add_argument("--a", action=MyAction)'),
        "MyAction",
    ),
    "two arguments with one dest": (
        script(
            'parser.add_argument("--on", dest="x", action="store_true")\n'
            'parser.add_argument("--off", dest="x", action="store_false")'
        ),
        "two arguments store into 'x'",
    ),
    "no argparse at all": ("import sys\nprint(sys.argv)", "does not build"),
    "syntax error": ("def (:", "syntax error"),
}


@pytest.mark.parametrize("code, reason", UNREADABLE_CASES.values(), ids=UNREADABLE_CASES.keys())
def test_what_cannot_be_read_falls_back_with_a_note(code, reason):
    spec = read_parameters(code)
    assert not spec.readable
    assert spec.public() == []
    assert reason in spec.note
    with pytest.raises(ParamError) as caught:
        params_to_argv(spec, {"a": "1"})
    assert caught.value.field == "params"
    assert params_to_argv(spec, {}) == []


def test_the_shipped_scripts_are_read():
    hello = read_parameters((ROOT / "tasks" / "hello.py").read_text())
    assert hello.readable
    assert hello.public() == [
        P("name", default="world", help="who to greet"),
        P("times", type="int", default=1, help="how many greetings"),
    ]
    # hello keeps running with no arguments at all.
    assert not any(p.required for p in hello.parameters)
    assert params_to_argv(hello, {}) == []

    data = read_parameters((ROOT / "tasks" / "data_process.py").read_text())
    assert data.readable
    assert [(p["name"], p["type"], p["default"]) for p in data.public()] == [
        ("records", "int", 200),
        ("batch_size", "int", 50),
        ("delay", "float", 0.2),
        ("fail_rate", "float", 0.0),
    ]


def test_reading_is_cached_by_code():
    code = script('parser.add_argument("--cached")')
    assert read_parameters(code) is read_parameters(code)
    assert read_parameters(code).public() is not read_parameters(code).public()


# Building argv ---------------------------------------------------------------

FULL = script(
    """
    parser.add_argument("src")
    parser.add_argument("dst", nargs="?", default="out")
    parser.add_argument("-n", "--count", type=int, default=3)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--mode", choices=["fast", "slow"], default="fast")
    parser.add_argument("--tags", nargs="+")
    parser.add_argument("--pair", nargs=2, type=int)
    parser.add_argument("--tag", action="append")
    parser.add_argument("-v", "--verbose", action="count")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--no-cache", dest="cache", action="store_false")
    parser.add_argument("--color", action=argparse.BooleanOptionalAction)
    ex = parser.add_mutually_exclusive_group()
    ex.add_argument("--json", action="store_true")
    ex.add_argument("--csv", action="store_true")
    """
)


def argv(params: dict, code: str = FULL) -> list[str]:
    return params_to_argv(read_parameters(code), params)


def real_parse(params: dict, code: str = FULL) -> dict:
    """What the parser itself makes of the argv we build (run here, in the
    test, to check the argv — taskrun itself never runs it)."""
    namespace: dict = {}
    exec(code, namespace)
    parser: argparse.ArgumentParser = namespace["parser"]
    return vars(parser.parse_args(argv(params, code)))


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"src": "a"}, ["a"]),
        ({"src": "a", "dst": "b", "count": "7"}, ["a", "b", "--count", "7"]),
        ({"src": "a", "count": 7, "rate": "0.25"}, ["a", "--count", "7", "--rate", "0.25"]),
        ({"src": "a", "rate": 2}, ["a", "--rate", "2.0"]),
        ({"src": "a", "mode": "slow"}, ["a", "--mode", "slow"]),
        ({"src": "a", "tags": ["x", "y z"]}, ["a", "--tags", "x", "y z"]),
        ({"src": "a", "tags": "x 'y z'"}, ["a", "--tags", "x", "y z"]),
        ({"src": "a", "pair": [1, "2"]}, ["a", "--pair", "1", "2"]),
        ({"src": "a", "tag": ["p", "q"]}, ["a", "--tag", "p", "--tag", "q"]),
        ({"src": "a", "verbose": 2}, ["a", "--verbose", "--verbose"]),
        ({"src": "a", "dry_run": True, "cache": False}, ["a", "--dry-run", "--no-cache"]),
        ({"src": "a", "dry_run": "false", "cache": "true"}, ["a"]),
        ({"src": "a", "dry_run": "on"}, ["a", "--dry-run"]),
        ({"src": "a", "color": False}, ["a", "--no-color"]),
        ({"src": "a", "json": True, "csv": False}, ["a", "--json"]),
        ({"src": "a", "count": "", "rate": None, "tags": []}, ["a"]),
        ({"src": "a", "count": "-2"}, ["a", "--count=-2"]),
        ({"src": "-x", "mode": "fast"}, ["--mode", "fast", "--", "-x"]),
    ],
)
def test_params_become_the_expected_argv(params, expected):
    assert argv(params) == expected


def test_the_argv_parses_back_to_the_params():
    params = {
        "src": "-weird name",
        "dst": "b",
        "count": "-4",
        "rate": 1.5,
        "mode": "slow",
        "tags": ["t1", "t2"],
        "pair": [1, 2],
        "tag": ["-p"],
        "verbose": 3,
        "dry_run": True,
        "cache": False,
        "color": True,
        "csv": "on",
    }
    parsed = real_parse(params)
    assert parsed == {
        "src": "-weird name",
        "dst": "b",
        "count": -4,
        "rate": 1.5,
        "mode": "slow",
        "tags": ["t1", "t2"],
        "pair": [1, 2],
        "tag": ["-p"],
        "verbose": 3,
        "dry_run": True,
        "cache": False,
        "color": True,
        "json": False,
        "csv": True,
    }


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({"src": "a", "nope": 1}, "nope", "unknown parameter"),
        ({"dst": "b"}, "src", "is required"),
        ({"src": "a", "count": "many"}, "count", "must be an integer"),
        ({"src": "a", "count": 1.5}, "count", "must be an integer"),
        ({"src": "a", "count": True}, "count", "must be an integer"),
        ({"src": "a", "rate": "fast"}, "rate", "must be a number"),
        ({"src": "a", "rate": "nan"}, "rate", "must be a number"),
        ({"src": "a", "mode": "medium"}, "mode", "must be one of: fast, slow"),
        ({"src": "a", "dry_run": "maybe"}, "dry_run", "must be true or false"),
        ({"src": "a", "json": True, "csv": True}, "csv", "cannot be used together with json"),
        ({"src": "a", "pair": [1]}, "pair", "needs exactly 2 values"),
        ({"src": "a", "pair": [1, "x"]}, "pair", "must be an integer"),
        ({"src": "a", "count": [1, 2]}, "count", "takes a single value"),
        ({"src": "a", "tags": ["x", "-y"]}, "tags", "cannot start with '-'"),
        ({"src": "a", "mode": {"a": 1}}, "mode", "must be a single value"),
        ({"src": "a", "verbose": -1}, "verbose", "must not be negative"),
    ],
)
def test_bad_params_are_refused_naming_the_field(params, field, message):
    with pytest.raises(ParamError) as caught:
        argv(params)
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_required_option_and_required_exclusive_group():
    code = script(
        """
        parser.add_argument("--token", required=True)
        ex = parser.add_mutually_exclusive_group(required=True)
        ex.add_argument("--json", action="store_true")
        ex.add_argument("--csv", action="store_true")
        """
    )
    with pytest.raises(ParamError, match="^token: is required"):
        argv({"json": True}, code)
    with pytest.raises(ParamError, match="^json: one of json, csv is required"):
        argv({"token": "t"}, code)
    assert real_parse({"token": "t", "csv": True}, code) == {
        "token": "t",
        "json": False,
        "csv": True,
    }


def test_a_skipped_optional_positional_cannot_shift_the_next_one():
    code = script('parser.add_argument("a", nargs="?")\nparser.add_argument("b", nargs="?")')
    with pytest.raises(ParamError, match="^b: cannot be given without a"):
        argv({"b": "x"}, code)
    code = script('parser.add_argument("a", nargs="?")\nparser.add_argument("b")')
    assert real_parse({"b": "x"}, code) == {"a": None, "b": "x"}


def test_params_must_be_an_object():
    with pytest.raises(ParamError, match="^params: must be an object"):
        params_to_argv(read_parameters(FULL), ["src"])


# Wiring ---------------------------------------------------------------------

E2E_SCRIPT = """
import argparse, json

parser = argparse.ArgumentParser(description="echo my arguments")
parser.add_argument("source", help="where from")
parser.add_argument("--batch-size", type=int, default=50)
parser.add_argument("--ratio", type=float, default=0.5)
parser.add_argument("--mode", choices=["fast", "slow"], default="fast")
parser.add_argument("--files", nargs="*", default=[])
parser.add_argument("--dry-run", action="store_true")
print(json.dumps(vars(parser.parse_args())))
"""


@pytest.mark.django_db(transaction=True)
def test_params_reach_the_script_as_the_argv_it_expects(make_task, execute):
    task = make_task("echo_args", E2E_SCRIPT)
    spec = read_parameters(task.read_code())
    params = {
        "source": "s3://bucket/-x",
        "batch_size": "10",
        "mode": "slow",
        "files": ["a b.csv", "c.csv"],
        "dry_run": True,
    }
    run = execute(services.start_run(task, args=params_to_argv(spec, params)))
    assert run.status == Run.Status.SUCCEEDED, run.read_log()
    assert json.loads(run.read_log()) == {
        "source": "s3://bucket/-x",
        "batch_size": 10,
        "ratio": 0.5,
        "mode": "slow",
        "files": ["a b.csv", "c.csv"],
        "dry_run": True,
    }


@pytest.mark.django_db
def test_task_json_describes_the_parameters(make_task):
    task = make_task("echo_args", E2E_SCRIPT)
    described = task_json(task)["parameters"]
    assert [p["name"] for p in described] == [
        "source",
        "batch_size",
        "ratio",
        "mode",
        "files",
        "dry_run",
    ]
    assert described[0] == P("source", "positional", required=True, help="where from")
    assert described[3]["choices"] == ["fast", "slow"]
    json.dumps(described)  # plain JSON values only

    dynamic = make_task("dynamic", "import sys\nprint(sys.argv)")
    assert task_json(dynamic)["parameters"] == []


def manage(tasks_dir, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=subprocess_env(tasks_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_run_task_help_params_prints_the_form_and_exits_0(make_task, tasks_dir):
    make_task("echo_args", E2E_SCRIPT)
    make_task("loose", "import sys\nprint(sys.argv)")
    result = manage(tasks_dir, "run_task", "echo_args", "--help-params")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "KIND",
        "OPTION",
        "TYPE",
        "DEFAULT",
        "REQUIRED",
        "CHOICES",
        "HELP",
    ]
    assert lines[1].split() == ["source", "positional", "str", "-", "yes", "where", "from"]
    assert lines[2].split() == ["batch_size", "option", "--batch-size", "int", "50", "no"]
    assert lines[4].split() == ["mode", "option", "--mode", "str", '"fast"', "no", "fast|slow"]
    assert lines[5].split() == ["files", "option", "--files", "...", "str", "[]", "no"]
    assert Run.objects.count() == 0

    result = manage(tasks_dir, "run_task", "loose", "--help-params")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "CommandError: loose has no parameter form: "
        "The script does not build an argparse.ArgumentParser."
    ]


@pytest.mark.django_db
def test_run_task_param_queues_the_validated_argv(make_task):
    make_task("echo_args", E2E_SCRIPT)
    call_command(
        "run_task",
        "echo_args",
        "--param",
        "source=here",
        "--param=batch_size=5",
        "--param",
        "files=a",
        "--param",
        "files=b c",
        "--param",
        "dry_run=true",
        stdout=io.StringIO(),
    )
    run = Run.objects.get()
    assert run.args == ["here", "--batch-size", "5", "--files", "a", "b c", "--dry-run"]

    with pytest.raises(CommandError, match="^batch_size: must be an integer$"):
        call_command("run_task", "echo_args", "--param", "batch_size=x", "--param", "source=s")
    with pytest.raises(CommandError, match="not both"):
        call_command("run_task", "echo_args", "--param", "source=s", "extra")
