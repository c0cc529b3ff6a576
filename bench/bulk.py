"""Fast bulk history for P5: ``runs`` finished runs over ``tasks`` tasks,
written by the database itself (INSERT ... SELECT over a generated series),
so that a million rows take seconds to a minute, not an hour of ORM saves.

Every column of Run gets a value: the ones that matter to the pages are
computed per row (task, state, trigger, times, exit code, reason, log size),
every other column gets its field's default, so that a field added to Run
later still makes valid rows.

    DATA_DIR=... [DATABASE_URL=...] python -m bench.bulk 1000000
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

# (SQL below doubles % for the driver's placeholders.)
# One run in twenty failed, one in fifty timed out, a few cancelled.
STATES_SQL = (
    "CASE WHEN {i} %% 20 = 0 THEN 'failed' WHEN {i} %% 50 = 1 THEN 'timed_out' "
    "WHEN {i} %% 97 = 2 THEN 'cancelled' ELSE 'succeeded' END"
)


def generate(
    runs: int,
    tasks: int = 50,
    *,
    per_day: float = 1000,
    batch: int = 200_000,
    live: int = 3,
    progress=None,
) -> list[int]:
    """Make the tasks and ``runs`` finished runs, ``per_day`` of them a day
    back from now, then ``live`` running ones through the services, as a
    real install would have. Returns the task ids.

    The rate is fixed, not the span: a bigger history is a longer one, and
    the last day (the dashboard's window) looks the same at 1,000 runs as at
    1,000,000."""
    from django.db import connection, transaction

    from runs.models import Run, RunEvent, Task

    existing = Task.objects.filter(name__startswith="bulk-").count()
    Task.objects.bulk_create(
        [Task(name=f"bulk-{n:03d}", description="bulk history") for n in range(existing, tasks)]
    )
    ids = sorted(Task.objects.filter(name__startswith="bulk-").values_list("pk", flat=True))[:tasks]
    now = datetime.now(UTC)
    step = 86400 / per_day
    start = now - timedelta(seconds=step * runs)
    fields = [f for f in Run._meta.concrete_fields if not f.primary_key]
    vendor = connection.vendor

    def at(offset_sql: str) -> str:
        # A time ``offset_sql`` seconds after the series' start, as each
        # database stores an aware datetime.
        t = f"({start.timestamp()!r} + {offset_sql})"
        if vendor == "postgresql":
            return f"to_timestamp({t})"
        return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {t}, 'unixepoch')"

    queued = f"(i * {step!r})"
    duration = "(1 + i %% 37)"
    task_pick = (
        f"CASE i %% {len(ids)} "
        + " ".join(f"WHEN {n} THEN {pk}" for n, pk in enumerate(ids))
        + " END"
    )
    state = STATES_SQL.format(i="i")
    computed = {
        "task": task_pick,
        "status": state,
        "trigger": "CASE WHEN i %% 3 = 0 THEN 'manual' ELSE 'schedule' END",
        "reason": f"CASE {state} WHEN 'failed' THEN 'exit code 1' WHEN 'timed_out' "
        "THEN 'timed out after 30 s' WHEN 'cancelled' THEN 'cancelled by admin' ELSE '' END",
        "exit_code": f"CASE {state} WHEN 'succeeded' THEN 0 WHEN 'failed' THEN 1 ELSE -15 END",
        "queued_at": at(queued),
        "started_at": at(f"{queued} + 0.05"),
        "finished_at": at(f"{queued} + 0.05 + {duration}"),
        "heartbeat_at": at(f"{queued} + 0.05 + {duration}"),
        "dispatched_at": at(queued),
        "scheduled_for": at(queued),
        "log_size": "(i %% 5000)",
        "worker": "'bench-host:1'",
        "cpu_seconds": f"({duration} * 0.01)",
        "peak_rss": "(8000000 + i %% 1000)",
    }
    columns, values, params = [], [], []
    for f in fields:
        columns.append(connection.ops.quote_name(f.column))
        if f.name in computed:
            values.append(computed[f.name])
        else:
            values.append("%s")
            params.append(f.get_db_prep_save(f.get_default(), connection))
    table = connection.ops.quote_name(Run._meta.db_table)
    made = 0
    t0 = time.perf_counter()
    while made < runs:
        n = min(batch, runs - made)
        if vendor == "postgresql":
            series = f"SELECT i FROM generate_series({made + 1}, {made + n}) AS s(i)"
        else:
            series = (
                f"WITH RECURSIVE s(i) AS (SELECT {made + 1} UNION ALL SELECT i + 1 FROM s "
                f"WHERE i < {made + n}) SELECT i FROM s"
            )
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM ({series}) AS g"
        )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
        made += n
        if progress:
            progress(f"{made:,} runs, {time.perf_counter() - t0:.1f} s")
    if vendor == "postgresql":
        # What autovacuum would do soon after such an insert.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
    # SQLite is left without statistics, as every real install is (nothing
    # runs ANALYZE there); with them, its planner misjudges the mostly-NULL
    # columns (retry_of, upstream) and walks the whole table on the run page.
    # A few live runs through the real door, with their events, as the
    # dashboard would show them; and events for the newest finished runs.
    from runs import services

    for task in Task.objects.filter(pk__in=ids[:live]):
        run = services.start_run(task, trigger=Run.Trigger.MANUAL)
        services.transition(
            run.pk,
            to=Run.Status.RUNNING,
            allowed_from=[Run.Status.QUEUED],
            actor="bulk",
            started_at=now,
            heartbeat_at=now,
            worker="bench-host:2",
        )
    newest = Run.objects.filter(status__in=Run.Status.final()).order_by("-id")[:200]
    RunEvent.objects.bulk_create(
        [
            RunEvent(
                run=r, from_status="running", to_status=r.status, actor="bulk", at=r.finished_at
            )
            for r in newest
        ]
    )
    return ids


def main() -> None:
    import django

    django.setup()
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    t0 = time.perf_counter()
    generate(runs, progress=lambda m: print(m, flush=True))
    print(f"{runs:,} runs in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
