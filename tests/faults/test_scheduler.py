"""Scheduler: three clusters on a private PostgreSQL fire an
every-2-seconds schedule. Each clock runs django-q2's scheduler (which
locks the schedule row) and ``runs.schedules.fire`` claims the slot on the
TaskSchedule row: exactly one run (or skipped record) per slot, no slot
missed between the first and the last, and never two scripts at once."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import psycopg
import pytest

from runs.models import Run
from tests.conftest import wait_for
from tests.faults.conftest import (
    migrate,
    ops,
    orphans,
    pg_only,
    probe_script,
    record_figures,
    scaled,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults]
S = Run.Status


def test_three_clusters_fire_each_slot_exactly_once(private_pg, pg_clusters, tasks_dir, ledger):
    pg_only()
    seconds = scaled(12, 30)
    pg = private_pg()
    url = pg.url()
    (tasks_dir / "tick.py").write_text(probe_script(ledger, "tick"))
    migrate(url, tasks_dir)
    ops(url, tasks_dir, "tasks", json.dumps([{"name": "tick", "timeout": 30, "args": ["0.2"]}]))
    clusters = pg_clusters(url)
    for name in "abc":
        clusters.start(name, wait=False, SCHEDULER_INTERVAL=1)
    for proc in clusters.live.values():
        proc.wait_ready(timeout=60)

    ops(url, tasks_dir, "schedule", "tick", "* * * * * */2")
    time.sleep(seconds)
    ops(url, tasks_dir, "unschedule", "tick")

    def rows():
        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute(
                "SELECT id, scheduled_for, status FROM runs_run WHERE trigger = 'schedule' "
                "ORDER BY scheduled_for, id"
            ).fetchall()

    wait_for(lambda: all(status in S.final() for _, _, status in rows()), timeout=30)
    fired = rows()
    assert clusters.stop_all() == [0, 0, 0]

    slots = [slot for _, slot, _ in fired]
    twice = sorted({slot for slot in slots if slots.count(slot) > 1})
    assert twice == [], f"slots fired more than once: {twice}"
    expected = int((slots[-1] - slots[0]) / timedelta(seconds=2)) + 1
    missed = expected - len(slots)
    assert len(slots) >= seconds / 2 - 3, slots
    assert missed == 0, f"{missed} slots missed between {slots[0]} and {slots[-1]}"
    ids = [pk for pk, _, _ in fired]
    overlaps = ledger.overlaps()
    left = orphans(ids, tasks_dir, ledger)
    assert overlaps == [] and left == []
    statuses = [status for _, _, status in fired]
    record_figures(
        "scheduler",
        database="postgresql",
        clusters=3,
        seconds=seconds,
        runs=len(fired),
        slots=expected,
        fired_twice=len(twice),
        missed=missed,
        overlaps=len(overlaps),
        orphans=len(left),
        statuses={s: statuses.count(s) for s in sorted(set(statuses))},
    )
