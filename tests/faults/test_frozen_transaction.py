"""A worker frozen (or cut off) inside a transaction holds its row locks:
without a limit, the reaper that must declare its run lost would wait for
it as long as it stays frozen. PostgreSQL ends such a session after
idle_in_transaction_session_timeout (settings: a lease, at least 10 s)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from runs import services
from runs.models import Run
from tests.conftest import ROOT, subprocess_env
from tests.faults.conftest import record_figures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.faults]

HOLD = """
import sys, time
import django
django.setup()
from django.db import transaction
from runs.models import Run
with transaction.atomic():
    Run.objects.select_for_update().get(pk=int(sys.argv[1]))
    print("locked", flush=True)
    time.sleep(120)  # idle inside the transaction, like a frozen worker
"""


def test_a_frozen_transaction_does_not_stall_the_reaper(make_task, tasks_dir):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (SQLite: see the stalled-worker scenario)")
    task = make_task("held", "print(1)")
    stale = timezone.now() - timedelta(seconds=60)
    run = Run.objects.create(
        task=task,
        status=Run.Status.RUNNING,
        worker="frozen:1",
        started_at=stale,
        heartbeat_at=stale,
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run.pk)],
        cwd=ROOT,
        env=subprocess_env(tasks_dir),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        assert services.reap_lost_runs() == [run.pk]
        waited = time.monotonic() - began
    finally:
        holder.kill()
        holder.wait()
    run.refresh_from_db()
    assert run.status == Run.Status.LOST
    # It did wait for the lock (the holder was real), and not for long.
    assert 5 < waited < 20
    record_figures("frozen_transaction", database="postgresql", reaper_waited=round(waited, 1))
