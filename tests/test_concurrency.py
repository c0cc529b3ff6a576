"""One task never runs twice at the same time: concurrent starts, concurrent
claims, and a real cluster fed runs in a loop."""

import subprocess
import sys
import threading
import time

import pytest
from django.db import connections

from runs import services
from runs.models import Run, Task
from tests.conftest import ROOT, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


def test_twenty_threads_starting_one_task_get_exactly_one_run(make_task):
    task = make_task("solo", "print(1)")
    barrier = threading.Barrier(20)
    accepted, refused, errors = [], [], []

    def start():
        try:
            barrier.wait()
            accepted.append(services.start_run(Task.objects.get(pk=task.pk)).pk)
        except services.RunRefused as exc:
            refused.append(exc)
        except Exception as exc:  # pragma: no cover - the test reports it
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(accepted) == 1
    assert len(refused) == 19
    assert all(exc.run.pk == accepted[0] for exc in refused)
    assert Run.objects.filter(task=task).count() == 1


def test_processes_starting_one_task_get_exactly_one_run(make_task, tasks_dir):
    make_task("shared", "print(1)")
    env = subprocess_env(tasks_dir)
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_task", "shared"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(6)
    ]
    results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1, 1, 1, 1, 1], results
    refusals = [err.decode() for code, _, err in results if code == 1]
    assert all("already has run #" in err for err in refusals), refusals
    assert Run.objects.filter(task__name="shared").count() == 1


def test_two_runs_claimed_at_once_only_one_runs(make_task):
    """Two queued runs of one task (as after a crash between the checks): the
    claim lets one run and marks the other skipped."""
    task = make_task("pair", "print(1)")
    first = services.start_run(task)
    second = Run.objects.create(task=task)  # bypasses the start check on purpose
    assert services.claim_run(first.pk, "w:1") is not None
    assert services.claim_run(second.pk, "w:2") is None
    second.refresh_from_db()
    assert second.status == S.SKIPPED
    assert f"run #{first.pk}" in second.reason


def _hold_a_transaction(first, then=lambda: None, seconds: float = 0.5):
    """In a thread, one transaction: ``first()``, then the returned event is
    set and, ``seconds`` later, ``then()`` before the commit. Returns the
    thread, the event and the errors it met."""
    from django.db import transaction

    ready, errors = threading.Event(), []

    def hold():
        try:
            with transaction.atomic():
                first()
                ready.set()
                time.sleep(seconds)
                then()
        except Exception as exc:  # pragma: no cover - the test reports it
            errors.append(exc)
            ready.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread, ready, errors


def test_a_claim_that_waited_for_its_task_while_another_run_started_is_refused(make_task):
    """The claim waits for the task's lock (PostgreSQL) or the write lock
    (SQLite) held by a transaction that sets another run of the task
    running; once that commits, the claim is refused and its run skipped."""
    from runs import rows

    task = make_task("waited", "print(1)")
    first = services.start_run(task)
    second = Run.objects.create(task=task)  # bypasses the start check on purpose

    def set_first_running():
        assert rows.update_run(first.pk, {"status": S.RUNNING, "worker": "w:1"}, status=S.QUEUED)

    holder, locked, errors = _hold_a_transaction(
        lambda: Task.objects.select_for_update().filter(pk=task.pk).update(description="held"),
        set_first_running,
    )
    assert locked.wait(10)
    began = time.monotonic()
    assert services.claim_run(second.pk, "w:2") is None
    waited = time.monotonic() - began
    holder.join()
    assert errors == []
    assert waited > 0.2  # It did wait for the other transaction.
    second.refresh_from_db()
    assert second.status == S.SKIPPED and "already running" in second.reason
    assert list(Run.objects.filter(task=task, status=S.RUNNING).values_list("pk", flat=True)) == [
        first.pk
    ]


def test_a_claim_that_found_its_way_blocked_by_a_run_now_ended_tries_again(make_task, monkeypatch):
    """A claim refused because another run of the task looked running (on
    PostgreSQL its snapshot predates that run's end) is tried once more when
    nothing of the task runs any longer, instead of skipping a run that can
    start."""
    task = make_task("again", "print(1)")
    run = services.start_run(task)
    real, calls = services._claim, []

    def refused_once(*args):
        calls.append(args)
        return None if len(calls) == 1 else real(*args)

    monkeypatch.setattr(services, "_claim", refused_once)
    claimed = services.claim_run(run.pk, "w:1")
    assert claimed is not None and claimed.status == S.RUNNING and len(calls) == 2
    assert Run.objects.get(pk=run.pk).status == S.RUNNING


def test_a_run_queued_by_a_replacing_start_while_the_run_ended_gets_its_job(make_task):
    """A replacing start marks the running run to cancel (holding its row)
    and queues a new run behind it; the running run's end, written
    meanwhile, waits for that row and then finds the new run waiting: it
    hands it its job at once (on PostgreSQL the end statement's own
    snapshot predates the start's commit, so it is asked again)."""
    task = make_task("replaced", "print(1)", overlap=Task.Overlap.REPLACE)
    first = services.claim_run(services.start_run(task).pk, "w:1")
    assert first is not None
    queued = []
    # The end below is written while the replacing start is not committed.
    starter, started, errors = _hold_a_transaction(
        lambda: queued.append(services.start_run(Task.objects.get(pk=task.pk)))
    )
    assert started.wait(10)
    assert services.finish_run(first.pk, "w:1", status=S.SUCCEEDED, known=first)
    starter.join()
    assert errors == []
    waiting = Run.objects.get(pk=queued[0].pk)
    assert waiting.status == S.QUEUED and waiting.dispatched_at is not None


def test_the_database_refuses_a_second_running_run(make_task):
    from django.db import IntegrityError, transaction

    task = make_task("guard", "print(1)")
    Run.objects.create(task=task, status=S.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(task=task, status=S.RUNNING)


@pytest.mark.slow
def test_runs_fired_in_a_loop_never_overlap(make_task, cluster, tmp_path):
    """Starts fired for several seconds at two tasks served by two clusters:
    the scripts' own records show no two runs of one task at once."""
    record = tmp_path / "spans"
    code = f"""
        import os, time
        start = time.time()
        time.sleep(0.15)
        with open({str(record)!r}, "a") as fh:
            fh.write(f"{{os.environ['TASKRUN_TASK']}} {{start}} {{time.time()}}\\n")
    """
    tasks = [make_task("loop_a", code), make_task("loop_b", code)]
    cluster()
    cluster()
    accepted = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        for task in tasks:
            try:
                services.start_run(task)
                accepted += 1
            except services.RunRefused:
                pass
        time.sleep(0.02)
    wait_for(
        lambda: not Run.objects.filter(status__in=S.active()).exists(),
        timeout=60,
        message="runs did not finish",
    )
    spans: dict[str, list[tuple[float, float]]] = {}
    for line in record.read_text().splitlines():
        name, start, end = line.split()
        spans.setdefault(name, []).append((float(start), float(end)))
    assert accepted >= 6
    assert sum(len(v) for v in spans.values()) == Run.objects.filter(status=S.SUCCEEDED).count()
    assert Run.objects.exclude(status=S.SUCCEEDED).count() == 0
    for name, intervals in spans.items():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, f"two runs of {name} overlapped"
