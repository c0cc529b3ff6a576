"""Celery 5 with Redis, the way its users set it up for short jobs: prefork,
concurrency 2, prefetch 1, late acks, no result backend (completion is the
job's marker file, as for every peer)."""

from __future__ import annotations

import os

from celery import Celery

from bench import jobs

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.run_script")
def run_script(script: str, args: list[str] | None = None, marker: str | None = None) -> int:
    return jobs.run_script(script, args, marker)
