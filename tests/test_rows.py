"""The executor's hand-written statements (runs/rows.py) store and read
exactly what the ORM would."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from runs import rows, services, vault
from runs.models import LogChunk, Run, RunEvent, Task

pytestmark = pytest.mark.django_db


def _same(a, b, model) -> None:
    for field in model._meta.concrete_fields:
        assert getattr(a, field.attname) == getattr(b, field.attname), field.name


def test_the_run_with_its_task_reads_as_select_related_does(make_task):
    task = make_task("both", "print(1)", env={"A": "1"}, args=["x"], timeout=77)
    run = services.start_run(task, config={"k": [1, 2]}, env={"B": "2"})
    ours = rows.run_with_task(run.pk)
    orm = Run.objects.select_related("task").get(pk=run.pk)
    _same(ours, orm, Run)
    _same(ours.task, orm.task, Task)
    assert ours.config == {"k": [1, 2]} and ours.task.env == {"A": "1"}
    assert ours.queued_at.tzinfo is not None
    assert rows.run_with_task(run.pk + 1000) is None


def test_a_compare_and_set_stores_json_times_and_flags_as_the_orm_does(make_task):
    task = make_task("cas", "print(1)")
    run = services.start_run(task)
    now = timezone.now()
    fields = {"status": Run.Status.RUNNING, "started_at": now, "worker": "w:1"}
    assert rows.update_run(run.pk, fields, status=Run.Status.QUEUED, alone=True)
    # Not twice: the state is no longer queued.
    assert not rows.update_run(run.pk, fields, status=Run.Status.QUEUED)
    # Fenced: another worker's write changes nothing.
    result = {"rows": [1, 2], "ok": True}
    assert not rows.update_run(
        run.pk, {"result": result}, status=Run.Status.RUNNING, where={"worker": "w:2"}
    )
    assert rows.update_run(
        run.pk,
        {"result": result, "log_truncated": True, "progress": 50},
        status=Run.Status.RUNNING,
        where={"worker": "w:1"},
    )
    run.refresh_from_db()
    assert (run.result, run.log_truncated, run.progress) == (result, True, 50)
    assert run.started_at == now
    assert Run.objects.filter(started_at=now, log_truncated=True, result=result).count() == 1

    # Alone: a second run of the task is not set running beside it.
    other = Run.objects.create(task=task)
    assert not rows.update_run(other.pk, fields, status=Run.Status.QUEUED, alone=True)

    rows.insert_event(run.pk, "queued", "running", "w:1", "claimed")
    event = RunEvent.objects.filter(run=run).latest("id")
    assert (event.from_status, event.to_status, event.actor) == ("queued", "running", "w:1")
    assert abs((timezone.now() - event.at).total_seconds()) < 60


def test_a_plain_insert_stores_what_create_stores(make_task, admin_user):
    task = make_task("ins", "print(1)")
    values = dict(
        task=task,
        trigger=Run.Trigger.API,
        triggered_by=admin_user,
        args=["a", "b c"],
        env={"K": "v"},
        config={"deep": {"x": [1, None]}},
        attempt=2,
        not_before=timezone.now(),
    )
    ours = Run(**values)
    rows.insert(ours)
    orm = Run.objects.create(**values)
    assert ours.pk and ours.pk != orm.pk and not ours._state.adding
    stored = Run.objects.get(pk=ours.pk)
    for field in Run._meta.concrete_fields:
        if field.name in ("id", "queued_at"):
            continue
        assert getattr(stored, field.attname) == getattr(orm, field.attname), field.name
    assert stored.queued_at == ours.queued_at and stored.queued_at.tzinfo is not None
    # With its first event (one statement on PostgreSQL): the event is the run's.
    first = Run(**values)
    rows.insert(first, event=("", Run.Status.QUEUED, "api:admin", "started by api:admin"))
    assert first.pk and Run.objects.filter(pk=first.pk).exists()
    event = RunEvent.objects.get(run_id=first.pk)
    assert (event.from_status, event.to_status, event.actor, event.reason) == (
        "",
        Run.Status.QUEUED,
        "api:admin",
        "started by api:admin",
    )
    assert event.at.tzinfo is not None


def test_a_read_for_update_is_the_row_or_none(make_task):
    task = make_task("locked", "print(1)", env={"A": "1"})
    ours = rows.read(Task, task.pk, for_update=True)
    _same(ours, Task.objects.get(pk=task.pk), Task)
    assert ours._state.db == "default" and not ours._state.adding
    assert rows.read(Task, task.pk + 1000, for_update=True) is None


def test_a_change_with_its_event_and_log_chunk_is_stored_as_one(make_task):
    """One statement on PostgreSQL, one transaction on SQLite: the same rows."""
    task = make_task("one", "print(1)")
    run = services.start_run(task)
    running = {"status": Run.Status.RUNNING, "worker": "w:1"}
    assert rows.update_run(run.pk, running, status=Run.Status.QUEUED, event=("w:1", "claimed"))
    ended = {"status": Run.Status.SUCCEEDED, "log_size": 6, "exit_code": 0}
    assert rows.update_run(
        run.pk,
        ended,
        status=Run.Status.RUNNING,
        where={"worker": "w:1"},
        event=("w:1", "done"),
        chunk=(0, b"hello\n"),
    )
    run.refresh_from_db()
    assert (run.status, run.log_size, run.exit_code) == ("succeeded", 6, 0)
    assert [bytes(c.data) for c in LogChunk.objects.filter(run=run)] == [b"hello\n"]
    events = list(RunEvent.objects.filter(run=run).order_by("id"))
    assert [(e.from_status, e.to_status, e.actor, e.reason) for e in events[1:]] == [
        ("queued", "running", "w:1", "claimed"),
        ("running", "succeeded", "w:1", "done"),
    ]
    assert all(e.at.tzinfo is not None for e in events)

    # Fenced out: the chunk is stored (a supervisor's output always was),
    # the run and its events are not changed.
    assert not rows.update_run(
        run.pk,
        {"status": Run.Status.FAILED},
        status=Run.Status.RUNNING,
        where={"worker": "w:2"},
        event=("w:2", "late"),
        chunk=(6, b"more\n"),
    )
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert LogChunk.objects.filter(run=run).count() == 2
    assert RunEvent.objects.filter(run=run).count() == len(events)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's one-statement claim")
def test_the_one_statement_claim_returns_the_run_and_task_as_the_orm_reads_them(make_task):
    task = make_task("claimed", "print(1)", env={"A": "1"}, timeout=33)
    run = services.start_run(task, config={"k": 1}, args=["a"])
    now = timezone.now()
    claim = {"started_at": now, "heartbeat_at": now, "worker": "w:1", "status": "running"}
    ours = rows.claim(run.pk, claim, actor="w:1", reason="claimed by w:1")
    orm = Run.objects.select_related("task").get(pk=run.pk)
    _same(ours, orm, Run)
    _same(ours.task, orm.task, Task)
    assert (ours.status, ours.worker, ours.started_at) == ("running", "w:1", now)
    # No secret: none read with it.
    assert ours.task.secrets_read == [] and vault.secrets_for(ours.task) == {}
    event = RunEvent.objects.filter(run=run).latest("id")
    assert (event.from_status, event.to_status, event.reason) == (
        "queued",
        "running",
        "claimed by w:1",
    )

    # Not twice; not a second run of the task beside it; not a missing run.
    assert rows.claim(run.pk, claim, actor="w:2", reason="again") is None
    other = Run.objects.create(task=task)
    assert rows.claim(other.pk, claim, actor="w:2", reason="beside") is None
    assert Run.objects.get(pk=other.pk).status == "queued"
    assert rows.claim(run.pk + 1000, claim, actor="w:2", reason="gone") is None
    assert RunEvent.objects.filter(reason__in=["again", "beside", "gone"]).count() == 0


def test_a_statement_fails_with_djangos_errors(make_task):
    """Straight on the DB-API cursor, errors are still Django's: callers
    catch django.db.IntegrityError (a claim refused by the unique index)."""
    from django.db import IntegrityError, transaction

    run = services.start_run(make_task("errs", "print(1)"))
    rows.insert_chunk(run.pk, 0, b"one")
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert_chunk(run.pk, 0, b"again")  # (run, start) is unique
    assert [bytes(c.data) for c in LogChunk.objects.filter(run=run)] == [b"one"]


@pytest.mark.django_db(transaction=True)
def test_a_change_that_fails_leaves_nothing_and_no_transaction_open(make_task):
    from django.db import IntegrityError
    from django.db import connection as db

    run = services.start_run(make_task("undone", "print(1)"))
    rows.insert_chunk(run.pk, 0, b"first")
    with pytest.raises(IntegrityError):
        # The chunk collides with the stored one: the change is not made.
        rows.update_run(
            run.pk,
            {"status": Run.Status.RUNNING, "worker": "w:1"},
            status=Run.Status.QUEUED,
            event=("w:1", "claimed"),
            chunk=(0, b"again"),
        )
    if db.vendor == "postgresql":
        assert not db.connection.info.transaction_status  # IDLE
    else:
        assert not db.connection.in_transaction
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert not RunEvent.objects.filter(run=run, reason="claimed").exists()
    # The connection goes on in autocommit.
    assert rows.update_run(
        run.pk, {"status": Run.Status.RUNNING}, status=Run.Status.QUEUED, event=("w:1", "again")
    )
    assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's prepared statements")
def test_these_statements_are_prepared_once_and_the_orms_are_not(make_task):
    """On PostgreSQL these statements are planned once per connection, not
    once per run; the ORM's own queries stay unprepared (Django's default,
    which poolers of old rely on)."""
    from django.db import connection as db

    run = services.start_run(make_task("planned", "print(1)"))
    for _ in range(3):
        assert rows.read(Run, run.pk).pk == run.pk
        assert Task.objects.filter(name="planned").count() == 1

    def prepared(like: str) -> int:
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [like]
            )
            return cursor.fetchone()[0]

    run_table = Run._meta.db_table
    assert prepared(f'SELECT "id", %FROM "{run_table}" WHERE "id" = $1') == 1
    assert prepared('%COUNT(*)%FROM "runs_task"%') == 0
    # A failed statement leaves the connection usable, prepared statements too.
    from django.db import IntegrityError, transaction

    rows.insert_chunk(run.pk, 0, b"one")
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert_chunk(run.pk, 0, b"again")
    assert rows.read(Run, run.pk).pk == run.pk


def test_an_end_reads_what_follows_with_it_where_it_can(make_task):
    """On PostgreSQL a run's end answers what follows it in the same
    statement, exactly as ``what_follows`` would; elsewhere it is read after."""
    from runs.models import TaskLink, Webhook

    task, other = make_task("ends", "print(1)"), make_task("after", "print(1)")
    run = services.start_run(task)
    done = {"status": Run.Status.SUCCEEDED, "finished_at": timezone.now()}

    def end(run_id):
        return rows.update_run(
            run_id, done, status=Run.Status.QUEUED, event=("w:1", "done"), follows=True
        )

    alone = end(run.pk)
    assert alone
    expected = (False, False, False) if rows.one_statement() else None
    assert alone.follows == expected
    assert rows.what_follows(task.pk) == (False, False, False)

    second = services.start_run(task)
    Run.objects.create(task=task)  # queued, no job: waits in line
    TaskLink.objects.create(upstream=task, downstream=other)
    Webhook.objects.create(task=task, url="http://127.0.0.1:9/hook")
    change = end(second.pk)
    assert change and rows.what_follows(task.pk) == (True, True, True)
    assert change.follows == ((True, True, True) if rows.one_statement() else None)
    # A change not made (the compare-and-set lost) is false, with nothing to follow.
    again = end(second.pk)
    assert not again and again.follows in (None, (False, False, False))


@pytest.mark.django_db(transaction=True)
def test_a_statement_inside_anothers_and_after_a_new_connection_reads_its_own_rows(make_task):
    """On PostgreSQL the statements share one cursor per connection: one run
    inside another's block gets its own, and a new connection a new one."""
    from django.db import connection as db

    task = make_task("nested", "print(1)")
    run = services.start_run(task)
    with rows.statement(db, "SELECT %s", [7]) as outer:
        assert rows.read(Task, task.pk).name == "nested"
        assert outer.fetchone()[0] == 7
    assert rows.read(Run, run.pk).task_id == task.pk
    db.close()
    assert rows.read(Run, run.pk).task_id == task.pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's one-statement claim")
def test_the_claim_brings_the_tasks_secrets_as_secrets_of_reads_them(make_task):
    task, other = make_task("secretive", "print(1)"), make_task("other", "print(1)")
    vault.set_secret("SHARED", "global value")
    vault.set_secret("SHARED", "the task's own", task=task)
    vault.set_secret("ONLY_MINE", "mine", task=task)
    vault.set_secret("NOT_MINE", "theirs", task=other)
    run = services.start_run(task)
    now = timezone.now()
    claim = {"started_at": now, "heartbeat_at": now, "worker": "w:1", "status": "running"}
    claimed = rows.claim(run.pk, claim, actor="w:1", reason="claimed")
    assert sorted(claimed.task.secrets_read) == sorted(rows.secrets_of(task.pk))
    assert len(claimed.task.secrets_read) == 3
    # Used once, as secrets_for would read them: the task's own win.
    expected = {"SHARED": "the task's own", "ONLY_MINE": "mine"}
    assert vault.secrets_for(claimed.task) == expected
    assert "secrets_read" not in claimed.task.__dict__
    vault.set_secret("ONLY_MINE", "changed", task=task)
    assert vault.secrets_for(claimed.task)["ONLY_MINE"] == "changed"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's one-statement start")
def test_a_run_inserted_alone_only_when_nothing_of_its_task_is_alive(make_task):
    from datetime import timedelta

    from django.db import transaction

    task = make_task("alone", "print(1)")
    event = ("", Run.Status.QUEUED, "cli", "started by cli")

    def attempt(**values) -> Run | None:
        run = Run(task=task, args=["x"], env={"K": "v"}, dispatched_at=timezone.now(), **values)
        with transaction.atomic():
            rows.read(Task, task.pk, for_update=True)
            return run if rows.insert_run_alone(run, event) else None

    # A delayed run waits outside the policy: it is not in the way.
    Run.objects.create(task=task, not_before=timezone.now() + timedelta(hours=1))
    first = attempt()
    assert first is not None and not first._state.adding
    stored = Run.objects.get(pk=first.pk)
    assert (stored.args, stored.env, stored.status) == (["x"], {"K": "v"}, "queued")
    assert stored.dispatched_at == first.dispatched_at and stored.queued_at is not None
    assert RunEvent.objects.get(run=stored).reason == "started by cli"
    # Queued, then running: in the way, and nothing is written.
    count, events = Run.objects.count(), RunEvent.objects.count()
    assert attempt() is None
    Run.objects.filter(pk=first.pk).update(status=Run.Status.RUNNING)
    assert attempt() is None
    assert (Run.objects.count(), RunEvent.objects.count()) == (count, events)
    Run.objects.filter(pk=first.pk).update(status=Run.Status.SUCCEEDED)
    # Too long for its column: refused, as an INSERT … VALUES refuses it, not cut.
    from django.db import DataError

    with pytest.raises(DataError):
        attempt(reason="r" * 501)
    assert (Run.objects.count(), RunEvent.objects.count()) == (count, events)
    assert attempt() is not None


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's prepared statements")
@pytest.mark.django_db(transaction=True)
def test_a_statement_prepared_before_a_migration_changed_its_columns_is_prepared_again(make_task):
    """A worker's connection outlives a deployment's migration: a prepared
    statement whose columns changed type is refused by PostgreSQL ("cached
    plan must not change result type"); it is prepared again, once."""
    import psycopg
    from django.db import connection as db

    task = make_task("migrated", "print(1)")
    assert rows.read(Task, task.pk).name == "migrated"  # prepared
    params = db.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)

    def alter(length: int) -> None:
        with psycopg.connect(**params, autocommit=True) as other:
            other.execute(f"ALTER TABLE runs_task ALTER COLUMN name TYPE varchar({length})")

    alter(65)
    try:
        assert rows.read(Task, task.pk).name == "migrated"
        assert rows.read(Task, task.pk).name == "migrated"
    finally:
        db.close()
        alter(64)
