"""Crash soak: two clusters run many short runs over several tasks (some
fail, some time out, some are cancelled, one task queues and two retry lost
runs) while a random cluster is SIGKILLed — its whole process group, like
a machine crash — every few seconds and started again. At the end every
accepted run is final, no two scripts of one task were alive at once, no
script was started twice, no script process is left, and the counts add
up."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from django.conf import settings
from django.db import connection

from runs import services
from runs.models import Run, Task
from tests.conftest import wait_for
from tests.faults.conftest import describe, orphans, probe_script, record_figures, scaled

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.faults,
    pytest.mark.timeout(scaled(300, 1200)),
]
S = Run.Status

# (args for the probe: seconds, exit code), weight
KINDS = {
    "succeeds": (["0.1"], 60),
    "fails": (["0.1", "3"], 12),
    "times out": (["30"], 8),  # the task's timeout is 1 s
    "long": (["4"], 20),  # often cancelled, or caught by a crash
}


def test_crash_soak(make_task, clusters, ledger, tasks_dir):
    seconds = scaled(25, 300)
    kill_every = scaled((4, 7), (3, 7))
    rng = random.Random(int(time.time()))
    tasks = []
    for i in range(scaled(5, 8)):
        name = f"soak{i}"
        fields = {"timeout": 1}
        if i < 2:
            fields.update(retry_on=["lost"], retry_count=1, retry_delay=0)
        if i == 2:
            fields.update(overlap=Task.Overlap.QUEUE, max_queued=2)
        tasks.append(make_task(name, probe_script(ledger, name), **fields))

    clusters.start("a")
    clusters.start("b")
    accepted, refused, cancels, kills = [], 0, 0, 0
    started = time.monotonic()
    next_kill = started + rng.uniform(*kill_every)
    while time.monotonic() - started < seconds:
        now = time.monotonic()
        if now >= next_kill:
            victim = rng.choice(sorted(clusters.live))
            clusters.crash(victim)
            kills += 1
            # The machine comes back at once (it boots while the other works).
            clusters.start(victim, wait=False)
            next_kill = now + rng.uniform(*kill_every)
        task = rng.choice(tasks)
        kind = rng.choices(list(KINDS), weights=[w for _, w in KINDS.values()])[0]
        try:
            accepted.append(services.start_run(task, args=KINDS[kind][0]).pk)
        except services.RunRefused:
            refused += 1
        if rng.random() < 0.08:
            running = Run.objects.filter(status=S.RUNNING, task__in=tasks).order_by("?").first()
            if running is not None:
                try:
                    services.request_cancel(running, actor="soak")
                    cancels += 1
                except services.RunNotActive:
                    pass
        time.sleep(rng.uniform(0.02, 0.06))
    load_ended = time.monotonic()

    # Whatever the crashes left behind ends by itself: lost, retried,
    # rescued and run, or finished.
    for proc in clusters.live.values():
        proc.wait_ready(timeout=60)
    wait_for(
        lambda: not Run.objects.filter(status__in=S.active(), task__in=tasks).exists(),
        timeout=settings.LEASE_SECONDS * 10 + 30,
        message="runs still active after the soak: "
        + repr(list(Run.objects.filter(status__in=S.active()).values("pk", "status", "worker"))),
    )
    settle = round(time.monotonic() - load_ended, 1)
    assert clusters.stop_all() == [0, 0]

    runs = list(Run.objects.filter(task__in=tasks).values_list("pk", "status"))
    counts = Counter(status for _, status in runs)
    run_ids = [pk for pk, _ in runs]
    overlaps = ledger.overlaps()
    twice = ledger.twice_started()
    left = orphans(run_ids, tasks_dir, ledger)
    assert set(accepted) <= set(run_ids)
    assert sum(counts[s] for s in S.final()) == len(runs), counts
    assert overlaps == [], f"scripts of one task alive together: runs {overlaps}"
    assert twice == [], f"scripts started twice: runs {twice}"
    assert left == [], f"script processes left: {describe(left)}"
    # Every script that started belongs to a run that knows it started.
    assert set(ledger.started()) <= {pk for pk, status in runs if status not in (S.SKIPPED,)}
    assert counts[S.SUCCEEDED] > 0 and kills > 0
    record_figures(
        "crash_soak",
        database=connection.vendor,
        seconds=seconds,
        runs=len(runs),
        accepted=len(accepted),
        refused=refused,
        kills=kills,
        cancels=cancels,
        overlaps=len(overlaps),
        started_twice=len(twice),
        orphans=len(left),
        lost=counts[S.LOST],
        rescued_jobs=clusters.count_in_logs(b"went missing"),
        statuses=dict(sorted(counts.items())),
        time_to_settle=settle,
    )
