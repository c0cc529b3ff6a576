"""The task calls of the JSON API: list, create, read, update, delete, execute
and stop, with every status code of CONTRACT. Bad input changes nothing."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connections

from runs import services
from runs.models import CodeRevision, Run, Task, TaskLink
from tests.api_client import Api, make_user

pytestmark = pytest.mark.django_db
S = Run.Status


@pytest.fixture
def hello(make_task):
    return make_task("hello", "print('hello')\n", description="Says hello")


# --- list --------------------------------------------------------------------


def test_list_tasks_shows_every_task_with_its_last_run(viewer, make_task):
    make_task("a-task", "pass")
    b = make_task("b_task", "pass")
    services.start_run(b)
    last = services.start_run(make_task("c", "pass"))
    response = viewer.get("/api/tasks")
    assert response.status_code == 200
    tasks = response.json()["tasks"]
    assert [t["name"] for t in tasks] == ["a-task", "b_task", "c"]
    assert tasks[0]["last_run"] is None
    assert tasks[2]["last_run"]["id"] == last.pk
    assert tasks[2]["script"] == "c.py"
    assert "code" not in tasks[0]


def test_list_tasks_reads_the_same_few_times_for_one_task_or_many(editor, make_task):
    """Each task object shows schedules, webhooks, downstream tasks, whether
    it runs and when it runs next: the list brings them along instead of
    asking a few queries per task."""
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    def full_task(name: str) -> Task:
        task = make_task(name, "pass")
        editor.put(
            f"/api/tasks/{name}",
            {
                "schedules": [{"cron": "0 3 * * *", "timezone": "Europe/Berlin"}],
                "webhooks": [{"url": "https://hooks.example.com/a/secret-token"}],
            },
        )
        services.start_run(task, not_before=timezone.now() + timedelta(hours=1))
        return task

    def queries() -> tuple[int, list[dict]]:
        with CaptureQueriesContext(connection) as ctx:
            response = editor.get("/api/tasks")
        assert response.status_code == 200
        return len(ctx.captured_queries), response.json()["tasks"]

    first = full_task("first")
    one, _ = queries()
    for i in range(5):
        later = full_task(f"more_{i}")
        TaskLink.objects.create(upstream=first, downstream=later)
    services.start_run(later)
    many, tasks = queries()
    assert many == one, f"{one} queries for one task, {many} for six"

    by_name = {t["name"]: t for t in tasks}
    assert [d["task"] for d in by_name["first"]["downstream"]] == [f"more_{i}" for i in range(5)]
    assert by_name["more_4"]["webhooks"][0]["url"] == "https://hooks.example.com/a/secret-token"
    assert by_name["more_4"]["schedules"][0]["cron"] == "0 3 * * *"
    delayed = Run.objects.get(task=first, not_before__isnull=False).not_before
    schedule_next = by_name["first"]["schedules"][0]["next_run_at"]
    assert by_name["first"]["next_run_at"] == min(delayed.isoformat(), schedule_next)
    assert by_name["more_4"]["last_run"]["status"] == "queued"
    assert not any(t["running"] for t in tasks)


def test_list_tasks_needs_login(anonymous, hello):
    response = anonymous.get("/api/tasks")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "error" in response.json()
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_list_tasks_needs_view_permission(nobody, hello):
    response = nobody.get("/api/tasks")
    assert response.status_code == 403
    assert "runs.view_task" in response.json()["error"]


# --- create ------------------------------------------------------------------

NEW = {"name": "new-task", "code": "print('new')\n"}


def test_create_task_writes_the_script_and_a_revision(editor, tasks_dir):
    body = {
        **NEW,
        "description": "A new one",
        "timeout": 60,
        "args": ["--x"],
        "env": {"A": "1"},
        "limits": {"memory_mb": 256, "output_mb": 1.5},
    }
    response = editor.post("/api/tasks", body)
    assert response.status_code == 201, response.content
    task_data = response.json()["task"]
    assert task_data["name"] == "new-task"
    assert task_data["code"] == "print('new')\n"
    assert task_data["limits"] == {"memory_mb": 256, "cpu_seconds": None, "output_mb": 1.5}
    task = Task.objects.get(name="new-task")
    assert (task.description, task.timeout, task.args, task.env) == (
        "A new one",
        60,
        ["--x"],
        {"A": "1"},
    )
    assert (tasks_dir / "new-task.py").read_text() == "print('new')\n"
    revision = CodeRevision.objects.get(task=task)
    assert revision.author == editor.user and revision.number == 1


def test_create_task_needs_login(anonymous, tasks_dir):
    assert anonymous.post("/api/tasks", NEW).status_code == 401
    assert not Task.objects.exists() and not list(tasks_dir.iterdir())


@pytest.mark.parametrize("group", ["Viewers", "Operators"])
def test_create_task_needs_add_and_code_permissions(group, tasks_dir):
    response = Api(make_user(group)).post("/api/tasks", NEW)
    assert response.status_code == 403
    assert not Task.objects.exists() and not list(tasks_dir.iterdir())


def test_create_task_with_a_taken_name_is_a_conflict(editor, hello, tasks_dir):
    response = editor.post("/api/tasks", {"name": "hello", "code": "print('other')"})
    assert response.status_code == 409
    assert "already exists" in response.json()["error"]
    assert (tasks_dir / "hello.py").read_text() == "print('hello')\n"


def test_create_task_does_not_overwrite_a_script_put_there_by_hand(editor, tasks_dir):
    (tasks_dir / "manual.py").write_text("print('mine')\n")
    response = editor.post("/api/tasks", {"name": "manual", "code": "print('other')"})
    assert response.status_code == 409
    assert "sync_tasks" in response.json()["error"]
    assert (tasks_dir / "manual.py").read_text() == "print('mine')\n"
    assert not Task.objects.exists()


BAD_CREATE = [
    # (raw body, words the error must contain)
    (b"{not json", "not valid JSON"),
    (b'["a list"]', "JSON object"),
    (b'{"name": "x", "code": "pass", "colour": "red"}', "Unknown field(s): colour"),
    (b'{"name": "x"}', "Missing field(s): code"),
    (b'{"code": "pass"}', "Missing field(s): name"),
    (b'{"name": "Bad Name", "code": "pass"}', "name: A task name"),
    (b'{"name": "../evil", "code": "pass"}', "name: A task name"),
    (b'{"name": "runs", "code": "pass"}', "reserved"),
    (b'{"name": 7, "code": "pass"}', "name: must be a string"),
    (b'{"name": "x", "code": "def f(:\\n"}', "code: Line 1"),
    (b'{"name": "x", "code": 5}', "code: must be a string"),
    (b'{"name": "x", "code": "pass", "timeout": "60"}', "timeout: must be an integer"),
    (b'{"name": "x", "code": "pass", "timeout": true}', "timeout: must be an integer"),
    (b'{"name": "x", "code": "pass", "timeout": 0}', "timeout: The timeout must be between"),
    (b'{"name": "x", "code": "pass", "timeout": NaN}', "not valid JSON"),
    (b'{"name": "x", "code": "pass", "limits": {"output_mb": 1e400}}', "too large a number"),
    (b'{"name": "x", "code": "pass", "description": ["a"]}', "description: must be a string"),
    (b'{"name": "x", "code": "pass", "enabled": "yes"}', "enabled: must be true or false"),
    (b'{"name": "x", "code": "pass", "args": "a b"}', "args: must be a list of strings"),
    (b'{"name": "x", "code": "pass", "args": [1]}', "args: must be a list of strings"),
    (b'{"name": "x", "code": "pass", "env": ["A"]}', "env: must be an object of strings"),
    (b'{"name": "x", "code": "pass", "env": {"A": 1}}', "env: must be an object of strings"),
    (b'{"name": "x", "code": "pass", "env": {"A=B": "1"}}', "is not a variable name"),
    (b'{"name": "x", "code": "pass", "limits": 5}', "limits: must be a JSON object"),
    (b'{"name": "x", "code": "pass", "limits": {"disk_mb": 1}}', "unknown limit(s): disk_mb"),
    (b'{"name": "x", "code": "pass", "limits": {"memory_mb": -1}}', "memory_mb must be"),
    (b'{"name": "x", "code": "pass", "limits": {"memory_mb": 1.5}}', "memory_mb must be"),
    (b'{"name": "x", "code": "pass", "limits": {"cpu_seconds": 1e30}}', "cpu_seconds must be"),
    (b'{"name": "x", "code": "pass", "description": "a\\u0000b"}', "NUL"),
    (b'{"name": "x", "code": "pass", "description": "\\ud800"}', "valid Unicode"),
]


@pytest.mark.parametrize(("raw", "words"), BAD_CREATE)
def test_create_task_refuses_bad_input_and_changes_nothing(editor, tasks_dir, raw, words):
    response = editor.post("/api/tasks", raw=raw)
    assert response.status_code == 400, response.content
    assert words in response.json()["error"]
    assert not Task.objects.exists()
    assert not CodeRevision.objects.exists()
    assert list(tasks_dir.iterdir()) == []


def test_create_task_refuses_a_body_over_the_size_limit(editor, tasks_dir):
    code = "x = 1\n" * 200_000  # 1.2 MB, valid Python
    response = editor.post("/api/tasks", {"name": "big", "code": code})
    assert response.status_code == 400
    assert "larger than" in response.json()["error"]
    assert not Task.objects.exists() and list(tasks_dir.iterdir()) == []


@pytest.mark.django_db(transaction=True)
def test_two_creates_of_one_name_at_once_make_one_task(tasks_dir):
    user = make_user("Editors")
    apis = [Api(user), Api(user)]
    barrier = threading.Barrier(2)
    statuses = []

    def create(api: Api, n: int) -> None:
        barrier.wait()
        try:
            body = {"name": "race", "code": f"print({n})\n"}
            statuses.append(api.post("/api/tasks", body).status_code)
        finally:
            connections.close_all()  # This thread's own connection.

    threads = [threading.Thread(target=create, args=(api, n)) for n, api in enumerate(apis)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 409]
    task = Task.objects.get()
    assert (tasks_dir / "race.py").read_text() == task.revisions.get().code


# --- read --------------------------------------------------------------------


def test_get_task_includes_its_code(viewer, hello):
    response = viewer.get("/api/tasks/hello")
    assert response.status_code == 200
    data = response.json()["task"]
    assert data["code"] == "print('hello')\n"
    assert data["description"] == "Says hello"
    assert data["running"] is False and data["parameters"] == []


def test_get_task_errors(anonymous, nobody, viewer, hello):
    assert anonymous.get("/api/tasks/hello").status_code == 401
    assert nobody.get("/api/tasks/hello").status_code == 403
    response = viewer.get("/api/tasks/nope")
    assert response.status_code == 404
    assert response.json() == {"error": "No task named 'nope'."}


# --- update ------------------------------------------------------------------


def test_update_task_changes_only_the_fields_given(editor, make_task):
    make_task("t", "pass", timeout=30, memory_mb=100, cpu_seconds=5)
    response = editor.put(
        "/api/tasks/t", {"description": "new", "enabled": False, "limits": {"memory_mb": None}}
    )
    assert response.status_code == 200, response.content
    task = Task.objects.get(name="t")
    assert task.description == "new" and task.enabled is False
    assert task.timeout == 30
    assert (task.memory_mb, task.cpu_seconds) == (None, 5)
    assert response.json()["task"]["limits"]["cpu_seconds"] == 5


def test_update_task_code_writes_the_script_and_a_revision(editor, hello, tasks_dir):
    response = editor.put("/api/tasks/hello", {"code": "print('changed')\r\n"})
    assert response.status_code == 200
    assert response.json()["task"]["code"] == "print('changed')\n"
    assert (tasks_dir / "hello.py").read_text() == "print('changed')\n"
    assert hello.revisions.get().author == editor.user


def test_update_task_with_code_that_does_not_compile_changes_nothing(editor, hello, tasks_dir):
    response = editor.put("/api/tasks/hello", {"description": "x", "code": "if True\n"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("code: Line 1")
    assert (tasks_dir / "hello.py").read_text() == "print('hello')\n"
    hello.refresh_from_db()
    assert hello.description == "Says hello"
    assert not hello.revisions.exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "other"}, "cannot be renamed"),
        ({"script": "x.py"}, "Unknown field(s): script"),
        ({"timeout": -5}, "timeout"),
        ({"args": {"a": "b"}}, "args"),
        ([1, 2], "JSON object"),
    ],
)
def test_update_task_refuses_bad_input(editor, hello, body, words):
    response = editor.put("/api/tasks/hello", body)
    assert response.status_code == 400
    assert words in response.json()["error"]
    hello.refresh_from_db()
    assert hello.description == "Says hello"


def test_update_task_code_needs_the_edit_code_permission(hello, tasks_dir):
    api = Api(make_user("Viewers", "runs.change_task"))
    assert api.put("/api/tasks/hello", {"description": "ok"}).status_code == 200
    response = api.put("/api/tasks/hello", {"code": "print('no')"})
    assert response.status_code == 403
    assert "edit_code" in response.json()["error"]
    assert (tasks_dir / "hello.py").read_text() == "print('hello')\n"


def test_update_task_errors(anonymous, viewer, operator, editor, hello):
    assert anonymous.put("/api/tasks/hello", {"description": "x"}).status_code == 401
    assert viewer.put("/api/tasks/hello", {"description": "x"}).status_code == 403
    assert operator.put("/api/tasks/hello", {"description": "x"}).status_code == 403
    assert editor.put("/api/tasks/nope", {"description": "x"}).status_code == 404
    hello.refresh_from_db()
    assert hello.description == "Says hello"


# --- delete ------------------------------------------------------------------


def test_delete_task_removes_it_and_its_script(
    editor, hello, tasks_dir, django_capture_on_commit_callbacks
):
    run = services.start_run(hello)
    Run.objects.filter(pk=run.pk).update(status=S.SUCCEEDED)
    # The script goes once the deletion is committed.
    with django_capture_on_commit_callbacks(execute=True):
        response = editor.delete("/api/tasks/hello")
    assert response.status_code == 204
    assert response.content == b""
    assert not Task.objects.exists() and not Run.objects.exists()
    assert not (tasks_dir / "hello.py").exists()


def test_delete_task_with_a_live_run_is_a_conflict(editor, hello, tasks_dir):
    run = services.start_run(hello)
    response = editor.delete("/api/tasks/hello")
    assert response.status_code == 409
    assert response.json()["run"]["id"] == run.pk
    assert Task.objects.filter(name="hello").exists()
    assert (tasks_dir / "hello.py").exists()


def test_delete_task_errors(anonymous, viewer, operator, editor, hello, tasks_dir):
    assert anonymous.delete("/api/tasks/hello").status_code == 401
    assert viewer.delete("/api/tasks/hello").status_code == 403
    assert operator.delete("/api/tasks/hello").status_code == 403
    assert editor.delete("/api/tasks/nope").status_code == 404
    assert editor.call("DELETE", "/api/tasks/hello", raw=b"{oops").status_code == 400
    assert Task.objects.filter(name="hello").exists() and (tasks_dir / "hello.py").exists()


# --- execute -----------------------------------------------------------------


def test_execute_queues_a_run_with_arguments_environment_and_config(operator, hello):
    body = {"args": ["a", "b c"], "env": {"X": "1"}, "config": {"n": [1, 2]}}
    response = operator.post("/api/tasks/hello/execute", body)
    assert response.status_code == 202, response.content
    data = response.json()["run"]
    run = Run.objects.get()
    assert data["id"] == run.pk
    assert data["status"] == "queued" and data["trigger"] == "api"
    assert data["log_url"] == f"/api/logs/hello_{run.pk}.log"
    assert (run.args, run.env, run.config) == (["a", "b c"], {"X": "1"}, {"n": [1, 2]})
    assert run.triggered_by == operator.user


def test_execute_without_a_body_uses_the_task_defaults(operator, make_task):
    make_task("t", "pass", args=["--default"])
    response = operator.post("/api/tasks/t/execute")
    assert response.status_code == 202
    assert Run.objects.get().args == ["--default"]


def test_second_execute_while_queued_is_refused(operator, hello):
    first = operator.post("/api/tasks/hello/execute").json()["run"]
    response = operator.post("/api/tasks/hello/execute")
    assert response.status_code == 409
    data = response.json()
    assert "already has run" in data["error"]
    assert data["run"]["id"] == first["id"]
    assert Run.objects.count() == 1


def test_execute_of_a_paused_task_is_refused(operator, make_task):
    make_task("t", "pass", enabled=False)
    response = operator.post("/api/tasks/t/execute")
    assert response.status_code == 409
    assert "is paused" in response.json()["error"]
    assert response.json()["run"] is None
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"params": {"n": 1}}, "params: cannot be used: The script does not build"),
        ({"params": {"n": 1}, "args": []}, "Give either args or params, not both."),
        ({"params": [1]}, "params: must be a JSON object"),
        ({"config": [1]}, "config: must be a JSON object"),
        ({"config": "{}"}, "config: must be a JSON object"),
        ({"args": "a"}, "args: must be a list of strings"),
        ({"env": {"A": None}}, "env: must be an object of strings"),
        ({"timeout": 5}, "Unknown field(s): timeout"),
        ("just a string", "JSON object"),
    ],
)
def test_execute_refuses_bad_input(operator, hello, body, words):
    response = operator.post("/api/tasks/hello/execute", body)
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"config": {"x": 1e400}}', "too large a number"),
        (b'{"config": {"x": Infinity}}', "not valid JSON"),
        (b'{"config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
        (b'{"env": {"A": "a\\u0000"}}', None),
        (b'{"args": ["\\ud83d"]}', None),
    ],
)
def test_execute_refuses_values_no_database_can_store(operator, hello, raw, words):
    response = operator.post("/api/tasks/hello/execute", raw=raw)
    assert response.status_code == 400, response.content
    assert words is None or words in response.json()["error"]
    assert not Run.objects.exists()


def test_execute_errors(anonymous, viewer, operator, hello):
    assert anonymous.post("/api/tasks/hello/execute").status_code == 401
    assert viewer.post("/api/tasks/hello/execute").status_code == 403
    assert operator.post("/api/tasks/nope/execute").status_code == 404
    assert operator.post("/api/tasks/hello/execute", raw=b"{").status_code == 400
    assert not Run.objects.exists()


def test_wrong_method_is_405_with_allow(operator, hello):
    response = operator.call("GET", "/api/tasks/hello/execute")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


# --- stop --------------------------------------------------------------------


def test_stop_cancels_a_queued_run(operator, hello):
    run = services.start_run(hello)
    response = operator.post("/api/tasks/hello/stop")
    assert response.status_code == 202
    assert response.json()["run"]["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == S.CANCELLED
    assert run.reason == f"cancelled by {operator.user.username}"


def test_stop_asks_a_running_run_to_stop(operator, hello):
    run = services.start_run(hello)
    Run.objects.filter(pk=run.pk).update(status=S.RUNNING)
    response = operator.post("/api/tasks/hello/stop")
    assert response.status_code == 202
    run.refresh_from_db()
    assert run.status == S.RUNNING and run.cancel_requested


def test_stop_with_nothing_live_is_a_conflict(operator, hello):
    response = operator.post("/api/tasks/hello/stop")
    assert response.status_code == 409
    assert "no queued or running run" in response.json()["error"]


def test_stop_errors(anonymous, viewer, operator, hello):
    run = services.start_run(hello)
    assert anonymous.post("/api/tasks/hello/stop").status_code == 401
    assert viewer.post("/api/tasks/hello/stop").status_code == 403
    assert operator.post("/api/tasks/nope/stop").status_code == 404
    assert operator.post("/api/tasks/hello/stop", {"force": True}).status_code == 400
    run.refresh_from_db()
    assert run.status == S.QUEUED


ARGPARSE_SCRIPT = """
import argparse, json
parser = argparse.ArgumentParser()
parser.add_argument("source")
parser.add_argument("--count", type=int, default=1)
parser.add_argument("--mode", choices=["fast", "safe"], default="safe")
parser.add_argument("--dry-run", action="store_true")
print(json.dumps(vars(parser.parse_args())))
"""


@pytest.mark.django_db(transaction=True)
def test_execute_with_params_runs_the_argv_the_script_expects(operator, make_task, execute):
    make_task("report", ARGPARSE_SCRIPT)
    body = {"params": {"source": "db", "count": "3", "mode": "fast", "dry_run": True}}
    response = operator.post("/api/tasks/report/execute", body)
    assert response.status_code == 202, response.content
    run = execute(Run.objects.get(pk=response.json()["run"]["id"]))
    assert run.args == ["db", "--count", "3", "--mode", "fast", "--dry-run"]
    assert json.loads(run.read_log()) == {
        "source": "db",
        "count": 3,
        "mode": "fast",
        "dry_run": True,
    }


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"count": 2}, "source:"),
        ({"source": "db", "count": "many"}, "count: must be an integer"),
        ({"source": "db", "mode": "slow"}, "mode:"),
        ({"source": "db", "colour": "red"}, "colour: unknown parameter"),
    ],
)
def test_execute_refuses_bad_params_naming_the_field(operator, make_task, params, words):
    make_task("report", ARGPARSE_SCRIPT)
    response = operator.post("/api/tasks/report/execute", {"params": params})
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert not Run.objects.exists()
