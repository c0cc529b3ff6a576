"""Overlap policies under concurrent starts: skip, queue (at most N waiting)
and replace. Whatever the policy, two runs of a task never run together."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from runs import services
from runs.models import Run, Task
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


def start_together(task: Task, n: int) -> tuple[list[Run], list[services.RunRefused]]:
    barrier = threading.Barrier(n)
    accepted: list[Run] = []
    refused: list[services.RunRefused] = []
    errors: list[Exception] = []

    def start() -> None:
        try:
            barrier.wait()
            accepted.append(services.start_run(Task.objects.get(pk=task.pk)))
        except services.RunRefused as exc:
            refused.append(exc)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=start) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    return accepted, refused


def assert_one_at_a_time(runs: list[Run]) -> None:
    spans = sorted((r.started_at, r.finished_at) for r in runs if r.started_at)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, "two runs of one task overlapped"


def test_queue_accepts_one_running_and_at_most_n_waiting(make_task):
    task = make_task("line", "print(1)", overlap=Task.Overlap.QUEUE, max_queued=2)
    accepted, refused = start_together(task, 8)
    assert len(accepted) == 3 and len(refused) == 5
    assert all("waiting (at most 2)" in str(exc) for exc in refused)
    # One has a job; the other two wait without one.
    dispatched = Run.objects.filter(task=task, dispatched_at__isnull=False)
    assert dispatched.count() == 1
    assert Run.objects.filter(task=task, dispatched_at__isnull=True, status=S.QUEUED).count() == 2


def test_queued_runs_start_one_after_another_in_order(make_task, cluster):
    task = make_task(
        "line",
        "import time; time.sleep(0.5); print('done')",
        overlap=Task.Overlap.QUEUE,
        max_queued=3,
    )
    cluster()
    runs = [services.start_run(task) for _ in range(4)]
    with pytest.raises(services.RunRefused, match="waiting"):
        services.start_run(task)
    wait_for(
        lambda: Run.objects.filter(task=task, status=S.SUCCEEDED).count() == 4,
        timeout=30,
        message="the queued runs did not all run",
    )
    done = list(Run.objects.filter(task=task).order_by("started_at"))
    assert [r.pk for r in done] == [r.pk for r in runs]
    assert_one_at_a_time(done)


def test_replace_cancels_the_running_run_then_starts(make_task, cluster):
    task = make_task(
        "fresh",
        "import time; print('start', flush=True); time.sleep(60)",
        overlap=Task.Overlap.REPLACE,
    )
    cluster()
    old = services.start_run(task)
    wait_for(lambda: Run.objects.get(pk=old.pk).status == S.RUNNING, timeout=20)
    new = services.start_run(task)
    assert new.dispatched_at is None  # it waits for the old one to stop
    wait_for(lambda: Run.objects.get(pk=new.pk).status == S.RUNNING, timeout=20)
    old.refresh_from_db()
    assert old.status == S.CANCELLED
    assert old.reason == "replaced by a new run (manual)"
    assert_one_at_a_time([old, Run.objects.get(pk=new.pk)])
    services.request_cancel(new)
    wait_for(lambda: Run.objects.get(pk=new.pk).status == S.CANCELLED, timeout=20)


def test_replace_under_concurrent_starts_leaves_one_live_run(make_task):
    task = make_task("fresh", "print(1)", overlap=Task.Overlap.REPLACE)
    accepted, refused = start_together(task, 6)
    assert len(accepted) == 6 and refused == []
    live = Run.objects.filter(task=task, status__in=S.active())
    # Each start cancelled the queued ones before it: one survives.
    assert live.count() == 1
    assert Run.objects.filter(task=task, status=S.CANCELLED).count() == 5
    assert live.get().dispatched_at is not None


def test_skip_is_the_default_and_refuses_with_the_run_in_the_way(make_task):
    task = make_task("solo", "print(1)")
    assert task.overlap == Task.Overlap.SKIP
    accepted, refused = start_together(task, 6)
    assert len(accepted) == 1 and len(refused) == 5
    assert {exc.run.pk for exc in refused} == {accepted[0].pk}


def test_no_policy_lets_a_claim_run_beside_a_running_run(make_task, execute):
    # Even a run handed a job by hand (the policy bypassed) is skipped at
    # claim time while another runs: the claim is the last guard.
    task = make_task("guard", "import time; time.sleep(1)", overlap=Task.Overlap.QUEUE)
    first = services.start_run(task)
    second = services.start_run(task)
    worker = threading.Thread(target=execute, args=(first,))
    worker.start()
    wait_for(lambda: Run.objects.get(pk=first.pk).status == S.RUNNING)
    execute(second)
    worker.join()
    second.refresh_from_db()
    assert second.status == S.SKIPPED
    assert "already running" in second.reason
