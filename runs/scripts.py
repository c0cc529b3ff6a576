"""Task scripts on disk: syntax checks and atomic writes inside TASKS_DIR."""

from __future__ import annotations

import os
import tempfile

from django.core.exceptions import ValidationError

from runs.names import script_path


def check_syntax(code: str, filename: str = "<script>") -> None:
    """Refuse code that does not compile, naming the line and the error."""
    try:
        compile(code, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ValidationError(
            f"Line {exc.lineno}: {exc.msg}", code="syntax_error"
        ) from None
    except ValueError as exc:  # e.g. a NUL byte
        raise ValidationError(str(exc), code="syntax_error") from None


def write_script(name: str, code: str) -> None:
    """Write <TASKS_DIR>/<name>.py atomically: a temporary file in the same
    folder, then a rename, so a reader never sees half a script."""
    path = script_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(code)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def delete_script(name: str) -> None:
    try:
        script_path(name).unlink()
    except FileNotFoundError:
        pass
