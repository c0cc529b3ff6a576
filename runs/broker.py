"""django-q2's ORM broker, woken up by the process that enqueues.

The ORM broker polls its table every ``poll`` seconds, and that interval
alone decides how long a run waits before a worker sees it: 0.2 s polling
costs about 0.13 s of dispatch latency, a fast poll costs CPU all day. Here
the pusher of each cluster on this host waits on a UNIX datagram socket in
``DATA_DIR/wake/`` instead of sleeping, and whoever enqueues a job (a web
request, a command, another cluster's worker) sends one byte to every
socket there once the job's row is committed. The poll stays as the
fallback: clusters on other hosts, and any wake-up that got lost, still see
the job within ``poll`` seconds.

On PostgreSQL the rows of runs' jobs are committed without waiting for
the disk (``synchronous_commit`` off for those statements alone): see
``_unhurried``."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import select
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from runs import rows

logger = logging.getLogger(__name__)

# Longest path a UNIX socket may have (sun_path, 108 bytes with its NUL).
_SUN_PATH_MAX = 107


def wake_dir() -> Path:
    return Path(settings.DATA_DIR) / "wake"


def _host_prefix() -> str:
    return socket.gethostname()[:20] + "-"


def poke() -> int:
    """Wake every pusher on this host; returns how many were reached. A
    socket whose pusher is gone is removed."""
    folder = wake_dir()
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    reached = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for name in names:
            if not name.endswith(".sock"):
                continue
            path = folder / name
            try:
                sender.sendto(b"!", str(path))
                reached += 1
            except BlockingIOError:
                reached += 1  # Its buffer is full of wake-ups: it is awake.
            except (ConnectionRefusedError, FileNotFoundError):
                # Its pusher is gone; a socket of another host on a shared
                # volume is that host's business.
                if name.startswith(_host_prefix()):
                    path.unlink(missing_ok=True)
            except OSError as exc:  # A path too long, a permission: poll then.
                logger.debug("could not wake %s: %s", path, exc)
    return reached


def _jobs_table():
    """The ORM broker's connection, its quoting, and the jobs' table quoted."""
    connection = connections[Conf.ORM]
    q = connection.ops.quote_name
    return connection, q, q(OrmQ._meta.db_table)


_run_jobs = contextvars.ContextVar("taskrun_run_jobs", default=False)


@contextlib.contextmanager
def run_jobs():
    """Jobs enqueued inside are runs' (``services.enqueue``): their rows may
    be committed unhurried (see ``_unhurried``). Other jobs — a webhook's
    delivery, say — have no run to rescue them, and are always durable."""
    token = _run_jobs.set(True)
    try:
        yield
    finally:
        _run_jobs.reset(token)


def _unhurried(connection) -> str:
    """A condition that turns ``synchronous_commit`` off for the statement's
    own commit (PostgreSQL, outside a transaction; else nothing), to add to
    a statement that writes only run jobs' rows: their enqueue (inside
    ``run_jobs``), and a chained worker's take and delete, which only ever
    touch run jobs. The pusher's take and the monitor's delete, which touch
    any job, stay durable.

    Every durable commit waits for the disk, and a chained run commits six:
    with all of them asynchronous, 300 trivial runs took 10 % less time on
    this machine. A run job's row is the broker's copy of what the run's row
    says, and a run's rows stay durable. What a crash of PostgreSQL may lose
    (the last fraction of a second of unhurried commits) is a run job
    inserted, taken or deleted: a run without a job gets one from
    ``rescue_stranded_runs`` (a lease after it was handed over, at the
    housekeeping's next pass), and a job delivered again finds its run
    taken (the claim is a compare-and-set). Any durable commit after one of
    these makes it durable too: the log is flushed in order. Inside a
    transaction the setting would hold for all of it, so there it is not
    added."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return ""
    if not connection.get_autocommit():
        return ""
    return " AND set_config('synchronous_commit', 'off', true) IS NOT NULL"


class WakingORM(ORM):
    """The ORM broker; its pusher sleeps on a socket that ``enqueue`` pokes."""

    _socket: socket.socket | None = None
    _socket_pid: int | None = None

    def enqueue(self, task):
        """The job's row, as django-q2's ORM broker stores it, with one plain
        INSERT (every start pays for this one). Without django-q2's
        stale-connection check: a job is enqueued right after the
        transaction that made its run (on this connection, in this thread)
        committed, and on PostgreSQL the check is a round trip."""
        connection, q, table = _jobs_table()
        columns = f"{q('key')}, {q('payload')}, {q('lock')}"
        sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s)"
        if _run_jobs.get() and (unhurried := _unhurried(connection)):
            sql = f"INSERT INTO {table} ({columns}) SELECT %s, %s, %s WHERE true{unhurried}"
        returning = connection.features.can_return_columns_from_insert
        if returning:
            sql += f" RETURNING {q('id')}"
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with rows.statement(
            connection, sql, [self.list_key or Conf.CLUSTER_NAME, task, now]
        ) as cursor:
            if returning:
                pk = cursor.fetchone()[0]
            else:
                pk = connection.ops.last_insert_id(cursor, OrmQ._meta.db_table, "id")
        # Inside a transaction the row is not visible yet: wake the pusher
        # when it is (at once outside one).
        transaction.on_commit(poke, using=Conf.ORM)
        return pk

    def dequeue(self):
        found = self._take() if self._can_take_in_one() else self._take_in_two()
        if found:
            return found
        self._wait(Conf.POLL)
        return None

    @staticmethod
    def _can_take_in_one() -> bool:
        connection = connections[Conf.ORM]
        if connection.vendor == "postgresql":
            return True
        # UPDATE … RETURNING came with SQLite 3.35.
        return connection.vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)

    def take_one(self, parse: Callable[[str], Any], done=None) -> tuple[int, Any] | None:
        """The oldest waiting job, locked for this process as the pusher
        locks it (a worker between two runs takes its next job itself), if
        ``parse(payload)`` says it is one to take (not None); otherwise it
        is left exactly as it was. Returns (its id, what parse said).
        ``done``: the id of the job taken before, done with (``done_with``),
        whose row goes first — on PostgreSQL in the same statement as the
        read, one round trip fewer a chained run.

        The job is read, then taken with the pusher's compare-and-set (its
        lock still in the past), so a job not to take is never written, and
        one the pusher took meanwhile ends the chain. No transaction, and no
        stale-connection check: the worker has just used the connection."""
        connection, q, table = _jobs_table()
        adapt = connection.ops.adapt_datetimefield_value
        now = adapt(timezone.now())
        sql = (
            f"SELECT {q('id')}, {q('payload')} FROM {table}"
            f" WHERE {q('key')} = %s AND {q('lock')} < %s ORDER BY {q('id')} LIMIT 1"
        )
        params = [self.list_key, now]
        if done is not None and rows.one_statement():
            # The deleted row is not in the read's snapshot, nor one to
            # take (its lock is ahead).
            unhurried = _unhurried(connection)
            sql = f"WITH done AS (DELETE FROM {table} WHERE {q('id')} = %s{unhurried}) {sql}"
            params.insert(0, done)
        elif done is not None:
            self._delete(done, unhurried=True)
        with rows.statement(connection, sql, params) as cursor:
            row = cursor.fetchone()
        if row is None:
            return None
        pk, payload = row
        parsed = parse(payload)
        if parsed is None:
            return None
        sql = f"UPDATE {table} SET {q('lock')} = %s WHERE {q('id')} = %s AND {q('lock')} < %s"
        sql += _unhurried(connection)
        with rows.statement(connection, sql, [adapt(self.timeout(None)), pk, now]) as cursor:
            taken = cursor.rowcount == 1
        return (pk, parsed) if taken else None

    def _take(self, limit: int | None = None) -> list[tuple[int, str]]:
        """Lock the oldest waiting jobs for this cluster in one statement (the
        pusher runs once per job: two ORM statements were a quarter of its
        CPU). The outer ``lock <`` makes it a compare-and-set when clusters
        race for a job; PostgreSQL's SKIP LOCKED lets them pass each other."""
        self.get_connection()  # Drops a stale connection, as django-q2 does.
        connection, q, table = _jobs_table()
        pick = (
            f"SELECT {q('id')} FROM {table} WHERE {q('key')} = %s AND {q('lock')} < %s"
            f" ORDER BY {q('id')} LIMIT %s"
        )
        if connection.vendor == "postgresql":
            pick += " FOR UPDATE SKIP LOCKED"
        sql = (
            f"UPDATE {table} SET {q('lock')} = %s WHERE {q('id')} IN ({pick})"
            f" AND {q('lock')} < %s RETURNING {q('id')}, {q('payload')}"
        )
        adapt = connection.ops.adapt_datetimefield_value
        now = adapt(timezone.now())
        until = adapt(self.timeout(None))
        params = [until, self.list_key, now, limit or Conf.BULK, now]
        with rows.statement(connection, sql, params) as cursor:
            return [(pk, payload) for pk, payload in cursor.fetchall()]

    def delete(self, task_id) -> None:
        """A done job's row goes (django-q2's monitor acknowledges every job):
        one DELETE, where the ORM's delete() wraps it in a transaction of
        its own, three statements and SQLite's write lock held between."""
        self.get_connection()  # Drops a stale connection, as django-q2 does.
        self._delete(task_id)

    def done_with(self, task_id) -> None:
        """A job taken with ``take_one`` is done: its row goes. No
        stale-connection check: the worker has just used the connection."""
        self._delete(task_id, unhurried=True)

    @staticmethod
    def _delete(task_id, unhurried: bool = False) -> None:
        connection, q, table = _jobs_table()
        sql = f"DELETE FROM {table} WHERE {q('id')} = %s"
        if unhurried:
            sql += _unhurried(connection)
        rows.execute(connection, sql, [task_id])

    def _take_in_two(self) -> list[tuple[int, str]]:
        now = timezone.now()
        tasks = (
            self.get_connection()
            .filter(key=self.list_key, lock__lt=now)
            .order_by("id")[: Conf.BULK]
        )
        found = []
        for task in tasks:
            # Another cluster may have been faster: the lock is a compare-and-set.
            if (
                self.get_connection()
                .filter(id=task.id, lock=task.lock)
                .update(lock=self.timeout(task))
            ):
                found.append((task.pk, task.payload))
        return found

    def _wait(self, timeout: float) -> None:
        """Sleep until poked or ``timeout`` seconds have passed."""
        sock = self._listener()
        if sock is None:
            select.select([], [], [], timeout)
            return
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            try:
                while sock.recv(64):  # Several pokes wake it once.
                    pass
            except BlockingIOError:
                pass

    def _listener(self) -> socket.socket | None:
        """This process's socket, made on first use (the broker object is
        built in the sentinel and pickled into the pusher)."""
        pid = os.getpid()
        if self._socket_pid == pid:
            return self._socket
        self._socket_pid = pid
        self._socket = None
        path = wake_dir() / f"{_host_prefix()}{pid}.sock"
        if len(str(path)) > _SUN_PATH_MAX:
            logger.info("DATA_DIR is too deep for a wake-up socket; polling every %s s", Conf.POLL)
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(path))
            sock.setblocking(False)
        except OSError as exc:
            logger.warning("no wake-up socket (%s); polling every %s s", exc, Conf.POLL)
            return None
        self._socket = sock
        return sock

    def __del__(self):
        if self._socket is not None and self._socket_pid == os.getpid():
            try:
                path = self._socket.getsockname()
                self._socket.close()
                os.unlink(path)
            except (OSError, TypeError):
                pass


class RedisJobs:
    """``take_one`` and ``done_with`` over django-q2's Redis broker,
    for a worker that takes its next job itself. As with django-q2's own
    dequeue, a job taken is off the list (at most once)."""

    def __init__(self, broker):
        self.broker = broker

    def take_one(self, parse: Callable[[bytes], Any], done=None) -> tuple[None, Any] | None:
        # A job taken is off the list already: ``done`` has nothing to do.
        payload = self.broker.connection.lpop(self.broker.list_key)
        if payload is None:
            return None
        parsed = parse(payload)
        if parsed is None:
            # Not one to take: back at the head of the list.
            self.broker.connection.lpush(self.broker.list_key, payload)
            return None
        return None, parsed

    def done_with(self, task_id) -> None:
        pass  # Off the list since it was taken.


def jobs_to_take(broker):
    """What a worker takes its next job from, for the brokers taskrun ships
    with (None for another broker)."""
    if isinstance(broker, WakingORM):
        return broker
    try:
        from django_q.brokers.redis_broker import Redis
    except ImportError:
        return None
    return RedisJobs(broker) if isinstance(broker, Redis) else None
