"""The run and log calls of the JSON API. Logs are checked with the output of
real runs, executed in this process as a worker would."""

from __future__ import annotations

import pytest

from runs.models import Run
from tests.api_client import Api, make_user

pytestmark = pytest.mark.django_db
S = Run.Status


@pytest.fixture
def runs(make_task):
    """One run in each state, over two tasks; returns {status: run}."""
    a = make_task("alpha", "pass")
    b = make_task("beta_2", "pass")
    made = {}
    for i, status in enumerate(S.values):
        made[status] = Run.objects.create(task=a if i % 2 else b, status=status)
    return made


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [r["id"] for r in response.json()["runs"]]


# --- list --------------------------------------------------------------------


def test_list_runs_shows_queued_and_running_by_default(viewer, runs):
    assert ids(viewer.get("/api/tasks/runs")) == [runs["running"].pk, runs["queued"].pk]


def test_list_runs_filters_by_status_task_and_limit(viewer, runs):
    assert ids(viewer.get("/api/tasks/runs", status="failed")) == [runs["failed"].pk]
    assert ids(viewer.get("/api/tasks/runs", status="failed, succeeded")) == [
        runs["failed"].pk,
        runs["succeeded"].pk,
    ]
    every = ",".join(S.values)
    alpha = ids(viewer.get("/api/tasks/runs", status=every, task="alpha"))
    assert alpha == sorted((r.pk for r in runs.values() if r.task.name == "alpha"), reverse=True)
    assert len(ids(viewer.get("/api/tasks/runs", status=every, limit=3))) == 3


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"status": "done"}, "status: unknown state(s) 'done'"),
        ({"status": "queued,"}, "unknown state(s) ''"),
        ({"status": "queued,Running"}, "Running"),
        ({"limit": "ten"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be between 1 and 1000"),
        ({"limit": "5000"}, "limit must be between 1 and 1000"),
    ],
)
def test_list_runs_refuses_bad_filters(viewer, runs, query, words):
    response = viewer.get("/api/tasks/runs", **query)
    assert response.status_code == 400
    assert words in response.json()["error"]


def test_list_runs_errors(anonymous, nobody, viewer, runs):
    assert anonymous.get("/api/tasks/runs").status_code == 401
    assert nobody.get("/api/tasks/runs").status_code == 403
    response = viewer.get("/api/tasks/runs", task="nope")
    assert response.status_code == 404
    assert "nope" in response.json()["error"]
    # Not a name any task can have (PostgreSQL refuses NUL in a query).
    assert viewer.get("/api/tasks/runs", task="a\x00b").status_code == 404


# --- one run -----------------------------------------------------------------


def test_get_run(viewer, runs):
    run = runs["failed"]
    response = viewer.get(f"/api/tasks/runs/{run.pk}")
    assert response.status_code == 200
    data = response.json()["run"]
    assert data["id"] == run.pk and data["status"] == "failed"
    assert data["task"] == run.task.name


def test_get_run_errors(anonymous, nobody, viewer, runs):
    run = runs["failed"]
    assert anonymous.get(f"/api/tasks/runs/{run.pk}").status_code == 401
    assert nobody.get(f"/api/tasks/runs/{run.pk}").status_code == 403
    assert viewer.get("/api/tasks/runs/999999").status_code == 404
    # Past the id column's range: still just unknown.
    assert viewer.get(f"/api/tasks/runs/{2**70}").status_code == 404


# --- cancel ------------------------------------------------------------------


def test_cancel_a_queued_run_ends_it(operator, runs):
    run = runs["queued"]
    response = operator.post(f"/api/tasks/runs/{run.pk}/cancel")
    assert response.status_code == 202
    assert response.json()["run"]["status"] == "cancelled"
    run.refresh_from_db()
    assert run.status == S.CANCELLED
    assert run.events.last().actor == operator.user.username


def test_cancel_a_running_run_asks_its_worker(operator, runs):
    run = runs["running"]
    response = operator.post(f"/api/tasks/runs/{run.pk}/cancel")
    assert response.status_code == 202
    assert response.json()["run"]["status"] == "running"
    run.refresh_from_db()
    assert run.cancel_requested


@pytest.mark.parametrize("status", S.final())
def test_cancel_a_finished_run_is_a_conflict(operator, runs, status):
    run = runs[status]
    response = operator.post(f"/api/tasks/runs/{run.pk}/cancel")
    assert response.status_code == 409
    assert "already ended" in response.json()["error"]
    run.refresh_from_db()
    assert run.status == status


def test_cancel_errors(anonymous, viewer, operator, runs):
    run = runs["queued"]
    assert anonymous.post(f"/api/tasks/runs/{run.pk}/cancel").status_code == 401
    assert viewer.post(f"/api/tasks/runs/{run.pk}/cancel").status_code == 403
    assert operator.post("/api/tasks/runs/999999/cancel").status_code == 404
    assert operator.post(f"/api/tasks/runs/{run.pk}/cancel", raw=b"[").status_code == 400
    run.refresh_from_db()
    assert run.status == S.QUEUED


# --- logs --------------------------------------------------------------------

SCRIPT = """
import sys
for i in range(3):
    print(f"line {i} é")
print("oops", file=sys.stderr)
"""
OUTPUT = "".join(f"line {i} é\n" for i in range(3)).encode() + b"oops\n"


@pytest.fixture
def finished(make_task, execute, operator):
    """A run of a real script, started through the API and executed."""
    make_task("printer", SCRIPT)
    response = operator.post("/api/tasks/printer/execute")
    run = execute(Run.objects.get(pk=response.json()["run"]["id"]))
    assert run.status == S.SUCCEEDED
    return run


@pytest.mark.django_db(transaction=True)
def test_read_log_returns_the_output_with_its_size_and_status(viewer, finished):
    response = viewer.get(f"/api/logs/printer_{finished.pk}.log")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.content == OUTPUT
    assert response["X-Log-Size"] == str(len(OUTPUT))
    assert response["X-Run-Status"] == "succeeded"

    # Following a log: ask again from where the last answer ended.
    tail = viewer.get(f"/api/logs/printer_{finished.pk}.log", offset=len(b"line 0 \xc3\xa9\n"))
    assert tail.content == OUTPUT[len(b"line 0 \xc3\xa9\n") :]
    assert tail["X-Log-Size"] == str(len(OUTPUT))
    end = viewer.get(f"/api/logs/printer_{finished.pk}.log", offset=len(OUTPUT) + 10)
    assert end.status_code == 200 and end.content == b""
    part = viewer.get(f"/api/logs/printer_{finished.pk}.log", offset=2, limit=4)
    assert part.content == OUTPUT[2:6]


@pytest.mark.django_db(transaction=True)
def test_download_log_is_the_whole_log_as_an_attachment(viewer, finished):
    response = viewer.get(f"/api/logs/printer_{finished.pk}.log/download")
    assert response.status_code == 200
    assert response["Content-Disposition"] == (f'attachment; filename="printer_{finished.pk}.log"')
    assert b"".join(response.streaming_content) == OUTPUT
    assert response["Content-Length"] == str(len(OUTPUT))


def test_download_streams_a_log_of_many_chunks(viewer, make_task):
    from runs.models import LogChunk

    run = Run.objects.create(task=make_task("t", "pass"), status=S.SUCCEEDED)
    pieces = [f"{i:05d}\n".encode() for i in range(100)]
    start = 0
    for piece in pieces:
        LogChunk.objects.create(run=run, start=start, data=piece)
        start += len(piece)
    # A chunk past log_size is output not yet counted: it is left out.
    LogChunk.objects.create(run=run, start=start, data=b"late\n")
    Run.objects.filter(pk=run.pk).update(log_size=start)
    response = viewer.get(f"/api/logs/t_{run.pk}.log/download")
    assert b"".join(response.streaming_content) == b"".join(pieces)
    assert viewer.get(f"/api/logs/t_{run.pk}.log").content == b"".join(pieces)


def test_list_logs_newest_first(viewer, runs):
    response = viewer.get("/api/logs")
    assert response.status_code == 200
    logs = response.json()["logs"]
    newest = max(runs.values(), key=lambda r: r.pk)
    assert logs[0] == {
        "name": f"{newest.task.name}_{newest.pk}.log",
        "task": newest.task.name,
        "run_id": newest.pk,
        "size": 0,
    }
    assert [entry["run_id"] for entry in logs] == sorted(
        (r.pk for r in runs.values()), reverse=True
    )
    alpha = viewer.get("/api/logs", task="alpha", limit=2).json()["logs"]
    assert len(alpha) == 2 and {entry["task"] for entry in alpha} == {"alpha"}


def test_log_errors(anonymous, nobody, viewer, runs):
    run = runs["failed"]
    name = f"{run.task.name}_{run.pk}.log"
    for path in (f"/api/logs/{name}", f"/api/logs/{name}/download", "/api/logs"):
        assert anonymous.get(path).status_code == 401
        assert nobody.get(path).status_code == 403
    other = "beta_2" if run.task.name == "alpha" else "alpha"
    for path in (
        f"/api/logs/{other}_{run.pk}.log",  # the run is not that task's
        "/api/logs/alpha_999999.log",
        "/api/logs/alpha.log",
        f"/api/logs/{name}x",
        "/api/logs/alpha_999999.log/download",
    ):
        assert viewer.get(path).status_code == 404, path
    assert viewer.get("/api/logs", task="nope").status_code == 404
    for query in ({"offset": "-1"}, {"offset": "abc"}, {"limit": "0"}):
        response = viewer.get(f"/api/logs/{name}", **query)
        assert response.status_code == 400, query
        assert "error" in response.json()
    assert viewer.get("/api/logs", limit="x").status_code == 400


# --- the application log -----------------------------------------------------


@pytest.fixture
def app_log(settings, tmp_path):
    settings.LOGS_DIR = tmp_path
    path = tmp_path / "app.log"
    path.write_text("".join(f"entry {i}\n" for i in range(500)))
    return path


def test_app_log_shows_staff_its_tail(app_log):
    staff = Api(make_user(is_staff=True))
    response = staff.get("/api/logs/app.log")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    lines = response.content.decode().splitlines()
    assert len(lines) == 200 and lines[-1] == "entry 499"
    assert staff.get("/api/logs/app.log", lines=2).content == b"entry 498\nentry 499\n"


def test_app_log_keeps_whole_lines_of_a_big_log(app_log):
    app_log.write_text("x" * 100 + "\n" + ("y" * 99 + "\n") * 20_000)
    response = Api(make_user(is_superuser=True)).get("/api/logs/app.log", lines=10000)
    lines = response.content.decode().splitlines()
    assert len(lines) == 10000 and set(lines) == {"y" * 99}


def test_app_log_errors(anonymous, operator, app_log):
    assert anonymous.get("/api/logs/app.log").status_code == 401
    # Every permission of an Editor, but not staff.
    assert Api(make_user("Editors")).get("/api/logs/app.log").status_code == 403
    staff = Api(make_user(is_staff=True))
    assert staff.get("/api/logs/app.log", lines="0").status_code == 400
    app_log.unlink()
    assert staff.get("/api/logs/app.log").content == b""
