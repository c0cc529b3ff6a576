"""Every change of a run's state happens here: views, API, admin, commands,
schedules and the executor are doors onto these functions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from runs.models import Run, RunEvent, Task

logger = logging.getLogger(__name__)

S = Run.Status


class RunRefused(Exception):
    """A start was refused; ``run`` is the run in the way, if any."""

    def __init__(self, message: str, run: Run | None = None):
        super().__init__(message)
        self.run = run


class RunNotActive(Exception):
    """The run has already finished."""


def transition(
    run_id: int,
    *,
    to: str,
    allowed_from: Iterable[str],
    actor: str = "",
    reason: str = "",
    where: dict | None = None,
    **fields,
) -> bool:
    """Compare-and-set a run's state: change it to ``to`` only if it is still in
    one of ``allowed_from`` (and matches ``where``), and record the change.
    Returns whether this call made the change."""
    allowed_from = list(allowed_from)
    with transaction.atomic():
        current = (
            Run.objects.filter(pk=run_id, status__in=allowed_from, **(where or {}))
            .values_list("status", flat=True)
            .first()
        )
        if current is None:
            return False
        if to in S.final():
            # A run's reason says why it ended as it did.
            fields["reason"] = reason[:500]
        changed = (
            Run.objects.filter(pk=run_id, status=current, **(where or {})).update(
                status=to, **fields
            )
            == 1
        )
        if changed:
            RunEvent.objects.create(
                run_id=run_id,
                from_status=current,
                to_status=to,
                actor=actor[:200],
                reason=reason[:500],
            )
    return changed


def start_run(
    task: Task,
    *,
    trigger: str = Run.Trigger.MANUAL,
    user=None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    config: dict | None = None,
    attempt: int = 1,
) -> Run:
    """Queue a run of ``task``, or raise RunRefused while it has a live run.

    The task row is locked (on SQLite the IMMEDIATE transaction holds the
    write lock), so concurrent starts are decided one after the other. The
    job reaches the broker only once the run row is committed."""
    actor = _actor(user, trigger)
    with transaction.atomic():
        task = Task.objects.select_for_update().get(pk=task.pk)
        if not task.enabled:
            raise RunRefused(f"Task '{task.name}' is paused.")
        if task.missing:
            raise RunRefused(f"The script of task '{task.name}' is missing.")
        active = task.active_run()
        if active is not None:
            raise RunRefused(
                f"Task '{task.name}' already has run #{active.pk} {active.status}.",
                run=active,
            )
        run = Run.objects.create(
            task=task,
            trigger=trigger,
            triggered_by=user if user is not None and user.is_authenticated else None,
            args=list(task.args if args is None else args),
            env=dict(env or {}),
            config=config,
            attempt=attempt,
        )
        RunEvent.objects.create(
            run=run, to_status=S.QUEUED, actor=actor, reason=f"started by {actor}"
        )
        transaction.on_commit(lambda: enqueue(run))
    return run


def enqueue(run: Run) -> None:
    """Hand the run to the broker (after commit)."""
    from django_q.tasks import async_task

    job_id = async_task(
        "runs.executor.execute_run",
        run.pk,
        task_name=f"{run.task.name}#{run.pk}",
        group="taskrun",
    )
    Run.objects.filter(pk=run.pk).update(job_id=str(job_id or ""))


def requeue(run_id: int) -> None:
    """Give a still-queued run a new job (its worker is shutting down)."""
    run = Run.objects.select_related("task").filter(pk=run_id, status=S.QUEUED).first()
    if run is not None:
        enqueue(run)


def claim_run(run_id: int, worker: str) -> Run | None:
    """Take a queued run for this worker. Returns None when there is nothing to
    do: the run is not queued any more (a redelivered job), or it lost the race
    to another run of its task (it is then marked skipped)."""
    try:
        with transaction.atomic():
            run = Run.objects.select_related("task").filter(pk=run_id).first()
            if run is None or run.status != S.QUEUED:
                return None
            Task.objects.select_for_update().filter(pk=run.task_id).first()
            run = Run.objects.select_for_update().select_related("task").get(pk=run_id)
            if run.status != S.QUEUED:
                return None
            other = (
                Run.objects.filter(task_id=run.task_id, status=S.RUNNING)
                .exclude(pk=run_id)
                .first()
            )
            if other is None:
                now = timezone.now()
                if transition(
                    run_id,
                    to=S.RUNNING,
                    allowed_from=[S.QUEUED],
                    actor=worker,
                    reason=f"claimed by {worker}",
                    started_at=now,
                    heartbeat_at=now,
                    worker=worker,
                ):
                    run.refresh_from_db()
                    return run
                return None
    except IntegrityError:
        # The partial unique index: another worker set a run of this task
        # running between our check and our write.
        other = None
    reason = (
        f"run #{other.pk} of this task was already running"
        if other is not None
        else "another run of this task was already running"
    )
    transition(run_id, to=S.SKIPPED, allowed_from=[S.QUEUED], actor=worker,
               reason=reason, finished_at=timezone.now())
    return None


def request_cancel(run: Run, user=None, actor: str = "") -> Run:
    """Cancel a run: a queued one ends at once, a running one is stopped by its
    supervisor within a second or so. Raises RunNotActive if it has ended."""
    actor = actor or _actor(user, "")
    reason = f"cancelled by {actor}"
    if transition(
        run.pk,
        to=S.CANCELLED,
        allowed_from=[S.QUEUED],
        actor=actor,
        reason=reason,
        finished_at=timezone.now(),
    ):
        run.refresh_from_db()
        return run
    updated = Run.objects.filter(pk=run.pk, status=S.RUNNING).update(
        cancel_requested=True, cancel_reason=reason[:200]
    )
    run.refresh_from_db()
    if not updated and not run.is_active:
        raise RunNotActive(f"Run #{run.pk} has already ended ({run.status}).")
    return run


def record_progress(run_id: int, worker: str, **fields) -> bool:
    """The supervisor's periodic write: heartbeat, progress, log size. False
    when this worker no longer holds the run (the lease was lost)."""
    return (
        Run.objects.filter(pk=run_id, status=S.RUNNING, worker=worker).update(
            heartbeat_at=timezone.now(), **fields
        )
        == 1
    )


def finish_run(run_id: int, worker: str, *, status: str, reason: str = "", **fields) -> bool:
    """The supervisor's last write, fenced: only the worker that holds the
    running run may end it."""
    return transition(
        run_id,
        to=status,
        allowed_from=[S.RUNNING],
        where={"worker": worker},
        actor=worker,
        reason=reason,
        finished_at=timezone.now(),
        **fields,
    )


def reap_lost_runs(*, actor: str = "reaper") -> list[int]:
    """Mark running runs whose heartbeat is older than the lease as lost, and
    stop what is left of their processes when they ran on this host."""
    from runs import process

    cutoff = timezone.now() - timedelta(seconds=settings.LEASE_SECONDS)
    stale = list(
        Run.objects.filter(status=S.RUNNING, heartbeat_at__lt=cutoff).values_list(
            "pk", "heartbeat_at", "worker", "pid"
        )
    )
    reaped = []
    for run_id, heartbeat_at, worker, pid in stale:
        if transition(
            run_id,
            to=S.LOST,
            allowed_from=[S.RUNNING],
            where={"heartbeat_at": heartbeat_at},
            actor=actor,
            reason="lease expired",
            finished_at=timezone.now(),
        ):
            reaped.append(run_id)
            logger.warning("run %s lost: no heartbeat from %s since %s", run_id, worker, heartbeat_at)
            if pid and worker.rsplit(":", 1)[0] == settings.WORKER_HOST:
                process.kill_run_processes(run_id)
    return reaped


def prune_runs(days: int) -> int:
    """Delete finished runs older than ``days`` days, with their logs."""
    cutoff = timezone.now() - timedelta(days=days)
    _, per_model = Run.objects.filter(
        status__in=S.final(), queued_at__lt=cutoff
    ).delete()
    return per_model.get(Run._meta.label, 0)


def _actor(user, trigger: str) -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return user.get_username()
    return trigger or "system"
