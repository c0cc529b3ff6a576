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

import contextlib
import functools
import logging
import re
from typing import Any

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.utils import timezone

from runs.models import CodeRevision, LogChunk, Run, RunEvent, Secret, Task, TaskLink, Webhook

logger = logging.getLogger(__name__)

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


@contextlib.contextmanager
def statement(db, sql: str, params):
    """Execute ``sql`` on the connection's own DB-API cursor, as Django's
    cursor would (the health check, the connection, a broken transaction
    refused, errors raised as Django's): its wrapper adds, on every call,
    thread and async checks, and for SQLite a regex rewrite of each ``%s``
    to ``?`` — for these statements that is done once. On PostgreSQL the
    statement is prepared (see ``_prepared_cursor``)."""
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        if db.vendor == "postgresql":
            # One cursor per connection, taken while in use (a statement run
            # inside another's block gets a cursor of its own): making a
            # psycopg cursor cost a fifth of a statement's CPU here.
            cursor = db.__dict__.pop("_taskrun_cursor", None)
            if cursor is None or cursor.connection is not db.connection:
                cursor = _prepared_cursor(db.connection)
            try:
                try:
                    cursor.execute(sql, params, prepare=True)
                except _not_supported() as exc:
                    if not db.get_autocommit():
                        raise  # Its rollback drops the connection's prepared statements.
                    # "cached plan must not change result type": a migration
                    # changed a column a prepared statement returns. Nothing
                    # was done; a new connection prepares it anew.
                    logger.info("statement prepared before a schema change, again: %s", exc)
                    db.close()
                    db.ensure_connection()
                    cursor = _prepared_cursor(db.connection)
                    cursor.execute(sql, params, prepare=True)
                yield cursor
            finally:
                db.__dict__["_taskrun_cursor"] = cursor
            return
        cursor = db.connection.cursor()
        try:
            cursor.execute(_native(db.vendor, sql), params)
            yield cursor
        finally:
            cursor.close()


def _prepared_cursor(conn):
    """A psycopg cursor that binds on the server, so that these statements
    are prepared once per connection: Django's cursor sends every statement
    as text, which PostgreSQL parses and plans each time — for these, the
    plans cost more than running them (pg_stat_statements: 1.07 ms a run
    planning, 0.7 running). Django turns psycopg's preparing off
    (``prepare_threshold=None``, for poolers of old); a threshold no count
    reaches turns it back on for statements executed with ``prepare=True``
    only: its own cursors never prepare. (Behind PgBouncer in transaction
    mode that needs 1.21 or later with ``max_prepared_statements``.)"""
    import psycopg  # Only on PostgreSQL.

    if conn.prepare_threshold is None:
        conn.prepare_threshold = _ONLY_WHEN_ASKED
    return psycopg.Cursor(conn)


_ONLY_WHEN_ASKED = 2**62


def _not_supported():
    import psycopg  # Only on PostgreSQL.

    return psycopg.errors.FeatureNotSupported


def execute(db, sql: str, params) -> None:
    with statement(db, sql, params):
        pass


@functools.lru_cache(maxsize=512)
def _native(vendor: str, sql: str) -> str:
    # None of these statements has a literal "%".
    return sql.replace("%s", "?") if vendor == "sqlite" else sql


def one_statement() -> bool:
    """Whether a run's change, its event and its log chunk go to the
    database as one statement (PostgreSQL's data-modifying WITH): one round
    trip where a transaction of them is four or five, with its BEGIN and
    COMMIT. SQLite runs in this process: there statements cost no trip."""
    return _db().vendor == "postgresql"


class Change:
    """What ``update_run`` did: true when the row changed (the
    compare-and-set); ``follows``, when asked for and read with the change,
    is ``what_follows`` of the run's task, else None. Test it for truth,
    never ``is False``; callers outside rows answer ``bool(change)``."""

    __slots__ = ("made", "follows")

    def __init__(self, made: bool, follows: tuple[bool, bool, bool] | None = None):
        self.made = made
        self.follows = follows

    def __bool__(self) -> bool:
        return self.made


def update_run(
    run_id: int,
    fields: dict[str, Any],
    *,
    status: str,
    where: dict[str, Any] | None = None,
    alone: bool = False,
    event: tuple[str, str] | None = None,
    chunk: tuple[int, bytes] | None = None,
    follows: bool = False,
) -> Change:
    """``UPDATE`` the run to ``fields`` if it is still in ``status`` (and
    matches ``where``); with ``alone``, only if no other run of its task is
    running. Returns whether the row changed: the compare-and-set.

    ``event`` (actor, reason): the run's event of this change (from
    ``status`` to ``fields["status"]``), stored only if the change is made.
    ``chunk`` (offset, data): a piece of its log, stored whether or not the
    change is made, as a supervisor's write always stored its output. All
    of it is one change: one statement, or one transaction (the caller's,
    if it is in one). ``follows``: with a run's end, what follows it is read
    in the same statement where there is one (PostgreSQL), which spares the
    end's follow-up a round trip."""
    where = where or {}
    combined = one_statement() and (event is not None or chunk is not None)
    follows = combined and follows
    sql, set_fields, where_fields = _update_sql(
        tuple(fields),
        tuple(where),
        alone,
        event=combined and event is not None,
        chunk=combined and chunk is not None,
        follows=follows,
    )
    db = _db()
    params = []
    if combined and chunk is not None:
        params += _chunk_params(db, run_id, *chunk)
    params += [f.get_db_prep_save(v, db) for f, v in zip(set_fields, fields.values(), strict=True)]
    params += [run_id, status]
    params += [
        f.get_db_prep_value(v, db) for f, v in zip(where_fields, where.values(), strict=True)
    ]
    if alone:
        params += [Run.Status.RUNNING, run_id]
    if combined:
        if event is not None:
            params += _event_params(db, status, fields["status"], *event)
        if follows:
            params.append(Run.Status.QUEUED)
        with statement(db, sql, params) as cursor:
            row = cursor.fetchone()
        return Change(row[0] == 1, tuple(map(bool, row[1:])) if follows else None)
    if event is None and chunk is None:
        with statement(db, sql, params) as cursor:
            return Change(cursor.rowcount == 1)
    with _one_change(db):
        if chunk is not None:
            insert_chunk(run_id, *chunk)
        with statement(db, sql, params) as cursor:
            changed = cursor.rowcount == 1
        if changed and event is not None:
            insert_event(run_id, status, fields["status"], *event)
    return Change(changed)


@contextlib.contextmanager
def _one_change(db):
    """The statements inside in one transaction: the caller's, if it is in
    one; else, on SQLite, BEGIN IMMEDIATE … COMMIT sent as plain statements
    (Django's atomic() cost a trivial run's worker as much CPU as the
    statements it wraps); elsewhere atomic()."""
    if db.in_atomic_block or not db.get_autocommit():
        yield
        return
    if db.vendor != "sqlite":
        with transaction.atomic(using=db.alias, savepoint=False):
            yield
        return
    execute(db, "BEGIN IMMEDIATE", ())
    try:
        yield
        execute(db, "COMMIT", ())
    except BaseException:
        # A failed COMMIT leaves the transaction open: end it either way.
        with contextlib.suppress(DatabaseError):
            execute(db, "ROLLBACK", ())
        raise


@functools.lru_cache(maxsize=256)
def _update_sql(
    names: tuple[str, ...],
    where: tuple[str, ...],
    alone: bool,
    event: bool,
    chunk: bool,
    follows: bool = False,
):
    # The same few shapes every run: built once per process. With an event
    # or a chunk (PostgreSQL), a WITH of the chunk's INSERT, the UPDATE and
    # the event's INSERT of the row it changed; with ``follows``, what
    # follows for the changed row's task.
    table = _q(_run.db_table)
    set_fields = [_run.get_field(name) for name in names]
    where_fields = [_run.get_field(name) for name in where]
    sets = ", ".join(f"{_q(f.column)} = %s" for f in set_fields)
    conditions = [f"{_q('id')} = %s", f"{_q('status')} = %s"]
    conditions += [f"{_q(f.column)} = %s" for f in where_fields]
    if alone:
        conditions.append(_alone_sql())
    sql = f"UPDATE {table} SET {sets} WHERE {' AND '.join(conditions)}"
    if not (event or chunk):
        return sql, set_fields, where_fields
    parts = []
    if chunk:
        parts.append(f"chunk AS ({_insert_sql(_chunk, _CHUNK)[0]})")
    parts.append(f"changed AS ({sql} RETURNING {_q('id')}, {_q('task_id')})")
    if event:
        parts.append(f"event AS ({_event_from('changed')})")
    result = "SELECT count(*) FROM changed"
    if follows:
        task = f"(SELECT {_q('task_id')} FROM changed)"
        result = f"SELECT (SELECT count(*) FROM changed), {_follows_columns(task)}"
    return f"WITH {', '.join(parts)} {result}", set_fields, where_fields


def _alone_sql() -> str:
    """No other run of the row's task is running (two parameters: the
    running state, the row's id)."""
    table = _q(_run.db_table)
    return (
        f"NOT EXISTS (SELECT 1 FROM {table} other WHERE other.{_q('task_id')} = "
        f"{table}.{_q('task_id')} AND other.{_q('status')} = %s AND other.{_q('id')} <> %s)"
    )


_EVENT = ("run_id", "at", "from_status", "to_status", "actor", "reason")
_CHUNK = ("run_id", "start", "data")


def _event_from(source: str) -> str:
    """The INSERT of an event for each row of ``source`` (its id; five
    parameters: at, from, to, actor, reason)."""
    columns = ", ".join(_q(f.column) for f in _fields(_event, _EVENT))
    return (
        f"INSERT INTO {_q(_event.db_table)} ({columns})"
        f" SELECT {_q('id')}, %s, %s, %s, %s, %s FROM {source}"
    )


@functools.cache
def _fields(opts, names: tuple[str, ...]) -> list:
    return [opts.get_field(name) for name in names]


def _event_params(db, from_status, to_status, actor, reason) -> list:
    """An event's values after its run id (which the WITH statements take
    from the row they changed)."""
    values = (timezone.now(), from_status, to_status, actor, reason)
    fields = _fields(_event, _EVENT)[1:]
    return [f.get_db_prep_save(v, db) for f, v in zip(fields, values, strict=True)]


def _chunk_params(db, run_id, start, data) -> list:
    fields = _fields(_chunk, _CHUNK)
    return [f.get_db_prep_save(v, db) for f, v in zip(fields, (run_id, start, data), strict=True)]


def claim(run_id: int, fields: dict[str, Any], actor: str, reason: str) -> Run | None:
    """PostgreSQL: claim a queued run in one statement — lock its task (as
    ``start_run`` locks it, so the two are decided one after the other),
    set the run to ``fields`` if it is still queued and no other run of its
    task is running, store the event, and return the run with its task
    (None when not claimed), the task with its secrets as ``secrets_of``
    reads them (``task.secrets_read``). A run of the task claimed by
    another worker while this one waited for the task's lock is not in this
    statement's snapshot: then the partial unique index refuses the claim
    (IntegrityError), as it does a race between two transactions."""
    db = _db()
    sql, set_fields = _claim_sql(tuple(fields))
    params = [run_id]
    params += [f.get_db_prep_save(v, db) for f, v in zip(set_fields, fields.values(), strict=True)]
    params += [run_id, Run.Status.QUEUED, Run.Status.RUNNING, run_id]
    params += _event_params(db, Run.Status.QUEUED, fields["status"], actor, reason)
    with statement(db, sql, params) as cursor:
        row = cursor.fetchone()
    if row is None:
        return None
    width, task_width = len(_run.concrete_fields), len(Task._meta.concrete_fields)
    run = _from_row(db, Run, row[:width])
    run.task = _from_row(db, Task, row[width : width + task_width])
    own, names, values = (column or [] for column in row[width + task_width :])
    run.task.secrets_read = [
        (own, name, bytes(value)) for own, name, value in zip(own, names, values, strict=True)
    ]
    return run


@functools.lru_cache(maxsize=16)
def _claim_sql(names: tuple[str, ...]):
    runs, tasks = _q(_run.db_table), _q(Task._meta.db_table)
    set_fields = [_run.get_field(name) for name in names]
    sets = ", ".join(f"{_q(f.column)} = %s" for f in set_fields)
    run_columns = ", ".join(_q(f.column) for f in _run.concrete_fields)
    task_columns = ", ".join(_q(f.column) for f in Task._meta.concrete_fields)
    sql = (
        # Materialized: the task is locked once, before the run's row.
        f"WITH task AS MATERIALIZED (SELECT {task_columns} FROM {tasks} WHERE {_q('id')} ="
        f" (SELECT {_q('task_id')} FROM {runs} WHERE {_q('id')} = %s) FOR UPDATE),"
        f" changed AS (UPDATE {runs} SET {sets} WHERE {_q('id')} = %s AND {_q('status')} = %s"
        f" AND {_q('task_id')} = (SELECT {_q('id')} FROM task) AND {_alone_sql()}"
        f" RETURNING {run_columns}),"
        f" event AS ({_event_from('changed')})"
        # The task's secrets too (as secrets_of reads them): the supervisor
        # needs them next, and this spares it a round trip.
        f" SELECT changed.*, task.*, secrets.* FROM changed, task,"
        f" LATERAL ({_secret_arrays_sql('task.' + _q('id'))}) secrets"
    )
    return sql, set_fields


def _secret_arrays_sql(task: str) -> str:
    """One row: ``secrets_of``'s three columns, each as an array (NULL when
    there is no secret), for the task ``task`` (SQL)."""
    table, q = Secret._meta.db_table, _q
    return (
        f"SELECT array_agg({q('task_id')} IS NOT NULL ORDER BY {q('id')}),"
        f" array_agg({q('name')} ORDER BY {q('id')}),"
        f" array_agg({q('encrypted_value')} ORDER BY {q('id')})"
        f" FROM {q(table)} WHERE {q('task_id')} IS NULL OR {q('task_id')} = {task}"
    )


def insert_event(run_id: int, from_status: str, to_status: str, actor: str, reason: str) -> None:
    db = _db()
    params = [run_id, *_event_params(db, from_status, to_status, actor, reason)]
    execute(db, _insert_sql(_event, _EVENT)[0], params)


def insert_chunk(run_id: int, start: int, data: bytes) -> None:
    db = _db()
    execute(db, _insert_sql(_chunk, _CHUNK)[0], _chunk_params(db, run_id, start, data))


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
    with statement(_db(), sql, [task_id, Run.Status.QUEUED, task_id, task_id]) as cursor:
        waiting, downstream, webhooks = cursor.fetchone()
    return bool(waiting), bool(downstream), bool(webhooks)


@functools.cache
def _what_follows_sql() -> str:
    return f"SELECT {_follows_columns('%s')}"


def _follows_columns(task: str) -> str:
    """The three answers of ``what_follows`` for the task ``task`` (SQL: a
    parameter or a subquery), with one parameter of their own, the queued
    state, after the first ``task``."""
    runs, links, hooks = _q(_run.db_table), _q(TaskLink._meta.db_table), _q(Webhook._meta.db_table)
    return (
        f"EXISTS (SELECT 1 FROM {runs} WHERE {_q('task_id')} = {task}"
        f" AND {_q('status')} = %s AND {_q('dispatched_at')} IS NULL"
        f" AND {_q('not_before')} IS NULL),"
        f" EXISTS (SELECT 1 FROM {links} WHERE {_q('upstream_id')} = {task}),"
        f" EXISTS (SELECT 1 FROM {hooks} WHERE {_q('task_id')} = {task} AND {_q('enabled')})"
    )


def live_runs(task_id: int, exclude: int | None = None) -> list[tuple[int, str, bool]]:
    """(id, status, waiting for its job) of the task's queued and running runs
    that are not delayed, the running one first: what a start is weighed
    against."""
    sql = _live_runs_sql()
    params = [task_id, Run.Status.QUEUED, Run.Status.RUNNING, -1 if exclude is None else exclude]
    with statement(_db(), sql, params) as cursor:
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
    with statement(db, sql, [pk]) as cursor:
        row = cursor.fetchone()
    return None if row is None else _from_row(db, model, row, converters)


def _from_row(db, model, row, converters=None):
    """The model instance of a row of all its concrete columns, in order."""
    if converters is None:
        converters = _reader(db, model, False)[1]
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


def insert(instance, *, event: tuple[str, str, str, str] | None = None) -> None:
    """``instance.save()`` of a new row, as one plain INSERT that sets its
    primary key; field defaults and ``auto_now_add`` apply as in the ORM.
    ``event`` (from, to, actor, reason), for a run: its first event, in the
    same statement on PostgreSQL (else in the caller's transaction)."""
    opts = instance._meta
    db = _db()
    combined = event is not None and one_statement()
    sql, fields = _insert_returning_sql(opts, combined)
    params = [f.get_db_prep_save(f.pre_save(instance, True), db) for f in fields]
    if combined:
        params += _event_params(db, *event)
    with statement(db, sql, params) as cursor:
        if db.features.can_return_columns_from_insert:
            instance.pk = cursor.fetchone()[0]
        else:
            instance.pk = db.ops.last_insert_id(cursor, opts.db_table, opts.pk.column)
    instance._state.adding = False
    instance._state.db = db.alias
    if event is not None and not combined:
        insert_event(instance.pk, *event)


def insert_run_alone(run: Run, event: tuple[str, str, str, str]) -> bool:
    """PostgreSQL: insert ``run`` and its first event only if no other run
    of its task is queued or running (delayed ones aside, as ``live_runs``
    counts them); returns whether it did. Called with the task locked, as a
    start is: this statement's snapshot is taken after the lock, so it sees
    every run a start or claim before it committed. One statement where
    reading the live runs and then inserting were two."""
    db = _db()
    sql, fields = _insert_alone_sql()
    params = [f.get_db_prep_save(f.pre_save(run, True), db) for f in fields]
    params += [run.task_id, Run.Status.QUEUED, Run.Status.RUNNING]
    params += _event_params(db, *event)
    with statement(db, sql, params) as cursor:
        row = cursor.fetchone()
    if row is None:
        return False
    run.pk = row[0]
    run._state.adding = False
    run._state.db = db.alias
    return True


@functools.cache
def _insert_alone_sql():
    names = tuple(f.name for f in _run.concrete_fields if not f.primary_key)
    fields = [_run.get_field(name) for name in names]
    table = _q(_run.db_table)
    columns = ", ".join(_q(f.column) for f in fields)
    # INSERT … SELECT types its values by themselves, not by their columns:
    # each is cast to its column's type (a NULL would be text otherwise);
    # text without its length, which a cast would cut to fit where the
    # column refuses what is too long.
    types = [re.sub(r"^varchar\(\d+\)$", "varchar", f.db_type(connection)) for f in fields]
    values = ", ".join(f"CAST(%s AS {db_type})" for db_type in types)
    alive = (
        f"SELECT 1 FROM {table} WHERE {_q('task_id')} = %s AND {_q('status')} IN (%s, %s)"
        f" AND {_q('not_before')} IS NULL"
    )
    sql = (
        f"WITH new AS (INSERT INTO {table} ({columns}) SELECT {values}"
        f" WHERE NOT EXISTS ({alive}) RETURNING {_q('id')}),"
        f" event AS ({_event_from('new')}) SELECT {_q('id')} FROM new"
    )
    return sql, fields


@functools.lru_cache(maxsize=16)
def _insert_returning_sql(opts, with_event: bool = False):
    names = tuple(f.name for f in opts.concrete_fields if not f.primary_key)
    sql, fields = _insert_sql(opts, names)
    if connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {_q(opts.pk.column)}"
    if with_event:
        sql = f"WITH new AS ({sql}), event AS ({_event_from('new')}) SELECT {_q('id')} FROM new"
    return sql, fields


def latest_revision(task_id: int, code_hash: str) -> int | None:
    """The id of the task's newest revision with this code, if any."""
    sql = _latest_revision_sql()
    with statement(_db(), sql, [task_id, code_hash]) as cursor:
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
    with statement(_db(), sql, [task_id]) as cursor:
        return [(bool(own), name, bytes(value)) for own, name, value in cursor.fetchall()]


@functools.cache
def _secrets_of_sql() -> str:
    table = Secret._meta
    return (
        f"SELECT {_q('task_id')} IS NOT NULL, {_q('name')}, {_q('encrypted_value')}"
        f" FROM {_q(table.db_table)} WHERE {_q('task_id')} IS NULL OR {_q('task_id')} = %s"
    )
