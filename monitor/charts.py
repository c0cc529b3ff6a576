"""Server-rendered SVG charts: the geometry is computed here, the templates
draw it. No chart library and no JS needed to see them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db.models import Q
from django.utils import timezone

from monitor.models import HISTORY, HostSample
from runs.models import Run

WIDTH = 720
HEIGHT = 140
LANE = 10  # height of one lane of run bars under a host chart


def _points(pairs: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in pairs)


def _y(value: float, top: float) -> float:
    # A little room above the top, so a line at its peak is not cut by the frame.
    top = top or 1.0
    return HEIGHT - max(0.0, min(value, top)) / top * (HEIGHT - 4)


def _lanes(spans: list[tuple[float, float]]) -> list[int]:
    """Greedy lane for each (x0, x1) span so that bars in a lane never overlap."""
    ends: list[float] = []
    lanes = []
    for x0, x1 in spans:
        for lane, end in enumerate(ends):
            if x0 >= end + 2:
                ends[lane] = x1
                lanes.append(lane)
                break
        else:
            ends.append(x1)
            lanes.append(len(ends) - 1)
    return lanes


def host_charts(now: datetime | None = None) -> list[dict[str, Any]]:
    """For each host with samples in the last hour: CPU and memory lines, and
    the runs its workers ran in that hour as bars, to line spikes up with runs."""
    now = now or timezone.now()
    start = now - HISTORY
    span = HISTORY.total_seconds()

    def x(at: datetime) -> float:
        return max(0.0, min(WIDTH, (at - start).total_seconds() / span * WIDTH))

    samples: dict[str, list[HostSample]] = {}
    for sample in HostSample.objects.filter(at__gte=start).order_by("host", "at"):
        samples.setdefault(sample.host, []).append(sample)
    charts = []
    for host, rows in samples.items():
        runs = list(
            Run.objects.filter(worker__startswith=f"{host}:", started_at__isnull=False)
            .filter(Q(finished_at__isnull=True) | Q(finished_at__gte=start))
            .filter(started_at__lte=now)
            .select_related("task")
            .order_by("started_at")[:200]
        )
        spans = [
            (x(run.started_at), max(x(run.finished_at or now), x(run.started_at) + 2))
            for run in runs
        ]
        lanes = _lanes(spans)
        bars = [
            {
                "run": run,
                "x": x0,
                "width": x1 - x0,
                "y": HEIGHT + 6 + lane * LANE,
                "url": f"/runs/{run.pk}/",
            }
            for run, (x0, x1), lane in zip(runs, spans, lanes, strict=True)
        ]
        last = rows[-1]
        charts.append(
            {
                "host": host,
                "cpu": _points((x(s.at), _y(s.cpu_percent, 100)) for s in rows),
                "memory": _points((x(s.at), _y(s.memory_percent, 100)) for s in rows),
                "last": last,
                "peak_cpu": max(s.cpu_percent for s in rows),
                "samples": len(rows),
                "bars": bars,
                "height": HEIGHT + 10 + (max(lanes) + 1 if lanes else 0) * LANE,
            }
        )
    return charts


def usage_chart(series: Sequence[Sequence[float]] | None) -> dict[str, Any] | None:
    """A run's [[t, cpu %, rss, procs], …] as two lines: CPU (scaled to 100 %,
    or more when it used several cores) and memory (scaled to its peak)."""
    if not series:
        return None
    duration = max(series[-1][0], 1.0)
    cpu_top = max(100.0, max(p[1] for p in series))
    rss_top = max(p[2] for p in series) or 1
    return {
        "cpu": _points((p[0] / duration * WIDTH, _y(p[1], cpu_top)) for p in series),
        "memory": _points((p[0] / duration * WIDTH, _y(p[2], rss_top)) for p in series),
        "cpu_top": cpu_top,
        "rss_top": rss_top,
        "max_procs": max(int(p[3]) for p in series),
        "duration": duration,
        "points": len(series),
    }
