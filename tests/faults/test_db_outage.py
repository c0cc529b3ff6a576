"""Database outage, on a private PostgreSQL the test starts: first a restart
(every connection dropped), then a stop longer than a lease, each with runs
in flight. Supervisors that cannot renew their lease stop their scripts;
the clusters recover by themselves; every run ends final; new runs start."""

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
TASKS = ["db0", "db1", "db2"]


def runs(pg) -> dict[int, tuple[str, str, str]]:
    """id -> (task, status, reason), read straight from the server."""
    with psycopg.connect(pg.url(), connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT r.id, t.name, r.status, r.reason FROM runs_run r "
            "JOIN runs_task t ON t.id = r.task_id ORDER BY r.id"
        ).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def start(pg, tasks_dir, seconds: str) -> list[int]:
    answer = ops(
        pg.url(), tasks_dir, "start", json.dumps([{"task": t, "args": [seconds]} for t in TASKS])
    )
    assert all(isinstance(r, int) for r in answer["runs"]), answer
    return answer["runs"]


def all_in(pg, ids, states) -> bool:
    try:
        current = runs(pg)
    except psycopg.OperationalError:
        return False
    return all(current[i][1] in states for i in ids)


def test_database_restart_and_outage(private_pg, pg_clusters, tasks_dir, ledger):
    pg_only()
    lease = settings.LEASE_SECONDS
    pg = private_pg()
    url = pg.url()
    for name in TASKS:
        (tasks_dir / f"{name}.py").write_text(probe_script(ledger, name))
    migrate(url, tasks_dir)
    ops(
        url,
        tasks_dir,
        "tasks",
        json.dumps([{"name": t, "timeout": 120, "retry_count": 0} for t in TASKS]),
    )
    clusters = pg_clusters(url)
    clusters.start("a")
    clusters.start("b")

    # --- a restart: every connection is dropped at once ---------------------
    first = start(pg, tasks_dir, "6")
    wait_for(lambda: all_in(pg, first, {S.RUNNING}), timeout=30)
    wait_for(lambda: set(first) <= set(ledger.started()), timeout=10)
    pg.restart()
    up = time.monotonic()
    wait_for(
        lambda: all_in(pg, first, S.final()), timeout=60, message="runs not final after restart"
    )
    restart_states = [runs(pg)[i][1] for i in first]
    after_restart = start(pg, tasks_dir, "0.2")
    wait_for(lambda: all_in(pg, after_restart, {S.SUCCEEDED}), timeout=60,
             message="no new run succeeded after the restart")  # fmt: skip
    restart_recovery = round(time.monotonic() - up, 1)
    record_figures(
        "db_restart",
        runs=len(first) + len(after_restart),
        in_flight=len(first),
        in_flight_ended=dict((s, restart_states.count(s)) for s in sorted(set(restart_states))),
        overlaps=len(ledger.overlaps()),
        orphans=len(orphans(first, tasks_dir, ledger)),
        time_to_recover=restart_recovery,
    )

    # --- an outage longer than a lease -----------------------------------------
    second = start(pg, tasks_dir, "60")
    wait_for(lambda: all_in(pg, second, {S.RUNNING}), timeout=30)
    wait_for(lambda: set(second) <= set(ledger.started()), timeout=10)
    pg.stop()
    down = time.monotonic()
    # Cut off from the database, every supervisor stops its script before
    # the lease runs out (when a reaper elsewhere could declare it lost).
    wait_for(
        lambda: not script_processes(second, tasks_dir),
        timeout=lease * 2,
        interval=0.05,
        message="scripts still running without a lease",
    )
    scripts_stopped = round(time.monotonic() - down, 2)
    time.sleep(max(0.0, down + 2 * lease - time.monotonic()))
    pg.start()
    up = time.monotonic()
    wait_for(
        lambda: all_in(pg, second, S.final()), timeout=60, message="runs not final after the outage"
    )
    after = runs(pg)
    outage_states = [after[i][1] for i in second]
    third = start(pg, tasks_dir, "0.2")
    wait_for(lambda: all_in(pg, third, {S.SUCCEEDED}), timeout=90,
             message="no new run succeeded after the outage")  # fmt: skip
    outage_recovery = round(time.monotonic() - up, 1)
    assert clusters.stop_all() == [0, 0]

    every = list(runs(pg))
    overlaps = ledger.overlaps()
    left = orphans(every, tasks_dir, ledger)
    assert overlaps == []
    assert ledger.twice_started() == []
    assert left == []
    assert all(after[i][1] == S.LOST for i in second), [after[i] for i in second]
    assert all(state in S.final() for _, state, _ in runs(pg).values())
    record_figures(
        "db_outage",
        outage_seconds=round(up - down, 1),
        runs=len(second) + len(third),
        in_flight=len(second),
        in_flight_ended=dict((s, outage_states.count(s)) for s in sorted(set(outage_states))),
        scripts_stopped_after=scripts_stopped,
        overlaps=len(overlaps),
        orphans=len(left),
        lost=outage_states.count(S.LOST),
        time_to_recover=outage_recovery,
    )
