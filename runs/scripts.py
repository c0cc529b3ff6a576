"""Task scripts on disk: syntax checks and atomic writes inside TASKS_DIR."""

from __future__ import annotations

import hashlib
import os
import tempfile

from django.core.exceptions import ValidationError

from runs.names import script_path


def check_syntax(code: str, filename: str = "<script>") -> None:
    """Refuse code that does not compile, naming the line and the error."""
    try:
        compile(code, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ValidationError(f"Line {exc.lineno}: {exc.msg}", code="syntax_error") from None
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


def code_hash(code: str | bytes) -> str:
    if isinstance(code, str):
        code = code.encode("utf-8")
    return hashlib.sha256(code).hexdigest()


def save_code(task, code: str, author=None):
    """Check, write and keep a revision of a task's script; every door that
    edits code (admin, API) comes through here. Returns the new revision, or
    None when the code did not change."""
    from runs.models import CodeRevision

    code = code.replace("\r\n", "\n")
    check_syntax(code, task.script)
    digest = code_hash(code)
    write_script(task.name, code)
    latest = task.revisions.order_by("-number").first()
    if latest is not None and latest.code_hash == digest:
        return None
    return CodeRevision.objects.create(
        task=task,
        number=(latest.number + 1) if latest else 1,
        code=code,
        code_hash=digest,
        author=author if author is not None and author.is_authenticated else None,
    )
