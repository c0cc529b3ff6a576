"""Template helpers of the pages and the admin: revision history, durations."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

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
    return _ago(value)


def _ago(value: datetime | None, time_strings: dict | None = None) -> str:
    if value is None:
        return "—"
    if (timezone.now() - value).total_seconds() < 60:
        return "just now"
    return f"{timesince(value, time_strings=time_strings)} ago"


class _Translated:
    """One unit of timesince's TIME_STRINGS ("%(num)d day(s)"), each count
    translated once: a table of 50 runs asks for the same few."""

    def __init__(self, lazy: Any) -> None:
        self.lazy = lazy
        self.done: dict[int, str] = {}

    def __mod__(self, params: dict[str, int]) -> str:
        num = params["num"]
        text = self.done.get(num)
        if text is None:
            text = self.done[num] = self.lazy % params
        return text


def _time_strings() -> dict[str, _Translated]:
    from django.utils.timesince import TIME_STRINGS

    return {unit: _Translated(lazy) for unit, lazy in TIME_STRINGS.items()}


@register.filter
def url_origin(value: str) -> str:
    """scheme://host/… of a URL: a webhook's path and query often carry its
    token (Slack, Teams), which only editors may see."""
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{parts.hostname or ''}{rest}"


def _url_maker(name: str):
    """A function id-or-name → path for the URL ``name``, reversing it once:
    a page of runs needs two URLs a row."""
    from django.urls import reverse

    head, tail = reverse(name, args=[_MARK]).split(_MARK)
    return lambda value: f"{head}{value}{tail}"


_MARK = "7301946285"


@register.simple_tag
def run_rows(runs: list, hide_task: bool = False) -> str:
    """The rows of a table of runs (runs/_run_table.html) read through
    runs.views.table_runs, written in Python: a page shows 50 of them, and
    the same row in the template language (variables, {% url %},
    {% include %}, |date) cost about 0.3 ms, a row here a tenth of that
    (issue 11, P5). The state badge and the delayed-start tag still come from
    their templates, rendered once per state."""
    from html import escape  # Django's escape, without its lazy-string wrapper
    from urllib.parse import quote

    from django.template.loader import get_template
    from django.utils.safestring import mark_safe

    from runs.models import Run

    detail = _url_maker("runs:detail")
    task_url = _url_maker("runs:task")
    # (get_FOO_display builds the choices' dict on every call.)
    triggers = dict(Run.Trigger.choices)
    badges: dict[str, str] = {}
    units = _time_strings()
    rows = []
    for run in runs:
        badge = badges.get(run.status)
        if badge is None:
            badge = get_template("runs/_status.html").render({"run": run})
            badges[run.status] = badge
        state = badge
        if run.status == Run.Status.RUNNING and run.progress is not None:
            state += f' <span class="muted small">{run.progress}%</span>'
        if run.not_before and run.status == Run.Status.QUEUED:
            state += " " + get_template("runs/_waits.html").render({"run": run, "short": True})
        trigger = escape(str(triggers.get(run.trigger, run.trigger)))
        if run.triggered_by_id:
            trigger += f' <span class="muted">by {escape(run.triggered_by_name)}</span>'
        if run.attempt > 1:
            trigger += f' <span class="tag">attempt {run.attempt}</span>'
        task = ""
        if not hide_task:
            name = run.task_name
            task = f'<td><a href="{escape(task_url(quote(name)))}">{escape(name)}</a></td>'
        queued = timezone.localtime(run.queued_at)
        rows.append(
            f'<tr data-run="{run.pk}"><td><a href="{detail(run.pk)}">#{run.pk}</a></td>{task}'
            f"<td>{state}</td><td>{trigger}</td>"
            f'<td title="{escape(_ago(queued, units))}">{queued:%Y-%m-%d %H:%M:%S}</td>'
            f"<td>{escape(duration(run.duration))}</td>"
            f"<td>{'—' if run.exit_code is None else int(run.exit_code)}</td></tr>\n"
        )
    return mark_safe("".join(rows))
