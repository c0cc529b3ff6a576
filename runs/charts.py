"""The SVG charts of the pages, computed on the server: runs per hour on the
dashboard and spark lines of run durations on the task list. Templates only
draw the geometry these return."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Count, Func
from django.db.models.functions import Lower, Substr, TruncHour
from django.utils import timezone

from runs.models import Run

S = Run.Status
FAILED_STATES = [S.FAILED, S.TIMED_OUT, S.LOST]


@dataclass
class HourBar:
    """One bar of the runs-per-hour chart, with its SVG geometry."""

    hour: datetime
    counts: dict[str, int]
    total: int
    x: float
    segments: list[dict[str, Any]]
    title: str


CHART_GROUPS = [
    # (CSS class, states, label) from the bottom of a bar up.
    ("ok", [S.SUCCEEDED], "succeeded"),
    ("bad", FAILED_STATES, "failed"),
    ("other", [S.CANCELLED, S.SKIPPED], "cancelled or skipped"),
    ("live", S.active(), "queued or running"),
]
CHART_HEIGHT = 120
CHART_BAR = 24  # width of one hour, including the gap


# Group runs by this, not by the bare column: to skip a sort, SQLite would
# walk the whole (status, -id) index rather than the few rows of a time range
# (it keeps no statistics on ranges), seconds with a million runs. Over an
# expression it takes the queued_at range. States are lower case already.
STATUS_GROUP = Lower("status")


def _hour_of_queued() -> Func:
    """The UTC hour a run was queued in, grouped by in the database."""
    if connection.vendor == "sqlite":
        # SQLite stores an aware time as UTC text, "YYYY-MM-DD HH:MM:SS…":
        # its first 13 characters are the hour. TruncHour calls a Python
        # function there for every row (5 ms for a day of 1,000 runs).
        return Substr("queued_at", 1, 13)
    return TruncHour("queued_at", tzinfo=UTC)


def _as_hour(value: datetime | str) -> datetime:
    if isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=UTC)
    return value


def hourly_chart(now: datetime, hours: int = 24) -> dict[str, Any]:
    """Runs per hour over the last ``hours`` hours, stacked by outcome."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    rows = (
        Run.objects.filter(queued_at__gte=start)
        # Hours of UTC, like the slots below, whatever TIME_ZONE is (some
        # zones are off UTC by half an hour); labels show local time.
        .annotate(hour=_hour_of_queued(), state=STATUS_GROUP)
        .values_list("hour", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    per_hour: dict[datetime, dict[str, int]] = {}
    for hour, status, n in rows:
        per_hour.setdefault(_as_hour(hour), {})[status] = n
    slots = [start + timedelta(hours=i) for i in range(hours)]
    top = max([sum(per_hour.get(h, {}).values()) for h in slots] + [1])
    bars = []
    for i, hour in enumerate(slots):
        counts = per_hour.get(hour, {})
        total = sum(counts.values())
        segments = []
        y = float(CHART_HEIGHT)
        parts = []
        for css, states, label in CHART_GROUPS:
            n = sum(counts.get(s, 0) for s in states)
            if not n:
                continue
            height = n / top * CHART_HEIGHT
            y -= height
            segments.append({"css": css, "y": round(y, 1), "height": round(height, 1)})
            parts.append(f"{n} {label}")
        local = timezone.localtime(hour)
        title = f"{local:%H:%M}: {total} run{'s' if total != 1 else ''}"
        if parts:
            title += " (" + ", ".join(parts) + ")"
        bars.append(HourBar(hour, counts, total, i * CHART_BAR, segments, title))
    labels = [
        {"x": bar.x + CHART_BAR / 2, "text": f"{timezone.localtime(bar.hour):%H:%M}"}
        for i, bar in enumerate(bars)
        if i % 6 == 0
    ]
    return {
        "bars": bars,
        "labels": labels,
        "top": top,
        "width": hours * CHART_BAR,
        "height": CHART_HEIGHT,
        "bar_width": CHART_BAR - 4,
        "total": sum(bar.total for bar in bars),
    }


def sparkline(runs: list[Any], width: int = 100, height: int = 24) -> dict[str, Any] | None:
    """SVG points of the durations of ``runs`` (newest first), oldest on the
    left: Runs, or anything with their status, started_at and finished_at."""
    finished = [r for r in reversed(runs) if r.started_at and r.finished_at]
    if len(finished) < 2:
        return None
    seconds = [(r.finished_at - r.started_at).total_seconds() for r in finished]
    top = max(seconds) or 1.0
    step = width / (len(seconds) - 1)
    points = []
    for i, (run, value) in enumerate(zip(finished, seconds, strict=True)):
        x = round(i * step, 1)
        y = round(height - 2 - value / top * (height - 4), 1)
        points.append({"x": x, "y": y, "bad": run.status != S.SUCCEEDED})
    return {
        "points": " ".join(f"{p['x']},{p['y']}" for p in points),
        "marks": [p for p in points if p["bad"]],
        "last": points[-1],
        "width": width,
        "height": height,
        "min": min(seconds),
        "max": max(seconds),
        "count": len(seconds),
    }
