"""The executor's hand-written statements (runs/rows.py) store and read
exactly what the ORM would."""

from __future__ import annotations

import pytest
from django.utils import timezone

from runs import rows, services
from runs.models import Run, RunEvent, Task

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


def test_a_read_for_update_is_the_row_or_none(make_task):
    task = make_task("locked", "print(1)", env={"A": "1"})
    ours = rows.read(Task, task.pk, for_update=True)
    _same(ours, Task.objects.get(pk=task.pk), Task)
    assert ours._state.db == "default" and not ours._state.adding
    assert rows.read(Task, task.pk + 1000, for_update=True) is None
