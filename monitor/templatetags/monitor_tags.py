from __future__ import annotations

from typing import Any

from django import template

from monitor import charts

register = template.Library()


@register.filter
def seconds(value: float | None) -> str:
    """A duration as "3 d 4 h", "2 h 5 min", "4 min 7 s" or "12 s"."""
    if value is None:
        return "—"
    total = int(value)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{value:.0f} s" if value >= 1 else f"{value:.1f} s"


@register.filter
def cmdline(value: list[str] | None) -> str:
    return " ".join(value or [])


@register.simple_tag
def usage_chart(series: Any) -> dict[str, Any] | None:
    return charts.usage_chart(series)
