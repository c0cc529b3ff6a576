"""Every change of a run's state happens here: views, API, admin, commands,
schedules and the executor are doors onto these functions."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from runs import rows
from runs.models import Run, RunEvent, Task

logger = logging.getLogger(__name__)

S = Run.Status
# Asked on every transition; Status.final() builds its list each time.
_FINAL = frozenset(S.final())


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
    alone: bool = False,
    known: Run | None = None,
    log_chunk: tuple[int, bytes] | None = None,
    **fields,
) -> bool:
    """Compare-and-set a run's state: change it to ``to`` only if it is still in
    one of ``allowed_from`` (and matches ``where``; with ``alone``, only if no
    other run of its task is running), and record the change. Returns whether
    this call made the change.

    ``known``: the caller's copy of the run; on a change it gets the new
    values, and what follows a run's end starts from it instead of reading
    the run again. ``log_chunk`` (offset, data): the last of its log, stored
    with the change (whether or not it is made)."""
    allowed_from = list(allowed_from)
    if len(allowed_from) > 1:
        # Which of several states it is in, read in the change's transaction.
        with transaction.atomic(savepoint=False):
            current = (
                Run.objects.filter(pk=run_id, status__in=allowed_from, **(where or {}))
                .values_list("status", flat=True)
                .first()
            )
            if current is None:
                return False
            return transition(
                run_id,
                to=to,
                allowed_from=[current],
                actor=actor,
                reason=reason,
                where=where,
                alone=alone,
                known=known,
                log_chunk=log_chunk,
                **fields,
            )
    # The update below is the compare-and-set.
    current = allowed_from[0]
    if to in _FINAL:
        # A run's reason says why it ended as it did.
        fields["reason"] = reason[:500]
    fields["status"] = to
    # The change and its event (and a log chunk) are one: one statement on
    # PostgreSQL, one transaction elsewhere (the caller's, if in one).
    changed = rows.update_run(
        run_id,
        fields,
        status=current,
        where=where,
        alone=alone,
        event=(actor[:200], reason[:500]),
        chunk=log_chunk,
        follows=to in _FINAL,
    )
    if changed:
        if known is not None:
            for name, value in fields.items():
                setattr(known, name, value)
        if to in _FINAL:
            # The next waiting run, retries, downstream tasks and
            # notifications; robust: the end itself is already recorded.
            # (Outside a transaction, now: the change is committed.)
            follows = changed.follows
            transaction.on_commit(lambda: after_run_end(run_id, known, follows), robust=True)
    return bool(changed)


def start_run(
    task: Task,
    *,
    trigger: str = Run.Trigger.MANUAL,
    user=None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    config: dict | None = None,
    attempt: int = 1,
    not_before: datetime | None = None,
    scheduled_for: datetime | None = None,
    schedule=None,
    retry_of: Run | None = None,
    upstream: Run | None = None,
) -> Run:
    """Queue a run of ``task``, or raise RunRefused (paused, script missing,
    or the task's overlap policy says no).

    The task row is locked (on SQLite the IMMEDIATE transaction holds the
    write lock), so concurrent starts are decided one after the other. The
    job reaches the broker only once the run row is committed, and only when
    no other run of the task has one: otherwise the run waits in line.

    With ``not_before`` in the future the run is delayed: it waits, outside
    the overlap policy, and is admitted like a new start at that time
    (``release_due_runs``)."""
    actor = _actor(user, trigger)
    delayed = not_before is not None and not_before > timezone.now()
    with transaction.atomic():
        locked = rows.read(Task, task.pk, for_update=True)
        if locked is None:
            raise Task.DoesNotExist(f"Task {task.pk} does not exist.")
        task = locked
        _check_startable(task)
        run = Run(
            task=task,
            trigger=trigger,
            triggered_by=user if user is not None and user.is_authenticated else None,
            args=list(task.args if args is None else args),
            env=dict(env or {}),
            config=config,
            attempt=attempt,
            not_before=not_before if delayed else None,
            scheduled_for=scheduled_for or not_before,
            schedule=schedule,
            retry_of=retry_of,
            upstream=upstream,
        )
        reason = f"started by {actor}"
        if delayed:
            reason += f", waiting until {not_before.isoformat(timespec='seconds')}"
        event = ("", S.QUEUED, actor[:200], reason[:500])
        # Nothing else of the task alive (most starts): the new run is the
        # next one, and gets its job without looking for others in line.
        # On PostgreSQL the insert asks that itself, in one statement.
        alone = False
        if not delayed and rows.one_statement():
            run.dispatched_at = timezone.now()
            alone = rows.insert_run_alone(run, event)
        if not alone:
            alone = not delayed and not _admit(task, actor=actor)
            run.dispatched_at = timezone.now() if alone else None
            rows.insert(run, event=event)
        if alone:
            transaction.on_commit(lambda: enqueue(run))
        elif not delayed and _dispatch_next(task) == run.pk:
            run.dispatched_at = timezone.now()
    return run


def record_skipped(task: Task, *, trigger: str, reason: str, user=None, **fields) -> Run:
    """Keep a trace of a start that was refused without anyone to tell (a
    schedule, a retry, an upstream task): a run that ended ``skipped``."""
    actor = _actor(user, trigger)
    now = timezone.now()
    run = Run.objects.create(
        task=task,
        trigger=trigger,
        status=S.SKIPPED,
        reason=reason[:500],
        args=list(task.args if fields.get("args") is None else fields["args"]),
        queued_at=now,
        finished_at=now,
        **{k: v for k, v in fields.items() if k != "args"},
    )
    RunEvent.objects.create(run=run, to_status=S.SKIPPED, actor=actor, reason=reason[:500])
    return run


def _check_startable(task: Task) -> None:
    if not task.enabled:
        raise RunRefused(f"Task '{task.name}' is paused; resume it to start runs.")
    if task.missing:
        raise RunRefused(f"The script of task '{task.name}' is missing.")


def _admit(task: Task, *, actor: str, exclude: int | None = None) -> bool:
    """Apply the task's overlap policy to one more start. Call with the task
    row locked. Raises RunRefused when the start must not happen; returns
    whether another run of the task was alive (the new one then waits)."""
    live = rows.live_runs(task.pk, exclude)
    if not live:
        return False
    head_id, head_status, _ = live[0]
    if task.overlap == Task.Overlap.QUEUE:
        waiting = sum(1 for _, status, undispatched in live if status == S.QUEUED and undispatched)
        if waiting < task.max_queued:
            return True
        raise RunRefused(
            f"Task '{task.name}' already has run #{head_id} {head_status} and "
            f"{waiting} waiting (at most {task.max_queued}).",
            run=Run.objects.filter(pk=head_id).first(),
        )
    if task.overlap == Task.Overlap.REPLACE:
        for other in Run.objects.filter(pk__in=[pk for pk, _, _ in live]):
            try:
                request_cancel(other, actor=actor, reason=f"replaced by a new run ({actor})")
            except RunNotActive:
                pass
        return True
    raise RunRefused(
        f"Task '{task.name}' already has run #{head_id} {head_status}.",
        run=Run.objects.filter(pk=head_id).first(),
    )


def _dispatch_next(task: Task) -> int | None:
    """Give the next waiting run of ``task`` its job, unless a run of it has
    one already (one run at a time). Call with the task row locked; returns
    the id of the run handed over."""
    if task.runs.filter(status__in=S.active(), dispatched_at__isnull=False).exists():
        return None
    run = (
        task.runs.filter(status=S.QUEUED, dispatched_at__isnull=True, not_before__isnull=True)
        .select_related("task")
        .order_by(Coalesce("scheduled_for", "queued_at"), "id")
        .first()
    )
    if run is None:
        return None
    Run.objects.filter(pk=run.pk).update(dispatched_at=timezone.now())
    transaction.on_commit(lambda: enqueue(run))
    return run.pk


def release_due_runs() -> int:
    """Admit delayed runs whose time has come, and give waiting runs their job
    when nothing of their task has one (say, after a crash between a run's
    end and its follow-up). The clock calls this every SCHEDULER_INTERVAL.
    Returns how many tasks it looked at."""
    now = timezone.now()
    task_ids = set(
        Run.objects.filter(status=S.QUEUED, dispatched_at__isnull=True)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .values_list("task_id", flat=True)
    )
    for task_id in task_ids:
        _release_task(task_id)
    return len(task_ids)


def _release_task(task_id: int) -> None:
    now = timezone.now()
    with transaction.atomic():
        task = Task.objects.select_for_update().filter(pk=task_id).first()
        if task is None:
            return
        due = task.runs.filter(
            status=S.QUEUED, dispatched_at__isnull=True, not_before__lte=now
        ).order_by("not_before", "id")
        for run in due:
            try:
                _check_startable(task)
                _admit(task, actor="clock", exclude=run.pk)
            except RunRefused as exc:
                transition(
                    run.pk,
                    to=S.SKIPPED,
                    allowed_from=[S.QUEUED],
                    actor="clock",
                    reason=f"at its start time: {exc}",
                    finished_at=now,
                )
                continue
            Run.objects.filter(pk=run.pk).update(not_before=None)
        _dispatch_next(task)


def after_run_end(
    run_id: int, run: Run | None = None, follows: tuple[bool, bool, bool] | None = None
) -> None:
    """What follows a run's end, after its commit: the next waiting run of the
    task, then a retry, or else the downstream tasks; then notifications.
    ``run``: the ended run as its supervisor knows it (spares a read);
    ``follows``: ``rows.what_follows`` as read with the end, if it was."""
    if run is None:
        run = Run.objects.select_related("task").filter(pk=run_id).first()
        if run is None:
            return
    # Most runs have no run waiting in line, no downstream task and no
    # webhook: one read says so. Nobody waiting spares a write transaction
    # (on SQLite the database's one write lock); a run queued after this
    # read finds this one ended and is dispatched by its start; one whose
    # start saw this run still running but committed after the read gets
    # its job from the clock (release_due_runs). On PostgreSQL the end's own
    # statement has read it, but with the snapshot it began with: a start
    # that queued a run behind this one meanwhile (a replacing start holds
    # this run's row until it commits) is not in it. It is good enough only
    # for a task whose runs never wait in line.
    if follows is None or run.task.overlap != Task.Overlap.SKIP:
        follows = rows.what_follows(run.task_id)
    waiting, downstream, webhooks = follows
    if waiting:
        with transaction.atomic():
            task = Task.objects.select_for_update().filter(pk=run.task_id).first()
            if task is not None:
                _dispatch_next(task)
    if run.status in (S.SKIPPED, S.CANCELLED):
        return
    retry = _retry(run)
    # The last attempt of a chain decides what follows; an attempt with a
    # retry behind it stays between the task and its history.
    final = retry is None or retry.status == S.SKIPPED
    if final and downstream:
        _start_downstream(run)
    from runs import notifications

    notifications.run_ended(run, final=final, webhooks=webhooks)


def retry_delay(task: Task, attempt: int) -> float:
    """Seconds to wait before retrying attempt number ``attempt``."""
    delay = task.retry_delay * task.retry_backoff ** (attempt - 1)
    return min(delay, task.retry_max_delay)


def _retry(run: Run) -> Run | None:
    """Start the next attempt when the task asks for one; returns it (or the
    skipped record of a refused retry)."""
    task = run.task
    if run.status not in (task.retry_on or []) or run.attempt > task.retry_count:
        return None
    not_before = (run.finished_at or timezone.now()) + timedelta(
        seconds=retry_delay(task, run.attempt)
    )
    common = {
        "args": run.args,
        "env": run.env,
        "config": run.config,
        "attempt": run.attempt + 1,
        "retry_of": run,
        "upstream": run.upstream,
    }
    try:
        return start_run(task, trigger=Run.Trigger.RETRY, not_before=not_before, **common)
    except RunRefused as exc:
        try:
            return record_skipped(
                task,
                trigger=Run.Trigger.RETRY,
                reason=f"retry refused: {exc}",
                scheduled_for=not_before,
                **common,
            )
        except IntegrityError:
            return None
    except IntegrityError:
        # retry_of is unique: this run has been retried already.
        return Run.objects.filter(retry_of=run).first()


def _start_downstream(run: Run) -> list[Run]:
    from runs import chains

    started = []
    for link in chains.links_to_follow(run):
        env = {
            "TASKRUN_UPSTREAM_RUN_ID": str(run.pk),
            "TASKRUN_UPSTREAM_TASK": run.task.name,
            "TASKRUN_UPSTREAM_STATUS": run.status,
            "TASKRUN_UPSTREAM_RESULT": json.dumps(run.result),
        }
        try:
            started.append(
                start_run(link.downstream, trigger=Run.Trigger.UPSTREAM, env=env, upstream=run)
            )
        except RunRefused as exc:
            started.append(
                record_skipped(
                    link.downstream,
                    trigger=Run.Trigger.UPSTREAM,
                    reason=str(exc),
                    env=env,
                    upstream=run,
                )
            )
    return started


_brokers: dict[int, object] = {}


def job_broker():
    """This process's django-q2 broker. ``async_task`` makes a new one for
    every job unless given one: on Redis that is a new connection pool and
    connection, with redis-py reading its own package metadata (about 1.5 ms
    of CPU a start). Made again after a fork; redis-py's pool and the ORM
    broker are safe to share between threads."""
    pid = os.getpid()
    found = _brokers.get(pid)
    if found is None:
        from django_q.brokers import get_broker

        _brokers.clear()
        found = _brokers[pid] = get_broker()
    return found


def enqueue(run: Run) -> None:
    """Hand the run to the broker (after commit). The job carries the run's
    id, which is how ``rescue_stranded_runs`` recognises it in the broker."""
    from django_q.tasks import async_task

    from runs.broker import run_jobs

    try:
        with run_jobs():  # Its row may commit unhurried: see broker._unhurried.
            async_task(
                "runs.executor.execute_run",
                run.pk,
                task_name=f"{run.task.name}#{run.pk}",
                group="taskrun",
                broker=job_broker(),
                # The run's row is the record; django-q2's Success row (and its
                # save_limit pruning, which locks every kept row) is a write per
                # run that nothing reads. A failed job is saved.
                save=False,
            )
    except Exception as exc:
        # The run is committed and stays queued: rescue_stranded_runs gives
        # it a job once the broker answers. The caller's start stands.
        logger.warning("run %s: could not hand it to the broker: %s", run.pk, exc)


def requeue(run_id: int) -> None:
    """Give a still-queued run a new job (its worker is shutting down)."""
    run = Run.objects.select_related("task").filter(pk=run_id, status=S.QUEUED).first()
    if run is not None:
        enqueue(run)


def rescue_stranded_runs() -> list[int]:
    """Give a new job to queued runs whose job went missing: handed to the
    broker more than a lease ago, still not claimed, and not waiting in the
    broker any more. That is a job taken by a cluster that died before it
    started it (the ORM broker would redeliver it only after ``retry``, a
    day; the Redis broker never), or one the broker never got. A second job
    for a run that is merely slow to start costs nothing: the claim is a
    compare-and-set, and the redundant job finds the run taken."""
    cutoff = timezone.now() - timedelta(seconds=settings.LEASE_SECONDS)
    stranded = list(
        Run.objects.filter(status=S.QUEUED, dispatched_at__lt=cutoff).values_list(
            "pk", "dispatched_at"
        )
    )
    if not stranded:
        return []
    try:
        waiting = _runs_waiting_in_broker()
    except Exception as exc:
        # A new job could not be handed over either; next time.
        logger.warning("rescuing queued runs: the broker does not answer: %s", exc)
        return []
    rescued = []
    for run_id, dispatched_at in stranded:
        if run_id in waiting:
            continue  # Not taken yet: every worker is busy, or none is up.
        # Only one housekeeper wins a run, and each may again a lease later.
        if not Run.objects.filter(pk=run_id, status=S.QUEUED, dispatched_at=dispatched_at).update(
            dispatched_at=timezone.now()
        ):
            continue
        run = Run.objects.select_related("task").get(pk=run_id)
        logger.warning("run %s: its job went missing; giving it a new one", run_id)
        enqueue(run)
        rescued.append(run_id)
    return rescued


def _runs_waiting_in_broker() -> set[int]:
    """Ids of the runs whose job waits in the broker, not taken by a cluster."""
    from django_q.conf import Conf
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    broker = job_broker()
    if Conf.ORM:
        rows = OrmQ.objects.using(Conf.ORM).filter(key=broker.list_key, lock__lte=timezone.now())
        jobs = [row.task for row in rows]
    elif Conf.REDIS:
        jobs = []
        for payload in broker.connection.lrange(broker.list_key, 0, -1):
            try:
                jobs.append(SignedPackage.loads(payload))
            except Exception:
                continue
    else:
        jobs = []
    return {
        job["args"][0]
        for job in jobs
        if job.get("func") == "runs.executor.execute_run" and job.get("args")
    }


def claim_run(run_id: int, worker: str) -> Run | None:
    """Take a queued run for this worker. Returns None when there is nothing to
    do: the run is not queued any more (a redelivered job), or it lost the race
    to another run of its task (it is then marked skipped).

    Every run goes through here, so it is a handful of statements: the claim
    is one conditional update (queued, and no other run of the task running),
    its event, and the read of the run for the supervisor; on PostgreSQL one
    statement (``rows.claim``)."""
    now = timezone.now()
    claim = {"started_at": now, "heartbeat_at": now, "worker": worker, "status": S.RUNNING}
    reason = f"claimed by {worker}"
    try:
        for _attempt in range(2):
            run = _claim(run_id, worker, claim, reason)
            if run is not None:
                return run
            row = Run.objects.filter(pk=run_id).values_list("task_id", "status").first()
            if row is None or row[1] != S.QUEUED:
                return None  # Redelivered, cancelled or gone: nothing to do.
            other = Run.objects.filter(task_id=row[0], status=S.RUNNING).exclude(pk=run_id).first()
            if other is not None:
                break
            # Queued, and nothing of its task running now: the run in the
            # way ended meanwhile (on PostgreSQL the claim's snapshot is
            # taken before it waits for the task's lock). Once more.
    except IntegrityError:
        # The partial unique index: another worker set a run of this task
        # running between our check and our write.
        other = None
    reason = (
        f"run #{other.pk} of this task was already running"
        if other is not None
        else "another run of this task was already running"
    )
    transition(
        run_id,
        to=S.SKIPPED,
        allowed_from=[S.QUEUED],
        actor=worker,
        reason=reason,
        finished_at=timezone.now(),
    )
    return None


def _claim(run_id: int, worker: str, claim: dict, reason: str) -> Run | None:
    """One claim: the run with its task if this worker got it, else None."""
    if rows.one_statement():
        return rows.claim(run_id, dict(claim), actor=worker, reason=reason)
    # On SQLite the change's own IMMEDIATE transaction holds the one write
    # lock; elsewhere the task is locked first, as start_run locks it,
    # joined to the run so that both rows are.
    locking = connection.features.has_select_for_update
    with transaction.atomic() if locking else contextlib.nullcontext():
        if locking:
            Task.objects.select_for_update().filter(runs__pk=run_id).values_list("pk").first()
        claimed = rows.update_run(
            run_id, dict(claim), status=S.QUEUED, alone=True, event=(worker[:200], reason[:500])
        )
    return rows.run_with_task(run_id) if claimed else None


def request_cancel(run: Run, user=None, actor: str = "", reason: str = "") -> Run:
    """Cancel a run: a queued one ends at once, a running one is stopped by its
    supervisor within a second or so. Raises RunNotActive if it has ended."""
    actor = actor or _actor(user, "")
    reason = reason or f"cancelled by {actor}"
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


def record_progress(
    run_id: int, worker: str, *, log_chunk: tuple[int, bytes] | None = None, **fields
) -> bool:
    """The supervisor's periodic write: heartbeat, progress, log size, and
    the new output (``log_chunk``: offset, data), stored together. False
    when this worker no longer holds the run (the lease was lost)."""
    fields["heartbeat_at"] = timezone.now()
    held = rows.update_run(
        run_id, fields, status=S.RUNNING, where={"worker": worker}, chunk=log_chunk
    )
    return bool(held)


def finish_run(
    run_id: int,
    worker: str,
    *,
    status: str,
    reason: str = "",
    known: Run | None = None,
    log_chunk: tuple[int, bytes] | None = None,
    **fields,
) -> bool:
    """The supervisor's last write, fenced: only the worker that holds the
    running run may end it; with the last of its output."""
    return transition(
        run_id,
        to=status,
        allowed_from=[S.RUNNING],
        where={"worker": worker},
        actor=worker,
        reason=reason,
        known=known,
        log_chunk=log_chunk,
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
            "pk", "heartbeat_at", "worker"
        )
    )
    reaped = []
    for run_id, heartbeat_at, worker in stale:
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
            logger.warning(
                "run %s lost: no heartbeat from %s since %s", run_id, worker, heartbeat_at
            )
            # (Its pid may not be written yet: the first write carries it.)
            if worker.rsplit(":", 1)[0] == settings.WORKER_HOST:
                process.kill_run_processes(run_id, worker)
    return reaped


def prune_runs(days: int) -> int:
    """Delete finished runs older than ``days`` days, with their logs."""
    cutoff = timezone.now() - timedelta(days=days)
    _, per_model = Run.objects.filter(status__in=S.final(), queued_at__lt=cutoff).delete()
    return per_model.get(Run._meta.label, 0)


def _actor(user, trigger: str) -> str:
    if user is not None and getattr(user, "is_authenticated", False):
        return user.get_username()
    return trigger or "system"
