"""The rules for task names and the paths they map to inside TASKS_DIR."""

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
    """TASKS_DIR resolved (every run asks): worked out again whenever the
    folder it leads to is not the one resolved before (a symlink swapped by
    a deployment, a folder renamed): two stats instead of a walk."""
    folder = str(settings.TASKS_DIR)
    try:
        found = os.stat(folder)
    except OSError:
        return Path(folder).resolve()
    key = (found.st_dev, found.st_ino)
    known = _resolved_dirs.get(folder)
    if known is not None and known[0] == key:
        try:
            again = os.stat(known[1])
        except OSError:
            again = None
        if again is not None and (again.st_dev, again.st_ino) == key:
            return known[1]
    resolved = Path(folder).resolve()
    if len(_resolved_dirs) > 16:
        _resolved_dirs.clear()
    _resolved_dirs[folder] = (key, resolved)
    return resolved


_resolved_dirs: dict[str, tuple[tuple[int, int], Path]] = {}


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
