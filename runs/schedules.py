"""Cron schedules, on django-q2's scheduler.

Each TaskSchedule (what people edit) owns one django-q2 ``Schedule`` row of
type cron, kept in step by the signals below: it exists only while both the
schedule and its task are enabled. django-q2's scheduler fires it — under
``select_for_update`` on PostgreSQL and the IMMEDIATE write lock on SQLite,
so several clusters never fire one row twice — as a job that calls
``fire(schedule_id, slot=…)``; ``fire`` starts the run through
``services.start_run`` like any other trigger.

django-q2 computes a cron's next time in one zone for the whole cluster, so
``fire`` sets the next time itself for a schedule in another zone, and ignores
a time that is not a slot of the schedule in its own zone.

The clock (a thread in each qcluster's main process) runs the scheduler every
SCHEDULER_INTERVAL seconds — django-q2's own sentinel would do it only every
30 s — and releases delayed runs that are due."""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Min, Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_q.models import Schedule

from runs import cron, services
from runs.models import Run, Task, TaskSchedule

logger = logging.getLogger(__name__)

FIRE = "runs.schedules.fire"


# --- keeping django-q2's rows in step ----------------------------------------


def sync(ts: TaskSchedule) -> None:
    """Create, update or delete the django-q2 Schedule behind ``ts``."""
    wanted = ts.enabled and ts.task.enabled
    job = Schedule.objects.filter(pk=ts.job_id).first() if ts.job_id else None
    if not wanted:
        if job is not None:
            job.delete()
            TaskSchedule.objects.filter(pk=ts.pk).update(job=None)
        return
    name = f"{ts.task.name} #{ts.pk} ({ts.timezone})"[:100]
    if job is not None and job.cron == ts.cron and job.name == name:
        return  # Unchanged: keep its next time, which may be due right now.
    fields = {
        "name": name,
        "func": FIRE,
        "args": repr(ts.pk),
        "schedule_type": Schedule.CRON,
        "cron": ts.cron,
        "repeats": -1,
        "intended_date_kwarg": "slot",
        "next_run": cron.next_slot(ts.cron, ts.timezone, timezone.now()),
    }
    if job is None:
        job = Schedule.objects.create(**fields)
        TaskSchedule.objects.filter(pk=ts.pk).update(job=job)
        ts.job = job
    # An update, also after create: Schedule.save() puts a new cron schedule
    # at its next time in the cluster's zone, not ours.
    Schedule.objects.filter(pk=job.pk).update(**fields)


def repair() -> int:
    """Give back its django-q2 row to every schedule that should have one
    and has none (deleted in django-q2's admin, or saved raw by loaddata)."""
    lost = TaskSchedule.objects.filter(enabled=True, task__enabled=True, job__isnull=True)
    count = 0
    for ts in lost.select_related("task"):
        sync(ts)
        count += 1
    return count


def _schedule_saved(sender, instance: TaskSchedule, raw: bool = False, **kwargs: Any) -> None:
    if not raw:
        sync(instance)


def _schedule_deleted(sender, instance: TaskSchedule, **kwargs: Any) -> None:
    if instance.job_id:
        Schedule.objects.filter(pk=instance.job_id).delete()


def _task_saved(sender, instance: Task, raw: bool = False, **kwargs: Any) -> None:
    # Pausing a task stops its schedules; resuming starts them from now on
    # (missed slots are not made up, like a resumed Kubernetes CronJob
    # without a starting deadline would not replay a backlog either).
    if raw:
        return
    for ts in instance.schedules.all():
        ts.task = instance
        sync(ts)


def connect_signals() -> None:
    post_save.connect(_schedule_saved, sender=TaskSchedule, dispatch_uid="taskrun-schedule-saved")
    post_delete.connect(
        _schedule_deleted, sender=TaskSchedule, dispatch_uid="taskrun-schedule-deleted"
    )
    post_save.connect(_task_saved, sender=Task, dispatch_uid="taskrun-task-saved")


# --- firing --------------------------------------------------------------------


def fire(schedule_id: int, slot: str | None = None) -> str:
    """The job of one schedule slot: start a run, or record a skipped one
    when the overlap policy refuses it. A slot starts at most one run."""
    ts = TaskSchedule.objects.select_related("task").filter(pk=schedule_id).first()
    if ts is None:
        return "schedule deleted"
    moment = (parse_datetime(slot) if slot else None) or timezone.now()
    try:
        return _fire(ts, moment)
    finally:
        _realign(ts, moment)


def _fire(ts: TaskSchedule, moment: datetime) -> str:
    if not cron.is_slot(ts.cron, ts.timezone, moment):
        # A time django-q2 computed in the cluster's zone, not ours.
        return f"{moment.isoformat()} is not a slot in {ts.timezone}"
    with transaction.atomic():
        # The task row first: the lock order of every start.
        task = Task.objects.select_for_update().get(pk=ts.task_id)
        if not (task.enabled and ts.enabled):
            return "paused"
        # Never twice for one slot, whatever the broker redelivers.
        claimed = (
            TaskSchedule.objects.filter(pk=ts.pk)
            .filter(Q(last_slot__isnull=True) | Q(last_slot__lt=moment))
            .update(last_slot=moment)
        )
        if not claimed:
            return "slot already fired"
        try:
            run = services.start_run(
                task, trigger=Run.Trigger.SCHEDULE, schedule=ts, scheduled_for=moment
            )
        except services.RunRefused as exc:
            run = services.record_skipped(
                task,
                trigger=Run.Trigger.SCHEDULE,
                reason=str(exc),
                schedule=ts,
                scheduled_for=moment,
            )
            return f"skipped: {exc}"
    return f"run #{run.pk}"


def _realign(ts: TaskSchedule, moment: datetime) -> None:
    """Set the next time in the schedule's own zone (django-q2 computed it in
    the cluster's)."""
    if not ts.job_id:
        return
    want = cron.next_slot(ts.cron, ts.timezone, max(timezone.now(), moment))
    Schedule.objects.filter(pk=ts.job_id).exclude(next_run=want).update(next_run=want)


def next_run_at(task: Task) -> datetime | None:
    """When the task runs next: its earliest schedule or delayed run."""
    if not task.enabled:
        return None
    times = [ts.next_run_at for ts in task_schedules(task) if ts.enabled]
    if hasattr(task, "next_delayed_at"):  # annotated by a list of tasks
        times.append(task.next_delayed_at)
    else:
        times.append(
            task.runs.filter(status=Run.Status.QUEUED, not_before__isnull=False).aggregate(
                t=Min("not_before")
            )["t"]
        )
    times = [t for t in times if t is not None]
    return min(times) if times else None


def task_schedules(task: Task) -> list[TaskSchedule]:
    """The task's schedules with their django-q2 rows, from the prefetch
    cache when the caller made one (``prefetch_related("schedules__job")``,
    as a list of tasks should)."""
    if "schedules" in getattr(task, "_prefetched_objects_cache", {}):
        return list(task.schedules.all())
    return list(task.schedules.select_related("job"))


# --- what the API and forms accept ------------------------------------------------


def parse_schedules(value: Any) -> list[dict[str, Any]]:
    """Check a list of ``{"cron", "timezone"?, "enabled"?}``; raise
    ValidationError naming the bad item and what is wrong with it."""
    if not isinstance(value, list):
        raise ValidationError('schedules must be a list of {"cron", "timezone", "enabled"}.')
    specs = []
    for i, item in enumerate(value):
        where = f"schedules[{i}]"
        if not isinstance(item, dict):
            raise ValidationError(f'{where} must be an object like {{"cron": "0 * * * *"}}.')
        unknown = set(item) - {"cron", "timezone", "enabled", "next_run_at", "id"}
        if unknown:
            raise ValidationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}.")
        expr = item.get("cron")
        tz = item.get("timezone") or settings.TIME_ZONE
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise ValidationError(f"{where}.enabled must be true or false.")
        for field, check, val in (("cron", cron.validate_cron, expr), ("timezone", cron.zone, tz)):
            try:
                check(val)
            except ValidationError as exc:
                raise ValidationError(f"{where}.{field}: {' '.join(exc.messages)}") from None
        specs.append({"cron": expr.strip(), "timezone": tz, "enabled": enabled})
    return specs


MAX_DELAY = 366 * 86400
# How far in the past an "at" time may be (clocks differ): it then means now.
AT_LEEWAY = 60


def parse_start_time(*, delay: Any = None, at: Any = None) -> datetime | None:
    """The ``not_before`` of a delayed start from ``"delay": seconds`` or
    ``"at": ISO 8601`` (without an offset: in TIME_ZONE). None: start now."""
    if delay is not None and at is not None:
        raise ValidationError("Give either delay or at, not both.")
    now = timezone.now()
    if delay is not None:
        try:
            seconds = float(delay)
        except (TypeError, ValueError):
            raise ValidationError(f"delay must be a number of seconds, not {delay!r}.") from None
        if isinstance(delay, bool) or not 0 <= seconds <= MAX_DELAY:
            raise ValidationError(f"delay must be between 0 and {MAX_DELAY} seconds.")
        return now + timedelta(seconds=seconds) if seconds else None
    if at is not None:
        try:
            moment = parse_datetime(at) if isinstance(at, str) else None
        except ValueError:  # Well formed, but no such time: 2030-02-31T08:00.
            moment = None
        if moment is None:
            raise ValidationError(
                f"at must be an ISO 8601 time like 2030-01-31T08:00:00+00:00, not {at!r}."
            )
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        if moment < now - timedelta(seconds=AT_LEEWAY):
            raise ValidationError(f"at ({moment.isoformat()}) is in the past.")
        if moment > now + timedelta(seconds=MAX_DELAY):
            raise ValidationError("at is more than a year away.")
        return moment if moment > now else None
    return None


def replace_schedules(task: Task, specs: list[dict[str, Any]]) -> None:
    """Make the task's schedules exactly ``specs`` (from parse_schedules).
    Rows are reused in order, so a schedule that stays keeps its history."""
    with transaction.atomic():
        current = list(task.schedules.order_by("id"))
        for ts, spec in zip(current, specs, strict=False):
            if (ts.cron, ts.timezone, ts.enabled) != (
                spec["cron"],
                spec["timezone"],
                spec["enabled"],
            ):
                ts.cron, ts.timezone, ts.enabled = spec["cron"], spec["timezone"], spec["enabled"]
                ts.save()
        for ts in current[len(specs) :]:
            ts.delete()
        for spec in specs[len(current) :]:
            TaskSchedule.objects.create(task=task, **spec)


def schedules_json(task: Task) -> list[dict[str, Any]]:
    return [
        {
            "cron": ts.cron,
            "timezone": ts.timezone,
            "enabled": ts.enabled,
            "next_run_at": _iso(ts.next_run_at) if ts.enabled and task.enabled else None,
        }
        for ts in task_schedules(task)
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- the clock -------------------------------------------------------------------


class Clock(threading.Thread):
    """Runs django-q2's scheduler and releases due delayed runs, every
    SCHEDULER_INTERVAL seconds, in a qcluster's main process; and checks the
    alerts (runs.notifications) every PROCESS_CHECK_INTERVAL."""

    def __init__(self, interval: float | None = None):
        super().__init__(name="taskrun-clock", daemon=True)
        self.interval = interval if interval is not None else settings.SCHEDULER_INTERVAL
        self.stopping = threading.Event()

    def run(self) -> None:
        from django_q.brokers import get_broker
        from django_q.scheduler import scheduler

        from runs import notifications

        broker = get_broker()
        next_alert_check = 0.0
        # Clusters started together should not all knock at once.
        self.stopping.wait(self.interval * random.uniform(0, 1))
        while not self.stopping.is_set():
            try:
                close_old_connections()
                scheduler(broker=broker)
                services.release_due_runs()
                if time.monotonic() >= next_alert_check:
                    next_alert_check = time.monotonic() + settings.PROCESS_CHECK_INTERVAL
                    notifications.check_alerts()
                    repair()
            except DatabaseError as exc:
                logger.warning("clock: database unreachable: %s", exc)
                try:
                    connection.close()
                except DatabaseError:
                    pass
            except Exception:
                logger.exception("clock: a pass failed")
            self.stopping.wait(self.interval)
        connection.close()

    def stop(self) -> None:
        self.stopping.set()
