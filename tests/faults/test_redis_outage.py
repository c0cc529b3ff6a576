"""Broker outage with the Redis broker (a private redis-server the test
starts, without persistence): Redis is killed under load and started again
empty, so every job it held is gone. Runs started while it is down are
accepted and wait; when it is back, every queued run starts exactly once
(the housekeeper gives a run whose job was lost a new one) or ends with a
reason, and the clusters carry on by themselves."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings

from runs.models import Run, Task
from tests.conftest import database_url, wait_for
from tests.faults.conftest import ops, orphans, probe_script, record_figures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.faults]
S = Run.Status
TASKS = ["r0", "r1", "r2", "r3"]


def test_redis_broker_outage(make_task, clusters, private_redis, tasks_dir, ledger):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("runs once, in the SQLite pass")
    lease = settings.LEASE_SECONDS
    tasks = [
        make_task(name, probe_script(ledger, name), overlap=Task.Overlap.QUEUE, max_queued=3)
        for name in TASKS
    ]
    env = {"REDIS_URL": private_redis.url}
    clusters.start("a", **env)
    clusters.start("b", **env)

    def start(seconds: str) -> list[int]:
        specs = json.dumps([{"task": t, "args": [seconds]} for t in TASKS])
        answer = ops(database_url(), tasks_dir, "start", specs, **env)
        assert all(isinstance(r, int) for r in answer["runs"]), answer
        return answer["runs"]

    def final(ids) -> bool:
        return Run.objects.filter(pk__in=ids, status__in=S.final()).count() == len(ids)

    # In flight when the broker goes: runs running, and runs waiting behind
    # them whose jobs will be handed to a dead broker.
    running = start("3")
    wait_for(lambda: Run.objects.filter(pk__in=running, status=S.RUNNING).count() == 4, timeout=30)
    waiting = start("0.2")
    private_redis.stop()
    down = time.monotonic()
    during = start("0.2")  # accepted while the broker is down
    time.sleep(max(0.0, down + 2 * lease - time.monotonic()))
    private_redis.start()  # empty: whatever jobs it held are gone
    up = time.monotonic()

    accepted = running + waiting + during
    wait_for(lambda: final(accepted), timeout=lease * 10 + 30,
             message="runs left queued after the broker came back: " + repr(list(
                 Run.objects.filter(pk__in=accepted, status__in=S.active()).values(
                     "pk", "status", "dispatched_at")
             )))  # fmt: skip
    settled = round(time.monotonic() - up, 1)
    after = start("0.1")
    wait_for(lambda: Run.objects.filter(pk__in=after, status=S.SUCCEEDED).count() == 4, timeout=60)
    recovered = round(time.monotonic() - up, 1)
    assert all(proc.proc.poll() is None for proc in clusters.live.values()), "a cluster died"
    assert clusters.stop_all() == [0, 0]

    every = list(Run.objects.filter(task__in=tasks).values_list("pk", "status", "reason"))
    statuses = {pk: status for pk, status, _ in every}
    overlaps = ledger.overlaps()
    twice = ledger.twice_started()
    left = orphans(statuses, tasks_dir, ledger)
    assert overlaps == []
    assert twice == []
    assert left == []
    assert all(s in S.final() for s in statuses.values())
    # Every run that did not succeed says why.
    assert all(reason for _, status, reason in every if status != S.SUCCEEDED), every
    # The runs that waited for the broker ran (once) after it came back.
    assert all(statuses[pk] == S.SUCCEEDED for pk in waiting + during), every
    record_figures(
        "redis_outage",
        outage_seconds=round(up - down, 1),
        runs=len(every),
        accepted_while_down=len(during),
        jobs_lost_with_the_broker=len(waiting) + len(during),
        rescued_jobs=clusters.count_in_logs(b"went missing"),
        started_twice=len(twice),
        overlaps=len(overlaps),
        orphans=len(left),
        statuses={s: list(statuses.values()).count(s) for s in sorted(set(statuses.values()))},
        time_to_settle=settled,
        time_to_recover=recovered,
    )
