"""Retries (numbered attempts linked to the one before, with backoff) and
downstream tasks (upstream run id and result in the environment, no cycles)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from runs import chains, services
from runs.models import Run, Task, TaskLink
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


def chain_of(first: Run) -> list[Run]:
    runs = [Run.objects.get(pk=first.pk)]
    while (nxt := Run.objects.filter(retry_of=runs[-1]).first()) is not None:
        runs.append(nxt)
    return runs


def test_retry_delays_grow_and_stop_at_the_cap():
    task = Task(retry_delay=2, retry_backoff=3, retry_max_delay=30)
    assert [services.retry_delay(task, n) for n in (1, 2, 3, 4)] == [2, 6, 18, 30]


def test_a_failing_task_is_retried_as_a_numbered_chain_with_backoff(make_task, cluster):
    task = make_task(
        "flaky",
        "import os, sys; print('attempt', os.environ['TASKRUN_ATTEMPT']); sys.exit(3)",
        retry_count=2,
        retry_delay=0.5,
        retry_backoff=2,
    )
    cluster(SCHEDULER_INTERVAL="0.2")
    first = services.start_run(task)
    wait_for(
        lambda: (c := chain_of(first)) and len(c) == 3 and c[-1].status == S.FAILED,
        timeout=30,
        message="the retries did not all run",
    )
    runs = chain_of(first)
    assert [r.attempt for r in runs] == [1, 2, 3]
    assert [r.trigger for r in runs] == ["manual", "retry", "retry"]
    assert all(r.status == S.FAILED for r in runs)
    assert [r.read_log().decode().splitlines()[0] for r in runs] == [
        "attempt 1",
        "attempt 2",
        "attempt 3",
    ]
    # Each attempt waited at least its delay after the one before ended.
    for before, after, delay in zip(runs, runs[1:], (0.5, 1.0), strict=False):
        assert after.started_at - before.finished_at >= timedelta(seconds=delay)
    # No fourth attempt.
    assert Run.objects.filter(task=task).count() == 3


def test_a_retry_that_succeeds_ends_the_chain(make_task, cluster):
    task = make_task(
        "second_time",
        "import os, sys; sys.exit(0 if os.environ['TASKRUN_ATTEMPT'] == '2' else 1)",
        retry_count=5,
        retry_delay=0.2,
    )
    cluster(SCHEDULER_INTERVAL="0.2")
    first = services.start_run(task)
    wait_for(lambda: Run.objects.filter(task=task, status=S.SUCCEEDED).exists(), timeout=30)
    assert [(r.attempt, r.status) for r in chain_of(first)] == [(1, "failed"), (2, "succeeded")]


def test_only_the_selected_outcomes_are_retried(
    make_task, execute, django_capture_on_commit_callbacks
):
    task = make_task(
        "slow",
        "import time; time.sleep(30)",
        timeout=1,
        retry_count=3,
        retry_on=["failed", "lost"],
    )
    with django_capture_on_commit_callbacks(execute=True):
        run = execute(services.start_run(task))
    assert run.status == S.TIMED_OUT
    assert not Run.objects.filter(retry_of=run).exists()


def test_a_lost_run_is_retried(make_task):
    task = make_task("fragile", "print(1)", retry_count=1, retry_delay=0)
    run = services.start_run(task)
    assert services.claim_run(run.pk, "gone-host:1") is not None
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.reap_lost_runs() == [run.pk]
    retry = Run.objects.get(retry_of=run)
    assert (retry.status, retry.attempt, retry.trigger) == (S.QUEUED, 2, Run.Trigger.RETRY)
    # No delay: it has its job at once.
    assert retry.dispatched_at is not None and retry.not_before is None


def test_a_refused_retry_is_recorded_and_ends_the_chain(make_task):
    task = make_task("paused_later", "print(1)", retry_count=2, retry_delay=0)
    run = services.start_run(task)
    services.claim_run(run.pk, "w:1")
    Task.objects.filter(pk=task.pk).update(enabled=False)
    services.finish_run(run.pk, "w:1", status=S.FAILED, reason="exit code 1")
    retry = Run.objects.get(retry_of=run)
    assert retry.status == S.SKIPPED
    assert retry.reason == "retry refused: Task 'paused_later' is paused; resume it to start runs."


# --- downstream tasks ----------------------------------------------------------------------


SHOW_UPSTREAM = """
import json, os
print(os.environ["TASKRUN_UPSTREAM_RUN_ID"], os.environ["TASKRUN_UPSTREAM_STATUS"])
print("result", json.loads(os.environ["TASKRUN_UPSTREAM_RESULT"]))
"""


def test_downstream_gets_the_upstream_run_and_its_result(make_task, cluster):
    extract = make_task("extract", "print('::result::{\"rows\": 42}')")
    load = make_task("load", SHOW_UPSTREAM)
    alert = make_task("alert", "print('failed!')")
    TaskLink.objects.create(upstream=extract, downstream=load, on=TaskLink.On.SUCCESS)
    TaskLink.objects.create(upstream=extract, downstream=alert, on=TaskLink.On.FAILURE)
    cluster()
    up = services.start_run(extract)
    wait_for(lambda: Run.objects.filter(task=load, status=S.SUCCEEDED).exists(), timeout=30)
    down = Run.objects.get(task=load)
    assert down.trigger == Run.Trigger.UPSTREAM and down.upstream_id == up.pk
    assert down.read_log().decode().splitlines() == [
        f"{up.pk} succeeded",
        "result {'rows': 42}",
    ]
    assert not Run.objects.filter(task=alert).exists()


def test_failure_and_any_links_follow_a_failed_run(make_task, execute):
    up_task = make_task("upstream", "import sys; sys.exit(2)")
    on_failure = make_task("on_failure", "print(1)")
    on_any = make_task("on_any", "print(1)")
    on_success = make_task("on_success", "print(1)")
    for target, on in ((on_failure, "failure"), (on_any, "any"), (on_success, "success")):
        TaskLink.objects.create(upstream=up_task, downstream=target, on=on)
    up = execute(services.start_run(up_task))
    assert up.status == S.FAILED
    started = Run.objects.filter(upstream=up)
    assert sorted(started.values_list("task__name", flat=True)) == ["on_any", "on_failure"]
    env = started.first().env
    assert env["TASKRUN_UPSTREAM_RUN_ID"] == str(up.pk)
    assert json.loads(env["TASKRUN_UPSTREAM_RESULT"]) is None


def test_downstream_waits_for_the_last_attempt(make_task, execute):
    up_task = make_task("retried", "import sys; sys.exit(1)", retry_count=1, retry_delay=0)
    follower = make_task("follower", "print(1)")
    TaskLink.objects.create(upstream=up_task, downstream=follower, on=TaskLink.On.ANY)
    first = execute(services.start_run(up_task))
    assert not Run.objects.filter(task=follower).exists()
    second = execute(Run.objects.get(retry_of=first))
    assert second.status == S.FAILED
    assert Run.objects.get(task=follower).upstream_id == second.pk


def test_a_cycle_is_refused_when_saved(make_task):
    a, b, c = (make_task(n, "print(1)") for n in ("a", "b", "c"))
    TaskLink.objects.create(upstream=a, downstream=b)
    TaskLink.objects.create(upstream=b, downstream=c)
    with pytest.raises(ValidationError, match="cycle: c → a → b → c"):
        TaskLink(upstream=c, downstream=a).full_clean()
    with pytest.raises(ValidationError, match="downstream of itself"):
        TaskLink(upstream=a, downstream=a).full_clean()
    with pytest.raises(ValidationError, match="cycle: c → a → b → c"):
        chains.check_links(c, [(a, "any")])
    # A new list for b replaces b's links: b → a alone closes a → b → a.
    with pytest.raises(ValidationError, match="cycle: b → a → b"):
        chains.check_links(b, [(a, "any")])
    with pytest.raises(ValidationError, match="listed twice"):
        chains.check_links(a, [(c, "any"), (c, "success")])
    # Once b → c is gone, c → a is fine; a → c beside a → b → c is no cycle.
    TaskLink.objects.filter(upstream=b, downstream=c).delete()
    chains.check_links(c, [(a, "success")])
    TaskLink(upstream=a, downstream=c).full_clean()


def test_the_attempts_of_a_chain_from_any_of_them(make_task):
    task = make_task("again", "print(1)", retry_count=2, retry_delay=0)
    first = services.start_run(task)
    services.claim_run(first.pk, "w:1")
    services.finish_run(first.pk, "w:1", status=S.FAILED)
    second = Run.objects.get(retry_of=first)
    services.claim_run(second.pk, "w:1")
    services.finish_run(second.pk, "w:1", status=S.SUCCEEDED)
    expected = [first.pk, second.pk]
    assert [r.pk for r in chains.attempts(first)] == expected
    assert [r.pk for r in chains.attempts(Run.objects.get(pk=second.pk))] == expected
