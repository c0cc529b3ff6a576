"""Template helpers of the pages and the admin: revision history, durations."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.timesince import timesince

from runs.models import Task
from runs.revisions import RevisionChange, revision_history

register = template.Library()


@register.simple_tag
def task_revisions(task: Task, limit: int = 20) -> list[RevisionChange]:
    return revision_history(task, limit)


@register.filter
def duration(value: timedelta | float | None) -> str:
    """A short human duration: "850 ms", "12.4 s", "3 m 05 s", "2 h 07 m"."""
    if value is None or value == "":
        return "—"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


@register.filter
def pretty_json(value: object) -> str:
    """JSON for people: indented, non-ASCII kept as is (escaped by the template)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


@register.filter
def ago(value: datetime | None) -> str:
    """ "just now", "5 minutes ago", "2 days, 3 hours ago"."""
    if value is None:
        return "—"
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value)} ago"


@register.filter
def url_origin(value: str) -> str:
    """scheme://host/… of a URL: a webhook's path and query often carry its
    token (Slack, Teams), which only editors may see."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname or ''}{rest}"
