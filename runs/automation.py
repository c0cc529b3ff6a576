"""A task's automation settings as the API (and any other door) takes them:
schedules, overlap policy, retries and downstream tasks. Each parser checks
one field and says what is wrong with it; nothing is written until
``apply_fields`` (before the task is saved) and ``apply_related`` (after)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from runs import chains, schedules
from runs.models import Task, TaskLink, validate_retry_on

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


FIELDS: dict[str, Callable[[Any], Any]] = {
    "schedules": schedules.parse_schedules,
    "overlap": parse_overlap,
    "max_queued": parse_max_queued,
    "retry": parse_retry,
    "downstream": parse_downstream,
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
