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

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.utils import timezone

from runs.models import CodeRevision, LogChunk, Run, RunEvent, Secret, Task, TaskLink, Webhook

_run = Run._meta
_event = RunEvent._meta
_chunk = LogChunk._meta


def _db():
    """The default connection itself: every attribute read through
    ``django.db.connection`` (a proxy) is a thread-local lookup, and these
    statements read a few per field."""
    return connections[DEFAULT_DB_ALIAS]


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
    db = _db()
    params = [f.get_db_prep_save(v, db) for f, v in zip(set_fields, fields.values(), strict=True)]
    params += [run_id, status]
    params += [
        f.get_db_prep_value(v, db) for f, v in zip(where_fields, where.values(), strict=True)
    ]
    if alone:
        params += [Run.Status.RUNNING, run_id]
    with db.cursor() as cursor:
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
    db = _db()
    params = [f.get_db_prep_save(v, db) for f, v in zip(fields, values.values(), strict=True)]
    with db.cursor() as cursor:
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
    sql = _what_follows_sql()
    with _db().cursor() as cursor:
        cursor.execute(sql, [task_id, Run.Status.QUEUED, task_id, task_id])
        waiting, downstream, webhooks = cursor.fetchone()
    return bool(waiting), bool(downstream), bool(webhooks)


@functools.cache
def _what_follows_sql() -> str:
    runs, links, hooks = _q(_run.db_table), _q(TaskLink._meta.db_table), _q(Webhook._meta.db_table)
    return (
        f"SELECT EXISTS (SELECT 1 FROM {runs} WHERE {_q('task_id')} = %s AND {_q('status')} = %s"
        f" AND {_q('dispatched_at')} IS NULL AND {_q('not_before')} IS NULL),"
        f" EXISTS (SELECT 1 FROM {links} WHERE {_q('upstream_id')} = %s),"
        f" EXISTS (SELECT 1 FROM {hooks} WHERE {_q('task_id')} = %s AND {_q('enabled')})"
    )


def live_runs(task_id: int, exclude: int | None = None) -> list[tuple[int, str, bool]]:
    """(id, status, waiting for its job) of the task's queued and running runs
    that are not delayed, the running one first: what a start is weighed
    against."""
    sql = _live_runs_sql()
    params = [task_id, Run.Status.QUEUED, Run.Status.RUNNING, -1 if exclude is None else exclude]
    with _db().cursor() as cursor:
        cursor.execute(sql, params)
        return [(pk, status, bool(waiting)) for pk, status, waiting in cursor.fetchall()]


@functools.cache
def _live_runs_sql() -> str:
    runs = _q(_run.db_table)
    return (
        f"SELECT {_q('id')}, {_q('status')}, {_q('dispatched_at')} IS NULL FROM {runs}"
        f" WHERE {_q('task_id')} = %s AND {_q('status')} IN (%s, %s)"
        f" AND {_q('not_before')} IS NULL AND {_q('id')} <> %s"
        f" ORDER BY {_q('status')} DESC, {_q('id')}"
    )


def run_with_task(run_id: int) -> Run | None:
    """The run and its task, as ``select_related("task")`` reads them, in a
    fraction of the CPU: two plain reads instead of the compiler's join of
    60 columns (the supervisor reads this once per run)."""
    run = read(Run, run_id)
    if run is not None:
        run.task = read(Task, run.task_id)
    return run


def read(model, pk: int, *, for_update: bool = False):
    """``model.objects.get(pk=pk)`` (None when there is no such row), read
    with one plain statement: the ORM's compiler and RawQuerySet work out
    the same columns and converters on every call; here they are worked out
    once per process and connection. ``for_update`` locks the row where the
    database can (select_for_update)."""
    db = _db()
    sql, converters = _reader(db, model, for_update)
    with db.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for i, col, column_converters in converters:
        value = values[i]
        for convert in column_converters:
            value = convert(value, col, db)
        values[i] = value
    return model.from_db(db.alias, None, values)


def _reader(db, model, for_update: bool):
    # Converters are the connection's own (a datetime's time zone, say), so
    # they are cached on it, with the SQL.
    cache = db.__dict__.setdefault("_taskrun_readers", {})
    key = (model, for_update)
    if key not in cache:
        opts = model._meta
        fields = opts.concrete_fields
        q = db.ops.quote_name
        columns = ", ".join(q(f.column) for f in fields)
        sql = f"SELECT {columns} FROM {q(opts.db_table)} WHERE {q(opts.pk.column)} = %s"
        if for_update and db.features.has_select_for_update:
            sql += " FOR UPDATE"
        converters = []
        for i, field in enumerate(fields):
            col = field.get_col(opts.db_table)
            found = db.ops.get_db_converters(col) + col.get_db_converters(db)
            if found:
                converters.append((i, col, found))
        cache[key] = (sql, converters)
    return cache[key]


def insert(instance) -> None:
    """``instance.save()`` of a new row, as one plain INSERT that sets its
    primary key; field defaults and ``auto_now_add`` apply as in the ORM."""
    opts = instance._meta
    sql, fields = _insert_returning_sql(opts)
    db = _db()
    params = [f.get_db_prep_save(f.pre_save(instance, True), db) for f in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        if db.features.can_return_columns_from_insert:
            instance.pk = cursor.fetchone()[0]
        else:
            instance.pk = db.ops.last_insert_id(cursor, opts.db_table, opts.pk.column)
    instance._state.adding = False
    instance._state.db = db.alias


@functools.lru_cache(maxsize=16)
def _insert_returning_sql(opts):
    names = tuple(f.name for f in opts.concrete_fields if not f.primary_key)
    sql, fields = _insert_sql(opts, names)
    if connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {_q(opts.pk.column)}"
    return sql, fields


def latest_revision(task_id: int, code_hash: str) -> int | None:
    """The id of the task's newest revision with this code, if any."""
    sql = _latest_revision_sql()
    with _db().cursor() as cursor:
        cursor.execute(sql, [task_id, code_hash])
        row = cursor.fetchone()
    return row[0] if row else None


@functools.cache
def _latest_revision_sql() -> str:
    table = CodeRevision._meta.db_table
    return (
        f"SELECT {_q('id')} FROM {_q(table)} WHERE {_q('task_id')} = %s"
        f" AND {_q('code_hash')} = %s ORDER BY {_q('number')} DESC LIMIT 1"
    )


def secrets_of(task_id: int) -> list[tuple[bool, str, bytes]]:
    """(the task's own, name, encrypted value) of the global secrets and the
    task's."""
    sql = _secrets_of_sql()
    with _db().cursor() as cursor:
        cursor.execute(sql, [task_id])
        return [(bool(own), name, bytes(value)) for own, name, value in cursor.fetchall()]


@functools.cache
def _secrets_of_sql() -> str:
    table = Secret._meta
    return (
        f"SELECT {_q('task_id')} IS NOT NULL, {_q('name')}, {_q('encrypted_value')}"
        f" FROM {_q(table.db_table)} WHERE {_q('task_id')} IS NULL OR {_q('task_id')} = %s"
    )
