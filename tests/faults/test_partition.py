"""Network partition: a worker cluster in its own network namespace reaches
the private PostgreSQL over a veth pair; the link is cut while it runs a
script (packets vanish, nothing is refused) and restored after more than a
lease. The cut-off worker stops its script by itself, the other cluster
reaps the run and runs its retry, and the healed worker's writes are
fenced."""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from django.conf import settings

from runs.models import Run
from tests.conftest import wait_for
from tests.faults.conftest import (
    migrate,
    ops,
    orphans,
    pg_only,
    probe_script,
    record_figures,
    script_processes,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults]
S = Run.Status


def runs(pg) -> dict[int, dict]:
    with psycopg.connect(pg.url(), connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT id, status, reason, worker, attempt, retry_of_id, heartbeat_at, finished_at "
            "FROM runs_run ORDER BY id"
        ).fetchall()
    keys = ("status", "reason", "worker", "attempt", "retry_of", "heartbeat_at", "finished_at")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in rows}


def test_a_partitioned_worker_stops_its_script_and_is_fenced_when_healed(
    netns, private_pg, pg_clusters, tasks_dir, ledger
):
    pg_only()
    lease = settings.LEASE_SECONDS
    pg = private_pg(listen=f"127.0.0.1,{netns.host_ip}")
    url = pg.url()
    (tasks_dir / "part.py").write_text(probe_script(ledger, "part"))
    migrate(url, tasks_dir)
    spec = {"name": "part", "timeout": 120, "retry_on": ["lost"], "retry_count": 1}
    ops(url, tasks_dir, "tasks", json.dumps([{**spec, "retry_delay": 0}]))

    clusters = pg_clusters(url)
    a = clusters.start("a", prefix=netns.prefix, DATABASE_URL=pg.url(host=netns.host_ip))
    [run_id] = ops(
        url, tasks_dir, "start", json.dumps([{"task": "part", "args": ["120", "0", "0.5"]}])
    )["runs"]
    wait_for(lambda: runs(pg)[run_id]["status"] == S.RUNNING, timeout=30)
    wait_for(lambda: run_id in ledger.started(), timeout=10)
    assert runs(pg)[run_id]["worker"].startswith("host-a:")
    clusters.start("b")

    netns.cut()
    cut = time.monotonic()
    try:
        # Nobody tells the worker: its script is stopped by its own watchdog
        # before the lease is out.
        wait_for(lambda: not script_processes([run_id], tasks_dir), timeout=lease * 2,
                 interval=0.05, message="the cut-off worker's script kept running")  # fmt: skip
        stopped_after = round(time.monotonic() - cut, 2)
        wait_for(lambda: runs(pg)[run_id]["status"] != S.RUNNING, timeout=lease * 5,
                 message="the cut-off worker's run was not reaped")  # fmt: skip
        lost_after = round(time.monotonic() - cut, 1)
        retry = wait_for(
            lambda: next(
                (
                    i
                    for i, r in runs(pg).items()
                    if r["retry_of"] == run_id and r["status"] == S.SUCCEEDED
                ),
                None,
            ),
            timeout=lease * 6,
            message="the other cluster did not take over",
        )
        took_over_after = round(time.monotonic() - cut, 1)
        assert runs(pg)[retry]["worker"].startswith("host-b:")
        time.sleep(max(0.0, cut + 2 * lease - time.monotonic()))
    finally:
        netns.heal()
    healed = time.monotonic()
    lost = runs(pg)[run_id]
    assert lost["status"] == S.LOST and lost["reason"] == "lease expired"

    # Healed, the worker learns it lost the run: its writes change nothing.
    wait_for(lambda: f"run {run_id} ended".encode() in a.log_path.read_bytes(), timeout=90,
             message="the healed worker never tried to finish")  # fmt: skip
    fenced_after = round(time.monotonic() - healed, 1)
    assert b"no longer held it" in a.log_path.read_bytes()
    now = runs(pg)[run_id]
    assert (now["status"], now["heartbeat_at"], now["finished_at"]) == (
        S.LOST,
        lost["heartbeat_at"],
        lost["finished_at"],
    )
    # The healed cluster works again.
    [again] = ops(url, tasks_dir, "start", json.dumps([{"task": "part", "args": ["0.1"]}]))["runs"]
    wait_for(lambda: runs(pg)[again]["status"] == S.SUCCEEDED, timeout=60)
    assert clusters.stop_all() == [0, 0]

    every = list(runs(pg))
    overlaps = ledger.overlaps()
    left = orphans(every, tasks_dir, ledger)
    assert overlaps == []
    assert ledger.twice_started() == []
    assert left == []
    record_figures(
        "partition",
        runs=len(every),
        cut_seconds=round(healed - cut, 1),
        overlaps=len(overlaps),
        orphans=len(left),
        lost=sum(r["status"] == S.LOST for r in runs(pg).values()),
        script_stopped_after=stopped_after,
        time_to_lost=lost_after,
        time_to_take_over=took_over_after,
        time_to_fenced_after_heal=fenced_after,
    )
