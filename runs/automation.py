"""A task's automation settings as the API (and any other door) takes them:
schedules, overlap policy, retries and downstream tasks. Each parser checks
one field and says what is wrong with it; nothing is written until
``apply_fields`` (before the task is saved) and ``apply_related`` (after)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction

from runs import chains, schedules
from runs.models import Task, TaskLink, Webhook, validate_retry_on

MAX_QUEUED = 1000
MAX_RETRIES = 100
MAX_RETRY_SECONDS = 7 * 86400
RETRY_KEYS = {
    "count": "retry_count",
    "on": "retry_on",
    "delay": "retry_delay",
    "backoff": "retry_backoff",
    "max_delay": "retry_max_delay",
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_overlap(value: Any) -> str:
    if value not in Task.Overlap.values:
        raise ValidationError(f"overlap must be one of {', '.join(Task.Overlap.values)}.")
    return value


def parse_max_queued(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_QUEUED:
        raise ValidationError(f"max_queued must be an integer from 0 to {MAX_QUEUED}.")
    return value


def parse_retry(value: Any) -> dict[str, Any]:
    """``{"count", "on", "delay", "backoff", "max_delay"}``, any of them;
    those not named keep their value."""
    if not isinstance(value, dict):
        raise ValidationError(
            'retry must be an object like {"count": 3, "on": ["failed"], "delay": 10}.'
        )
    unknown = sorted(set(value) - set(RETRY_KEYS))
    if unknown:
        raise ValidationError(
            f"retry: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(RETRY_KEYS)})."
        )
    if "count" in value:
        count = value["count"]
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_RETRIES:
            raise ValidationError(f"retry.count must be an integer from 0 to {MAX_RETRIES}.")
    if "on" in value:
        try:
            validate_retry_on(value["on"])
        except ValidationError:
            raise ValidationError(
                'retry.on must be a list of "failed", "timed_out" and "lost".'
            ) from None
    for key in ("delay", "max_delay"):
        if key in value and not (_number(value[key]) and 0 <= value[key] <= MAX_RETRY_SECONDS):
            raise ValidationError(
                f"retry.{key} must be a number of seconds from 0 to {MAX_RETRY_SECONDS}."
            )
    if "backoff" in value and not (_number(value["backoff"]) and 1 <= value["backoff"] <= 100):
        raise ValidationError("retry.backoff must be a number from 1 to 100.")
    return value


def parse_downstream(value: Any) -> list[tuple[Task, str]]:
    """``[{"task": name, "on": "success"|"failure"|"any"}…]``."""
    if not isinstance(value, list):
        raise ValidationError('downstream must be a list of {"task": name, "on": "success"}.')
    links = []
    for i, item in enumerate(value):
        where = f"downstream[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("task"), str):
            raise ValidationError(f'{where} must be an object like {{"task": "load"}}.')
        unknown = sorted(set(item) - {"task", "on"})
        if unknown:
            raise ValidationError(f"{where}: unknown field(s) {', '.join(unknown)}.")
        on = item.get("on", TaskLink.On.SUCCESS)
        if on not in TaskLink.On.values:
            raise ValidationError(f"{where}.on must be one of {', '.join(TaskLink.On.values)}.")
        target = Task.objects.filter(name=item["task"]).first()
        if target is None:
            raise ValidationError(f"{where}.task: no task named '{item['task']}'.")
        links.append((target, on))
    return links


NOTIFY_FLAGS = {
    "on_failure": "email_on_failure",
    "on_success": "email_on_success",
    "on_recovery": "email_on_recovery",
}
WEBHOOK_FLAGS = ["on_failure", "on_success", "on_recovery", "on_alert", "enabled"]


def _flags(where: str, value: dict[str, Any], names: list[str]) -> None:
    for name in names:
        if name in value and not isinstance(value[name], bool):
            raise ValidationError(f"{where}.{name} must be true or false.")


def parse_notify(value: Any) -> dict[str, Any]:
    """``{"emails": [address…], "on_failure", "on_success", "on_recovery"}``,
    any of them; those not named keep their value."""
    if not isinstance(value, dict):
        raise ValidationError('notify must be an object like {"emails": ["ops@example.com"]}.')
    unknown = sorted(set(value) - {"emails", *NOTIFY_FLAGS})
    if unknown:
        raise ValidationError(f"notify: unknown field(s) {', '.join(unknown)}.")
    _flags("notify", value, list(NOTIFY_FLAGS))
    if "emails" in value:
        emails = value["emails"]
        if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails):
            raise ValidationError("notify.emails must be a list of addresses.")
        for address in emails:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"notify.emails: '{address}' is not an address.") from None
    return value


def parse_alerts(value: Any) -> dict[str, Any]:
    """``{"not_succeeded_in": seconds|null, "slow_factor": number|null}``."""
    if not isinstance(value, dict):
        raise ValidationError('alerts must be an object like {"not_succeeded_in": 86400}.')
    unknown = sorted(set(value) - {"not_succeeded_in", "slow_factor"})
    if unknown:
        raise ValidationError(f"alerts: unknown field(s) {', '.join(unknown)}.")
    after = value.get("not_succeeded_in")
    if after is not None and not (
        isinstance(after, int) and not isinstance(after, bool) and 1 <= after <= 2**31 - 1
    ):
        raise ValidationError("alerts.not_succeeded_in must be a number of seconds, or null.")
    factor = value.get("slow_factor")
    if factor is not None and not (_number(factor) and 1 <= factor <= 1000):
        raise ValidationError("alerts.slow_factor must be a number from 1 to 1000, or null.")
    return value


def parse_webhooks(value: Any) -> list[dict[str, Any]]:
    """``[{"url", "secret"?, "on_failure"?, "on_success"?, "on_recovery"?,
    "on_alert"?, "enabled"?}…]``; a webhook listed again by its URL keeps
    its secret unless a new one is given."""
    if not isinstance(value, list):
        raise ValidationError('webhooks must be a list of {"url": "https://…"}.')
    seen = set()
    for i, item in enumerate(value):
        where = f"webhooks[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ValidationError(f'{where} must be an object like {{"url": "https://…"}}.')
        unknown = sorted(set(item) - {"url", "secret", *WEBHOOK_FLAGS})
        if unknown:
            raise ValidationError(f"{where}: unknown field(s) {', '.join(unknown)}.")
        try:
            URLValidator(schemes=["http", "https"])(item["url"])
        except ValidationError:
            raise ValidationError(f"{where}.url: '{item['url']}' is not an http(s) URL.") from None
        if len(item["url"]) > 500:
            raise ValidationError(f"{where}.url is longer than 500 characters.")
        if item["url"] in seen:
            raise ValidationError(f"{where}.url is listed twice.")
        seen.add(item["url"])
        secret = item.get("secret")
        if secret is not None and not (isinstance(secret, str) and 16 <= len(secret) <= 128):
            raise ValidationError(f"{where}.secret must be a string of 16 to 128 characters.")
        _flags(where, item, WEBHOOK_FLAGS)
    return value


FIELDS: dict[str, Callable[[Any], Any]] = {
    "schedules": schedules.parse_schedules,
    "overlap": parse_overlap,
    "max_queued": parse_max_queued,
    "retry": parse_retry,
    "downstream": parse_downstream,
    "notify": parse_notify,
    "alerts": parse_alerts,
    "webhooks": parse_webhooks,
}


def check(task: Task, body: dict[str, Any]) -> None:
    """What needs the saved task: a new downstream list must not close a loop."""
    if "downstream" in body and task.pk:
        try:
            chains.check_links(task, body["downstream"])
        except ValidationError as exc:
            raise ValidationError(f"downstream: {' '.join(exc.messages)}") from None


def apply_fields(task: Task, body: dict[str, Any]) -> None:
    """Set the task's own columns (before it is saved)."""
    for name in ("overlap", "max_queued"):
        if name in body:
            setattr(task, name, body[name])
    for key, value in body.get("retry", {}).items():
        setattr(task, RETRY_KEYS[key], value)
    notify = body.get("notify", {})
    for key, value in notify.items():
        if key == "emails":
            task.notify_emails = ", ".join(value)
        else:
            setattr(task, NOTIFY_FLAGS[key], value)
    alerts = body.get("alerts", {})
    if "not_succeeded_in" in alerts:
        task.alert_after = alerts["not_succeeded_in"]
    if "slow_factor" in alerts:
        task.slow_factor = alerts["slow_factor"]


def apply_related(task: Task, body: dict[str, Any]) -> None:
    """Replace the schedules and downstream links named in ``body`` (after
    the task is saved, in the caller's transaction)."""
    with transaction.atomic():
        if "schedules" in body:
            schedules.replace_schedules(task, body["schedules"])
        if "downstream" in body:
            task.downstream_links.all().delete()
            TaskLink.objects.bulk_create(
                TaskLink(upstream=task, downstream=target, on=on)
                for target, on in body["downstream"]
            )
        if "webhooks" in body:
            _replace_webhooks(task, body["webhooks"])


def _replace_webhooks(task: Task, items: list[dict[str, Any]]) -> None:
    current = {w.url: w for w in task.webhooks.all()}
    task.webhooks.exclude(url__in=[item["url"] for item in items]).delete()
    for item in items:
        webhook = current.get(item["url"]) or Webhook(task=task, url=item["url"])
        if item.get("secret"):
            webhook.secret = item["secret"]
        for flag in WEBHOOK_FLAGS:
            if flag in item:
                setattr(webhook, flag, item[flag])
        webhook.save()


def notifications_json(task: Task) -> dict[str, Any]:
    """The task object's notification settings; webhook secrets are never shown."""
    from runs.notifications import recipients

    return {
        "notify": {
            "emails": recipients(task),
            **{key: getattr(task, column) for key, column in NOTIFY_FLAGS.items()},
        },
        "alerts": {"not_succeeded_in": task.alert_after, "slow_factor": task.slow_factor},
        "webhooks": [
            {"url": w.url, **{flag: getattr(w, flag) for flag in WEBHOOK_FLAGS}}
            for w in task.webhooks.all()
        ],
    }
