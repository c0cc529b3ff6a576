"""Cron expressions and time zones: validation, and the slots they name.

croniter's syntax: five fields (minute hour day month weekday), or six with
seconds as the sixth, or the @hourly/@daily/… shortcuts."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from django.core.exceptions import ValidationError


def validate_cron(value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("A cron expression is required, like '*/5 * * * *'.")
    try:
        croniter(value.strip())
    except (ValueError, KeyError) as exc:
        # croniter's own message says which field is wrong.
        raise ValidationError(f"Invalid cron expression '{value}': {exc}") from None


def validate_timezone(value: str) -> None:
    try:
        zone(value)
    except ValidationError:
        raise
    except Exception:  # pragma: no cover - zone() reports every failure itself
        raise ValidationError(f"Unknown time zone '{value}'.") from None


def zone(name: str) -> ZoneInfo:
    # ZoneInfo also accepts file paths such as "../../etc/x"; only IANA names
    # from the database are allowed.
    if not isinstance(name, str) or name not in _zone_names():
        raise ValidationError(
            f"Unknown time zone '{name}': use an IANA name such as 'UTC' or 'Europe/Paris'."
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"Unknown time zone '{name}'.") from None


_names: set[str] | None = None


def _zone_names() -> set[str]:
    global _names
    if _names is None:
        _names = available_timezones() | {"UTC"}
    return _names


def next_slot(cron: str, tz: str, after: datetime) -> datetime:
    """The first slot of ``cron`` in time zone ``tz`` strictly after ``after``."""
    local = after.astimezone(zone(tz))
    return croniter(cron, local).get_next(datetime)


def is_slot(cron: str, tz: str, moment: datetime) -> bool:
    """Whether ``moment`` is a slot of ``cron`` read in time zone ``tz``."""
    local = moment.astimezone(zone(tz))
    return next_slot(cron, tz, local - timedelta(seconds=1)) == local
