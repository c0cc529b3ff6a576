"""System checks: misconfiguration is refused at start, with an id."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register()
def check_queue_settings(app_configs, **kwargs):
    errors = []
    q = settings.Q_CLUSTER
    retry, timeout = q.get("retry", 60), q.get("timeout")
    if retry <= settings.TASK_TIMEOUT_MAX:
        errors.append(
            Error(
                f"django-q2 retry ({retry} s) is not above the longest task "
                f"timeout ({settings.TASK_TIMEOUT_MAX} s): a job would be "
                "delivered again while its run is still going.",
                hint="Raise Q_CLUSTER['retry'] or lower TASK_TIMEOUT_MAX.",
                id="runs.E001",
            )
        )
    if timeout is not None and timeout >= retry:
        errors.append(
            Error(
                f"django-q2 timeout ({timeout} s) must be below retry ({retry} s).",
                id="runs.E002",
            )
        )
    if settings.TASK_TIMEOUT > settings.TASK_TIMEOUT_MAX:
        errors.append(
            Error(
                f"TASK_TIMEOUT ({settings.TASK_TIMEOUT} s) is above "
                f"TASK_TIMEOUT_MAX ({settings.TASK_TIMEOUT_MAX} s).",
                id="runs.E003",
            )
        )
    if settings.LEASE_SECONDS <= settings.PROCESS_CHECK_INTERVAL:
        errors.append(
            Error(
                "LEASE_SECONDS must be longer than PROCESS_CHECK_INTERVAL, or "
                "healthy runs would be reaped as lost.",
                id="runs.E004",
            )
        )
    return errors


@register(Tags.database)
def check_task_timeouts(app_configs, databases=None, **kwargs):
    from django.db import DatabaseError

    from runs.models import Task

    if not databases:  # Only when asked (migrate, check --database).
        return []
    try:
        longest = Task.objects.order_by("-timeout").values_list("name", "timeout").first()
    except DatabaseError:
        return []
    if longest and longest[1] > settings.TASK_TIMEOUT_MAX:
        return [
            Error(
                f"Task '{longest[0]}' has a timeout of {longest[1]} s, above "
                f"TASK_TIMEOUT_MAX ({settings.TASK_TIMEOUT_MAX} s) and so above "
                "django-q2's retry.",
                id="runs.E005",
            )
        ]
    return []


@register()
def check_run_as_user(app_configs, **kwargs):
    import pwd

    name = settings.RUN_AS_USER
    if not name:
        return []
    try:
        pwd.getpwnam(name)
    except KeyError:
        return [
            Error(
                f"RUN_AS_USER is '{name}', but there is no such user on this host.",
                hint="Create the user or unset RUN_AS_USER.",
                id="runs.E006",
            )
        ]
    if not world_can_execute(settings.SCRIPT_PYTHON):
        return [
            Error(
                f"RUN_AS_USER is '{name}', but it cannot execute the Python "
                f"interpreter {settings.SCRIPT_PYTHON} (a folder on the way is private).",
                hint="Set SCRIPT_PYTHON to an interpreter other users can run.",
                id="runs.E007",
            )
        ]
    return []


def world_can_execute(path: str) -> bool:
    """Whether a user without privileges can reach and run ``path``."""
    import os
    import stat
    from pathlib import Path

    target = Path(os.path.realpath(path))
    for folder in [*reversed(target.parents), target]:
        try:
            mode = folder.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


@register()
def check_schedule_settings(app_configs, **kwargs):
    # runs.E02x: schedules and notifications (issue 5).
    errors = []
    if settings.SCHEDULER_INTERVAL <= 0:
        errors.append(
            Error(
                f"SCHEDULER_INTERVAL is {settings.SCHEDULER_INTERVAL:g}: it must be a "
                "positive number of seconds, or no schedule would ever fire.",
                id="runs.E020",
            )
        )
    if settings.WEBHOOK_ATTEMPTS < 1 or settings.WEBHOOK_TIMEOUT <= 0:
        errors.append(
            Error(
                "WEBHOOK_ATTEMPTS must be at least 1 and WEBHOOK_TIMEOUT positive.",
                id="runs.E021",
            )
        )
    return errors
