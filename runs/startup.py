"""What the web side does once at start, before it serves: wait for the
database, then migrate under a lock, since several containers (or `serve` and
`web` processes) may start together. Workers do not migrate; they wait until
the web side has."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor

# pg_advisory_lock key: any constant that no other program on the same
# database uses; these are the bytes of "taskrun".
MIGRATION_LOCK_KEY = int.from_bytes(b"taskrun", "big")


@contextmanager
def migration_lock() -> Iterator[None]:
    """Hold a lock that every process migrating this database takes.

    PostgreSQL: a session advisory lock, held by the connection that migrate
    then uses. SQLite: an flock on a file beside the database — SQLite's own
    write lock covers one migration at a time, not the plan made before it, so
    two processes could otherwise both try to apply the same migration."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])
    elif connection.vendor == "sqlite" and not connection.is_in_memory_db():
        database = Path(connection.settings_dict["NAME"])
        with open(database.with_name(database.name + ".migrate-lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
    else:
        yield


def wait_for_database(timeout: float, poll: float = 1.0) -> None:
    """Return once the database answers; CommandError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.ensure_connection()
            return
        except DatabaseError as exc:
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"the database did not answer within {timeout:g} s: {first_line(exc)}"
                ) from None
        connection.close()
        time.sleep(poll)


def migrate() -> None:
    """Apply migrations; a no-op for every process but the first to start."""
    with migration_lock():
        call_command("migrate", interactive=False, verbosity=0)


def pending_migrations() -> list[str]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]


def wait_for_migrations(timeout: float, poll: float = 2.0) -> None:
    """Return once the database is up and fully migrated (by someone else)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pending = pending_migrations()
        except DatabaseError as exc:
            why = f"the database does not answer: {first_line(exc)}"
            connection.close()
        else:
            if not pending:
                return
            why = f"{len(pending)} migrations not applied yet (first: {pending[0]})"
        if time.monotonic() >= deadline:
            raise CommandError(
                f"gave up after {timeout:g} s: {why}. Start the web side (it migrates) "
                "or run `manage.py migrate`."
            )
        time.sleep(poll)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
