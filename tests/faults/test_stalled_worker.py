"""A frozen worker: its process is stopped (SIGSTOP) past the lease while its
script runs. The two clusters stand for two machines (WORKER_HOST differs),
so the reaper on the other one cannot kill the script itself: the frozen
worker's own watchdog must. The run ends as the reaper wrote it, and the
worker's late writes after SIGCONT are refused."""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.conf import settings
from django.db import connection

from runs import services
from runs.models import Run, RunEvent
from tests.conftest import wait_for
from tests.faults.conftest import elapsed, orphans, probe_script, record_figures, script_processes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.faults]
S = Run.Status


def holds_sqlite_write_lock(pid: int) -> bool:
    """Whether ``pid`` holds an exclusive lock on the SQLite database or its
    shared-memory file (/proc/locks)."""
    name = connection.settings_dict["NAME"]
    inodes = {str(os.stat(p).st_ino) for p in (name, f"{name}-shm") if os.path.exists(p)}
    with open("/proc/locks") as fh:
        for line in fh:
            fields = line.split()
            if len(fields) > 5 and fields[4] == str(pid) and fields[3] == "WRITE":
                if fields[5].rsplit(":", 1)[-1] in inodes:
                    return True
    return False


def freeze(pid: int) -> None:
    """SIGSTOP ``pid``. On SQLite, not while it holds the database's write
    lock: SQLite has one writer lock and nobody can take it from a live
    process, so a worker frozen inside a write would stop every writer —
    the reaper too — until it resumed (see docs/reliability.md)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        if connection.vendor != "sqlite" or not holds_sqlite_write_lock(pid):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.03)
    pytest.fail("the worker always held the SQLite write lock")


def test_a_frozen_worker_is_reaped_its_script_stopped_and_its_late_writes_fenced(
    make_task, clusters, ledger, tasks_dir
):
    lease = settings.LEASE_SECONDS
    task = make_task(
        "stall",
        probe_script(ledger, "stall"),
        retry_on=["lost"],
        retry_count=1,
        retry_delay=0,
    )
    # One worker on host a: freezing it also freezes that host's reaper.
    a = clusters.start("a", MAX_TASK_WORKERS=1)
    run = services.start_run(task, args=["120", "0", "0.5"])  # the retry sleeps 0.5 s
    run = wait_for(lambda: Run.objects.filter(pk=run.pk, status=S.RUNNING).first(), timeout=30)
    wait_for(lambda: run.pk in ledger.started(), message="the script did not start")
    assert run.worker.startswith("host-a:")
    clusters.start("b")
    worker_pid = int(run.worker.rsplit(":", 1)[1])

    freeze(worker_pid)
    frozen = time.monotonic()
    try:
        lost = wait_for(
            lambda: Run.objects.filter(pk=run.pk).exclude(status=S.RUNNING).first(),
            timeout=lease * 5,
            message="the frozen worker's run was not reaped",
        )
        time_to_lost = elapsed(frozen)
        # By the time the reaper speaks, the frozen worker's watchdog has
        # already stopped the script: the retry cannot run beside it.
        alive_at_reap = [p.pid for p in script_processes([run.pk], tasks_dir)]
        assert lost.status == S.LOST
        assert lost.reason == "lease expired"
        assert alive_at_reap == [], "the script outlived its lease"

        retry = wait_for(
            lambda: Run.objects.filter(retry_of=run, status=S.SUCCEEDED).first(),
            timeout=lease * 6,
            message="the retry did not run while host a was frozen",
        )
        time_to_retry = elapsed(frozen)
        assert retry.worker.startswith("host-b:")
    finally:
        os.kill(worker_pid, signal.SIGCONT)
    resumed = time.monotonic()

    # The resumed supervisor finds its script gone and its lease taken: its
    # heartbeat and its finish are refused, and it says so.
    wait_for(
        lambda: f"run {run.pk} ended".encode() in a.log_path.read_bytes(),
        timeout=15,
        message="the resumed worker did not try to finish",
    )
    run.refresh_from_db()
    assert run.status == S.LOST
    assert run.reason == "lease expired"
    assert run.heartbeat_at == lost.heartbeat_at
    assert run.finished_at == lost.finished_at
    transitions = list(
        RunEvent.objects.filter(run=run).order_by("id").values_list("from_status", "to_status")
    )
    assert transitions == [("", S.QUEUED), (S.QUEUED, S.RUNNING), (S.RUNNING, S.LOST)]
    assert b"no longer held it" in a.log_path.read_bytes()

    # Host a works again.
    again = services.start_run(task, args=["0.1"])
    assert wait_for(lambda: Run.objects.filter(pk=again.pk, status=S.SUCCEEDED).first(), timeout=30)
    assert clusters.stop_all() == [0, 0]

    runs = list(Run.objects.filter(task=task).values_list("pk", flat=True))
    overlaps = ledger.overlaps()
    left = orphans(runs, tasks_dir, ledger)
    assert overlaps == []
    assert ledger.twice_started() == []
    assert left == []
    record_figures(
        "stalled_worker",
        database=connection.vendor,
        runs=len(runs),
        freezes=1,
        overlaps=len(overlaps),
        orphans=len(left),
        lost=Run.objects.filter(task=task, status=S.LOST).count(),
        time_to_lost=time_to_lost,
        time_to_retry=time_to_retry,
        time_to_fenced=elapsed(resumed),
    )
