"""A worker cluster stopped with SIGTERM drains: it takes no new run, lets
running ones finish for DRAIN_SECONDS (3 s in tests/settings.py), cancels what
is left as "worker shutdown", and leaves the runs it never started queued for
another cluster."""

from __future__ import annotations

import signal

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from runs import services
from runs.models import Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
S = Run.Status


def status(run: Run) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def all_jobs_taken() -> bool:
    """Every job is in a cluster's hands (the ORM broker locks a job it hands
    out until its retry time)."""
    jobs = list(OrmQ.objects.values_list("lock", flat=True))
    return bool(jobs) and all(lock > timezone.now() for lock in jobs)


def test_sigterm_finishes_short_runs_cancels_long_ones_and_leaves_queued_ones(
    make_task, cluster, tmp_path
):
    release = tmp_path / "release"
    short_task = make_task(
        "short",
        f"""
        import pathlib, time
        print("short started", flush=True)
        while not pathlib.Path({str(release)!r}).exists():
            time.sleep(0.05)
        print("short done")
        """,
    )
    long_task = make_task(
        "long",
        """
        import time
        print("long started", flush=True)
        while True:
            time.sleep(0.1)
        """,
    )
    later_task = make_task("later", "print('later ran')")

    # Two workers, both busy: the third job is prefetched into the cluster's
    # own queue, the case where django-q2 still hands it to a worker while
    # the cluster stops.
    first = cluster(MAX_TASK_WORKERS=2)
    short = services.start_run(short_task)
    long = services.start_run(long_task)
    wait_for(lambda: status(short) == S.RUNNING and status(long) == S.RUNNING, timeout=30)
    later = services.start_run(later_task)
    wait_for(all_jobs_taken, timeout=30, message="the third job was not prefetched")

    # SIGTERM to the cluster's main process only, as `docker stop` does.
    first.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: b"stopping: running runs get" in first.log_path.read_bytes())
    # The short run may finish during the drain; the long one never would.
    release.touch()
    assert first.proc.wait(timeout=30) == 0, first.log_path.read_text()

    short.refresh_from_db()
    long.refresh_from_db()
    later.refresh_from_db()
    assert (short.status, short.reason) == (S.SUCCEEDED, "")
    assert short.read_log().endswith(b"short done\n")
    assert (long.status, long.reason) == (S.CANCELLED, "worker shutdown")
    assert long.finished_at is not None
    assert b"[taskrun] stopping the script: worker shutdown" in long.read_log()
    # Never started, so untouched: still queued, never claimed, and its job
    # is back on the broker for whoever comes next.
    assert (later.status, later.worker, later.started_at) == (S.QUEUED, "", None)
    assert list(later.events.values_list("to_status", flat=True)) == [S.QUEUED]
    assert OrmQ.objects.count() == 1

    cluster()
    later = wait_for(lambda: status(later) == S.SUCCEEDED and Run.objects.get(pk=later.pk))
    assert later.read_log() == b"later ran\n"
