"""The rules for task names and the paths they map to inside TASKS_DIR."""

import re
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError

TASK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RESERVED_NAMES = {"runs"}


def validate_task_name(name: str) -> None:
    if not isinstance(name, str) or not TASK_NAME_RE.fullmatch(name):
        raise ValidationError(
            "A task name is 1–64 characters of a-z, 0-9, _ and -, starting with a letter or digit.",
            code="invalid_name",
        )
    if name in RESERVED_NAMES:
        raise ValidationError(f"'{name}' is a reserved name.", code="reserved_name")


def script_path(name: str) -> Path:
    """The script of a task: <TASKS_DIR>/<name>.py, refusing anything outside."""
    validate_task_name(name)
    tasks_dir = Path(settings.TASKS_DIR).resolve()
    path = (tasks_dir / f"{name}.py").resolve()
    # The name format already excludes "/" and "..": this guards against a
    # symlink in TASKS_DIR pointing elsewhere.
    if path.parent != tasks_dir:
        raise ValidationError("The script must live inside TASKS_DIR.", code="outside")
    return path
