"""SQLite under contention: eight processes start, claim, heartbeat,
finish and reap runs at once, as fast as they can, on the default SQLite
settings (IMMEDIATE transactions, WAL, a busy timeout) — and not one of
them sees "database is locked"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.db import connection

from runs.models import Run
from tests.conftest import ROOT, subprocess_env
from tests.faults.conftest import record_figures, scaled

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.faults]
S = Run.Status


def test_eight_processes_hammering_sqlite_never_see_database_is_locked(make_task, tasks_dir):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite scenario runs in the SQLite pass")
    seconds = scaled(15, 60)
    for i in range(4):
        make_task(f"busy{i}", "print(1)", overlap="queue", max_queued=3)
    env = subprocess_env(tasks_dir)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.faults.contention", str(seconds), str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=seconds + 120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    locked = [line for r in reports for line in r["locked"]]
    errors = [line for r in reports for line in r["errors"]]
    assert locked == []
    assert errors == []
    totals = {k: sum(r["counts"][k] for r in reports) for k in reports[0]["counts"]}
    assert totals["finish"] > 0 and totals["claim"] >= totals["finish"]
    # Never two running runs of a task, and what was finished is final.
    assert not Run.objects.filter(status=S.RUNNING).exists()
    assert Run.objects.filter(status__in=S.final()).count() >= totals["finish"]
    record_figures(
        "sqlite_contention",
        processes=len(procs),
        seconds=seconds,
        operations=sum(totals.values()),
        **totals,
        database_is_locked=len(locked),
        other_errors=len(errors),
        slowest_operation=round(max(r["slowest"] for r in reports), 2),
    )
