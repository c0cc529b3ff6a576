"""The rules for task names and the paths they map to inside TASKS_DIR."""

import functools
import os
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


def _tasks_dir() -> Path:
    """TASKS_DIR resolved (every run asks): worked out again only when the
    folder it leads to changes (a symlink swapped by a deployment, say)."""
    folder = str(settings.TASKS_DIR)
    try:
        found = os.stat(folder)
    except OSError:
        return Path(folder).resolve()
    return _resolved(folder, found.st_dev, found.st_ino)


@functools.lru_cache(maxsize=8)
def _resolved(folder: str, device: int, inode: int) -> Path:
    return Path(folder).resolve()


def script_path(name: str) -> Path:
    """The script of a task: <TASKS_DIR>/<name>.py, refusing anything outside."""
    validate_task_name(name)
    tasks_dir = _tasks_dir()
    path = tasks_dir / f"{name}.py"
    if path.is_symlink():
        path = path.resolve()
    # The name format already excludes "/" and "..": this guards against a
    # symlink in TASKS_DIR pointing elsewhere. (In the resolved TASKS_DIR,
    # only the script's own name can be a symlink.)
    if path.parent != tasks_dir:
        raise ValidationError("The script must live inside TASKS_DIR.", code="outside")
    return path
