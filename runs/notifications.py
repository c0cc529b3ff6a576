"""Telling people about runs: email and signed webhooks when a run fails,
succeeds or recovers, and the alerts a run log cannot give — a task that has
not succeeded for too long (dead-man switch) and a run that takes far longer
than usual.

A chain of attempts notifies once, at its end (services.after_run_end calls
``run_ended`` with ``final``). Each channel gets one message per run:
"recovery" (the first success after a failure) also counts as a success.
Emails go out at once; webhooks are django-q2 jobs, tried again with backoff
through one-off django-q2 schedules, every attempt recorded."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import statistics
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from runs import vault
from runs.models import Alert, Run, Task, Webhook, WebhookDelivery

logger = logging.getLogger(__name__)

S = Run.Status
OUTCOMES = [S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.LOST]
FAILURES = {S.FAILED, S.TIMED_OUT, S.LOST}
# The median of this many recent successful runs is "usual"; fewer than
# MIN_SAMPLES say nothing yet.
RECENT_RUNS = 10
MIN_SAMPLES = 3
LOG_TAIL_BYTES = 2048


# --- what happened ---------------------------------------------------------------


def run_ended(run: Run, *, final: bool, webhooks: bool | None = None) -> None:
    """After a run's end (not skipped or cancelled ones). ``webhooks``: whether
    the task has an enabled webhook, when the caller already knows."""
    if run.status == S.SUCCEEDED or run.status in FAILURES:
        check_slow_run(run)
    if not final or not _anyone_listens(run.task, webhooks):
        return
    event = outcome_event(run)
    if event is not None:
        notify(run.task, event, run=run, message=describe(run, event))


def _anyone_listens(task: Task, webhooks: bool | None = None) -> bool:
    """Whether an outcome of ``task`` could be sent anywhere: most tasks have
    no recipient and no webhook, and their runs need not work out whether
    they ended a failure streak."""
    if recipients(task) and (
        task.email_on_failure or task.email_on_success or task.email_on_recovery
    ):
        return True
    if webhooks is not None:
        return webhooks
    return task.webhooks.filter(enabled=True).exists()


def outcome_event(run: Run) -> str | None:
    if run.status in FAILURES:
        return "failure"
    if run.status != S.SUCCEEDED:
        return None
    before = previous_outcome(run)
    return "recovery" if before is not None and before != S.SUCCEEDED else "success"


def previous_outcome(run: Run) -> str | None:
    """How the task's chain of attempts before this run's chain ended."""
    first = run
    while first.retry_of_id is not None:
        first = Run.objects.only("id", "retry_of_id").get(pk=first.retry_of_id)
    return (
        Run.objects.filter(task_id=run.task_id, id__lt=first.pk, status__in=OUTCOMES)
        # Only the last attempt of each chain: one with no retry behind it.
        .filter(Q(retry__isnull=True) | Q(retry__status=S.SKIPPED))
        .order_by("-id")
        .values_list("status", flat=True)
        .first()
    )


def describe(run: Run, event: str) -> str:
    name = run.task.name
    if event == "recovery":
        return f"Task '{name}' recovered: run #{run.pk} succeeded after a failure."
    if event == "success":
        return f"Task '{name}': run #{run.pk} succeeded."
    attempts = f" after {run.attempt} attempts" if run.attempt > 1 else ""
    why = f" ({run.reason})" if run.reason else ""
    return f"Task '{name}': run #{run.pk} {run.status.replace('_', ' ')}{attempts}{why}."


def _wants(event: str, *, failure: bool, success: bool, recovery: bool, alert: bool) -> bool:
    return {
        "failure": failure,
        "success": success,
        "recovery": recovery or success,
        "alert": alert,
    }[event]


def notify(task: Task, event: str, *, run: Run | None = None, message: str) -> None:
    """Send ``event`` to the task's email recipients and webhooks that want it."""
    if _wants(
        event,
        failure=task.email_on_failure,
        success=task.email_on_success,
        recovery=task.email_on_recovery,
        alert=True,
    ):
        send_email(task, event, run=run, message=message)
    from django_q.tasks import async_task

    from runs.services import job_broker

    for webhook in task.webhooks.filter(enabled=True):
        if _wants(
            event,
            failure=webhook.on_failure,
            success=webhook.on_success,
            recovery=webhook.on_recovery,
            alert=webhook.on_alert,
        ):
            async_task(
                "runs.notifications.deliver",
                webhook.pk,
                event,
                run.pk if run else None,
                message,
                1,
                task_name=f"webhook {webhook.pk} {event}",
                group="taskrun-notify",
                broker=job_broker(),
            )


# --- email --------------------------------------------------------------------------


def recipients(task: Task) -> list[str]:
    return [a.strip() for a in task.notify_emails.replace("\n", ",").split(",") if a.strip()]


def send_email(task: Task, event: str, *, run: Run | None, message: str) -> bool:
    to = recipients(task)
    if not to:
        return False
    lines = [message, ""]
    if run is not None:
        lines += [
            f"Run:      {settings.SITE_URL}/runs/{run.pk}/",
            f"Status:   {run.status}",
            f"Attempt:  {run.attempt}",
            f"Started:  {run.started_at or '-'}",
            f"Finished: {run.finished_at or '-'}",
        ]
        if event == "failure":
            start = max(0, run.log_size - LOG_TAIL_BYTES)
            tail = run.read_log(start).decode("utf-8", "replace")
            lines += ["", "The end of its log:", "", tail]
    subject = f"[taskrun] {message}"
    masker = vault.masker_for(task)
    try:
        send_mail(
            masker.mask(subject[:200]),
            masker.mask("\n".join(lines)),
            settings.DEFAULT_FROM_EMAIL,
            to,
        )
    except Exception:  # A mail server that is down must not break the run's end.
        logger.exception("could not email %s about task %s", ", ".join(to), task.name)
        return False
    return True


# --- webhooks -----------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would turn the POST into a GET without the body: report it.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def signature(secret: str, body: bytes) -> str:
    """The X-Taskrun-Signature header: HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(webhook: Webhook, event: str, run: Run | None, message: str) -> bytes:
    from runs.serializers import run_json

    body = {
        "event": event,
        "task": webhook.task.name,
        "message": message,
        "run": run_json(run) if run is not None else None,
        "url": f"{settings.SITE_URL}/runs/{run.pk}/" if run is not None else None,
    }
    # A secret's value never leaves taskrun, not even in what a run returned.
    return json.dumps(vault.masker_for(webhook.task).mask_json(body)).encode()


def deliver(webhook_id: int, event: str, run_id: int | None, message: str, attempt: int = 1) -> str:
    """One delivery attempt (a django-q2 job); on failure the next attempt is
    scheduled after WEBHOOK_RETRY_SECONDS × 2^(attempt-1)."""
    webhook = Webhook.objects.select_related("task").filter(pk=webhook_id).first()
    if webhook is None:
        return "webhook deleted"
    run = Run.objects.select_related("task").filter(pk=run_id).first() if run_id else None
    body = payload(webhook, event, run, message)
    request = urllib.request.Request(
        webhook.url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "taskrun-webhook",
            "X-Taskrun-Event": event,
            "X-Taskrun-Attempt": str(attempt),
            "X-Taskrun-Signature": signature(webhook.secret, body),
        },
    )
    code, error = None, ""
    started = time.monotonic()
    try:
        with _opener.open(request, timeout=settings.WEBHOOK_TIMEOUT) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError, ValueError) as exc:
        error = str(getattr(exc, "reason", None) or exc)[:500] or exc.__class__.__name__
    delivery = WebhookDelivery.objects.create(
        webhook=webhook,
        run=run,
        event=event,
        attempt=attempt,
        status_code=code,
        error=error,
        duration_ms=int((time.monotonic() - started) * 1000),
    )
    if delivery.ok:
        return f"delivered: {code}"
    if attempt >= settings.WEBHOOK_ATTEMPTS:
        logger.warning("webhook %s: giving up on %s after %s attempts", webhook.url, event, attempt)
        return f"gave up: {code or error}"
    _retry_later(webhook_id, event, run_id, message, attempt + 1)
    return f"failed: {code or error}; attempt {attempt + 1} scheduled"


def retry_delay(attempt: int) -> float:
    """Seconds before attempt number ``attempt`` (2, 3, …)."""
    return settings.WEBHOOK_RETRY_SECONDS * 2 ** (attempt - 2)


def _retry_later(webhook_id: int, event: str, run_id: int | None, message: str, attempt: int):
    from django_q.models import Schedule

    Schedule.objects.create(
        name=f"webhook {webhook_id} {event} attempt {attempt}"[:100],
        func="runs.notifications.deliver",
        args=repr((webhook_id, event, run_id, message, attempt)),
        schedule_type=Schedule.ONCE,
        repeats=-1,  # deleted once it has fired
        next_run=timezone.now() + timedelta(seconds=retry_delay(attempt)),
    )


# --- alerts ---------------------------------------------------------------------------


def check_alerts(now: datetime | None = None) -> list[Alert]:
    """The periodic pass (the clock runs it): dead-man switches, and running
    runs that already take far longer than usual."""
    now = now or timezone.now()
    raised = []
    tasks = Task.objects.filter(enabled=True, alert_after__isnull=False).annotate(
        last_success=Max("runs__finished_at", filter=Q(runs__status=S.SUCCEEDED))
    )
    for task in tasks:
        since = task.last_success or task.created_at
        if now - since <= timedelta(seconds=task.alert_after):
            continue
        message = (
            f"Task '{task.name}' has not succeeded in {_span(now - since)} "
            f"(alert after {_span(timedelta(seconds=task.alert_after))})."
        )
        alert = _raise(task, Alert.Kind.NOT_SUCCEEDED, f"{task.pk}:{since.isoformat()}", message)
        if alert is not None:
            raised.append(alert)
    running = Run.objects.filter(
        status=S.RUNNING, task__slow_factor__isnull=False, started_at__isnull=False
    ).select_related("task")
    for run in running:
        alert = check_slow_run(run, now=now)
        if alert is not None:
            raised.append(alert)
    return raised


def usual_duration(task: Task, *, before: int | None = None) -> float | None:
    """The median duration of the task's recent successful runs, seconds."""
    runs = task.runs.filter(status=S.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False)
    if before is not None:
        runs = runs.filter(pk__lt=before)
    spans = [
        (end - start).total_seconds()
        for start, end in runs.order_by("-id").values_list("started_at", "finished_at")[
            :RECENT_RUNS
        ]
    ]
    return statistics.median(spans) if len(spans) >= MIN_SAMPLES else None


def check_slow_run(run: Run, now: datetime | None = None) -> Alert | None:
    task = run.task
    if task.slow_factor is None or run.started_at is None:
        return None
    usual = usual_duration(task, before=run.pk)
    if usual is None:
        return None
    took = ((run.finished_at or now or timezone.now()) - run.started_at).total_seconds()
    if took <= task.slow_factor * usual:
        return None
    verb = "is taking" if run.status == S.RUNNING else "took"
    message = (
        f"Task '{task.name}': run #{run.pk} {verb} {_span(timedelta(seconds=took))}, "
        f"more than {task.slow_factor:g} times its usual {_span(timedelta(seconds=usual))}."
    )
    return _raise(task, Alert.Kind.SLOW, str(run.pk), message, run=run)


def _raise(task: Task, kind: str, key: str, message: str, run: Run | None = None) -> Alert | None:
    """Record the alert once (several clusters may notice it together), then
    send it."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                task=task, run=run, kind=kind, key=f"{kind}:{key}", message=message[:500]
            )
    except IntegrityError:
        return None
    logger.warning("alert: %s", message)
    notify(task, "alert", run=run, message=message)
    return alert


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
