"""A Django process of one set-up (taskrun, or bare django-q2) that the
benchmark driver talks to: one JSON command a line on stdin, one JSON answer
a line on stdout. It submits jobs the way that set-up's users would, and
waits for them to end."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import django


def _taskrun() -> bool:
    from django.conf import settings

    return "runs" in settings.INSTALLED_APPS


def setup(username: str, password: str) -> dict:
    """The user and API token the driver's HTTP requests use (taskrun)."""
    from django.contrib.auth import get_user_model

    from runs.auth import new_token
    from runs.models import ApiToken

    User = get_user_model()
    user = User.objects.filter(username=username).first()
    if user is None:
        user = User.objects.create_superuser(username, "", password)
    token, prefix, digest = new_token()
    ApiToken.objects.create(user=user, name="bench", prefix=prefix, token_hash=digest)
    return {"token": token}


def _wait(predicate, timeout: float, interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the jobs did not end in time")
        time.sleep(interval)


def throughput(n: int, scripts: list[str], marker_dir: str, timeout: float = 600) -> dict:
    """Submit ``n`` trivial jobs and wait for the last one to end."""
    if _taskrun():
        from runs import services
        from runs.models import Run, Task

        tasks = list(Task.objects.filter(name__startswith="bench_").order_by("name")[:n])
        assert len(tasks) == n, f"{len(tasks)} bench tasks for {n} runs"
        from django.db import connection

        # The completion check, as one plain statement polled every 20 ms:
        # the peers' check is a listdir every 5 ms, and the ORM's compiler
        # made this one the agent's second cost after the starts themselves
        # (a fifth of its CPU in a profile), on the cores the runs share.
        active = list(Run.Status.active())
        marks = ", ".join(["%s"] * len(active))
        sql = f"SELECT EXISTS (SELECT 1 FROM {Run._meta.db_table} WHERE status IN ({marks}))"

        def ended() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(sql, active)
                return not cursor.fetchone()[0]

        start = time.perf_counter()
        for task in tasks:
            services.start_run(task, trigger=Run.Trigger.CLI)
        _wait(ended, timeout, 0.02)
        elapsed = time.perf_counter() - start
        bad = Run.objects.exclude(status=Run.Status.SUCCEEDED).count()
        if bad:
            raise RuntimeError(f"{bad} run(s) did not succeed")
        return {"seconds": elapsed}
    from django_q.tasks import async_task

    folder = Path(marker_dir)
    start = time.perf_counter()
    for i in range(n):
        async_task("bench.jobs.run_script", scripts[i % len(scripts)], None, str(folder / str(i)))
    _wait(lambda: len(os.listdir(folder)) >= n, timeout)
    return {"seconds": time.perf_counter() - start}


def enqueue(script: str, args: list[str]) -> dict:
    """One job now (bare django-q2's dispatch latency); returns when it was sent."""
    from django_q.tasks import async_task

    sent = time.time()
    async_task("bench.jobs.run_script", script, args)
    return {"sent": sent}


def start_run(task: str, args: list[str]) -> dict:
    """Queue a run (taskrun) without waiting for it."""
    from runs import services
    from runs.models import Run, Task

    run = services.start_run(Task.objects.get(name=task), trigger=Run.Trigger.CLI, args=args)
    return {"run": run.pk}


def create_run(task: str, args: list[str]) -> dict:
    """A queued run that no broker gets: bench.supervise runs it by hand."""
    from django.utils import timezone

    from runs.models import Run, Task

    # Marked as handed over, so that the cluster's clock leaves it alone.
    run = Run.objects.create(
        task=Task.objects.get(name=task), args=args, dispatched_at=timezone.now()
    )
    return {"run": run.pk}


def run_state(run: int) -> dict:
    from runs.models import Run

    row = Run.objects.filter(pk=run).values("status", "log_size", "started_at", "finished_at")
    row = row.first()
    return {
        "status": row["status"],
        "log_size": row["log_size"],
        "seconds": (row["finished_at"] - row["started_at"]).total_seconds()
        if row["finished_at"] and row["started_at"]
        else None,
    }


def wait_idle(timeout: float = 120) -> dict:
    if _taskrun():
        from runs.models import Run

        _wait(
            lambda: not Run.objects.filter(status__in=Run.Status.active()).exists(),
            timeout,
            0.02,
        )
    return {}


def clean() -> dict:
    """Forget the runs and jobs of the last rep (not timed)."""
    from django.db import OperationalError
    from django_q.models import Task as QTask

    if _taskrun():
        from runs.models import Run

        Run.objects.filter(status__in=Run.Status.final()).delete()
    # Bare django-q2's monitor may still be saving the last results (their
    # jobs wrote their markers first): on PostgreSQL its pruning and this
    # delete can deadlock. Try again.
    for attempt in range(20):
        try:
            QTask.objects.all().delete()
            break
        except OperationalError:
            if attempt == 19:
                raise
            time.sleep(0.1)
    return {}


COMMANDS = {
    f.__name__: f
    for f in (setup, throughput, enqueue, start_run, create_run, run_state, wait_idle, clean)
}


def main() -> None:
    django.setup()
    out = sys.stdout
    sys.stdout = sys.stderr  # Nothing but answers on the pipe.
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        command = json.loads(line)
        try:
            answer = COMMANDS[command.pop("op")](**command)
        except Exception as exc:  # The driver reports it.
            answer = {"error": f"{exc.__class__.__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
        from django.db import close_old_connections

        close_old_connections()


if __name__ == "__main__":
    main()
