"""The few statements every run makes, written out by hand.

Each run is claimed, heartbeated, given its log and ended by a django-q2
worker on the same few cores as the scripts themselves; profiles of 300
trivial runs showed the ORM's query compiler, not the database, as most of
the executor's CPU. These statements are the same ones the ORM would send,
built from the models' own field definitions (column names and
``get_db_prep_save``, so JSON, datetimes and booleans are stored exactly as
the ORM stores them), and they run in the caller's transaction. Anything
off the hot path uses the ORM."""

from __future__ import annotations

import functools
from typing import Any

from django.db import connection
from django.utils import timezone

from runs.models import LogChunk, Run, RunEvent, Secret, Task, TaskLink, Webhook

_run = Run._meta
_event = RunEvent._meta
_chunk = LogChunk._meta


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def update_run(
    run_id: int,
    fields: dict[str, Any],
    *,
    status: str,
    where: dict[str, Any] | None = None,
    alone: bool = False,
) -> bool:
    """``UPDATE`` the run to ``fields`` if it is still in ``status`` (and
    matches ``where``); with ``alone``, only if no other run of its task is
    running. Returns whether the row changed: the compare-and-set."""
    where = where or {}
    sql, set_fields, where_fields = _update_sql(tuple(fields), tuple(where), alone)
    params = [
        f.get_db_prep_save(v, connection) for f, v in zip(set_fields, fields.values(), strict=True)
    ]
    params += [run_id, status]
    params += [
        f.get_db_prep_value(v, connection)
        for f, v in zip(where_fields, where.values(), strict=True)
    ]
    if alone:
        params += [Run.Status.RUNNING, run_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


@functools.lru_cache(maxsize=256)
def _update_sql(names: tuple[str, ...], where: tuple[str, ...], alone: bool):
    # The same few shapes every run: built once per process.
    table = _q(_run.db_table)
    set_fields = [_run.get_field(name) for name in names]
    where_fields = [_run.get_field(name) for name in where]
    sets = ", ".join(f"{_q(f.column)} = %s" for f in set_fields)
    conditions = [f"{_q('id')} = %s", f"{_q('status')} = %s"]
    conditions += [f"{_q(f.column)} = %s" for f in where_fields]
    if alone:
        conditions.append(
            f"NOT EXISTS (SELECT 1 FROM {table} other WHERE other.{_q('task_id')} = "
            f"{table}.{_q('task_id')} AND other.{_q('status')} = %s AND other.{_q('id')} <> %s)"
        )
    sql = f"UPDATE {table} SET {sets} WHERE {' AND '.join(conditions)}"
    return sql, set_fields, where_fields


def insert_event(run_id: int, from_status: str, to_status: str, actor: str, reason: str) -> None:
    values = {
        "run_id": run_id,
        "at": timezone.now(),
        "from_status": from_status,
        "to_status": to_status,
        "actor": actor,
        "reason": reason,
    }
    _insert(_event, values)


def insert_chunk(run_id: int, start: int, data: bytes) -> None:
    _insert(_chunk, {"run_id": run_id, "start": start, "data": data})


def _insert(opts, values: dict[str, Any]) -> None:
    sql, fields = _insert_sql(opts, tuple(values))
    params = [
        f.get_db_prep_save(v, connection) for f, v in zip(fields, values.values(), strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@functools.lru_cache(maxsize=64)
def _insert_sql(opts, names: tuple[str, ...]):
    fields = [opts.get_field(name) for name in names]
    columns = ", ".join(_q(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {_q(opts.db_table)} ({columns}) VALUES ({marks})", fields


def what_follows(task_id: int) -> tuple[bool, bool, bool]:
    """(a run of the task waits in line, the task has downstream tasks, it has
    an enabled webhook): what decides whether a run's end needs more work."""
    runs, links, hooks = _q(_run.db_table), _q(TaskLink._meta.db_table), _q(Webhook._meta.db_table)
    sql = (
        f"SELECT EXISTS (SELECT 1 FROM {runs} WHERE {_q('task_id')} = %s AND {_q('status')} = %s"
        f" AND {_q('dispatched_at')} IS NULL AND {_q('not_before')} IS NULL),"
        f" EXISTS (SELECT 1 FROM {links} WHERE {_q('upstream_id')} = %s),"
        f" EXISTS (SELECT 1 FROM {hooks} WHERE {_q('task_id')} = %s AND {_q('enabled')})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [task_id, Run.Status.QUEUED, task_id, task_id])
        waiting, downstream, webhooks = cursor.fetchone()
    return bool(waiting), bool(downstream), bool(webhooks)


def live_runs(task_id: int, exclude: int | None = None) -> list[tuple[int, str, bool]]:
    """(id, status, waiting for its job) of the task's queued and running runs
    that are not delayed, the running one first: what a start is weighed
    against."""
    runs = _q(_run.db_table)
    sql = (
        f"SELECT {_q('id')}, {_q('status')}, {_q('dispatched_at')} IS NULL FROM {runs}"
        f" WHERE {_q('task_id')} = %s AND {_q('status')} IN (%s, %s)"
        f" AND {_q('not_before')} IS NULL AND {_q('id')} <> %s"
        f" ORDER BY {_q('status')} DESC, {_q('id')}"
    )
    params = [task_id, Run.Status.QUEUED, Run.Status.RUNNING, -1 if exclude is None else exclude]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(pk, status, bool(waiting)) for pk, status, waiting in cursor.fetchall()]


def run_with_task(run_id: int) -> Run | None:
    """The run and its task, as ``select_related("task")`` reads them, in
    half the CPU: two plain reads instead of the compiler's join of 60
    columns (the supervisor reads this once per run)."""
    run = next(iter(Run.objects.raw(_select_by_id(_run.db_table), [run_id])), None)
    if run is not None:
        run.task = next(iter(Task.objects.raw(_select_by_id(Task._meta.db_table), [run.task_id])))
    return run


@functools.lru_cache(maxsize=8)
def _select_by_id(table: str) -> str:
    return f"SELECT * FROM {_q(table)} WHERE {_q('id')} = %s"


def secrets_of(task_id: int) -> list[tuple[bool, str, bytes]]:
    """(the task's own, name, encrypted value) of the global secrets and the
    task's."""
    table = Secret._meta
    sql = (
        f"SELECT {_q('task_id')} IS NOT NULL, {_q('name')}, {_q('encrypted_value')}"
        f" FROM {_q(table.db_table)} WHERE {_q('task_id')} IS NULL OR {_q('task_id')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [task_id])
        return [(bool(own), name, bytes(value)) for own, name, value in cursor.fetchall()]
