"""What changed between two versions of a task's script, for the pages and
the admin: unified diffs (difflib) split into lines that templates colour."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from runs.models import CodeRevision, Task

# A diff longer than this is cut: a page must stay readable when someone
# pasted a whole library into a script.
DIFF_MAX_LINES = 2000


@dataclass
class DiffLine:
    kind: str  # "add", "del", "hunk", "file" or "same"
    text: str


@dataclass
class RevisionChange:
    revision: CodeRevision
    previous: CodeRevision | None
    diff: list[DiffLine]
    added: int
    removed: int


def diff_lines(
    old: str, new: str, old_label: str = "before", new_label: str = "after"
) -> list[DiffLine]:
    """A unified diff of ``old`` to ``new``; empty when they are the same."""
    raw = difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_label, tofile=new_label, lineterm=""
    )
    lines: list[DiffLine] = []
    for text in raw:
        if len(lines) >= DIFF_MAX_LINES:
            lines.append(DiffLine("hunk", f"… diff cut at {DIFF_MAX_LINES} lines"))
            break
        if text.startswith(("---", "+++")):
            kind = "file"
        elif text.startswith("@@"):
            kind = "hunk"
        elif text.startswith("+"):
            kind = "add"
        elif text.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        lines.append(DiffLine(kind, text))
    return lines


def _change(revision: CodeRevision, previous: CodeRevision | None) -> RevisionChange:
    old = previous.code if previous is not None else ""
    old_label = f"r{previous.number}" if previous is not None else "(none)"
    diff = diff_lines(old, revision.code, old_label, f"r{revision.number}")
    return RevisionChange(
        revision=revision,
        previous=previous,
        diff=diff,
        added=sum(1 for line in diff if line.kind == "add"),
        removed=sum(1 for line in diff if line.kind == "del"),
    )


def revision_history(task: Task, limit: int = 20) -> list[RevisionChange]:
    """The task's latest ``limit`` revisions, newest first, each with its diff
    to the one before it."""
    revisions = list(
        CodeRevision.objects.filter(task=task)
        .select_related("author")
        .order_by("-number")[: limit + 1]
    )
    changes = []
    for i, revision in enumerate(revisions[:limit]):
        previous = revisions[i + 1] if i + 1 < len(revisions) else None
        if previous is None and revision.number > 1:
            # Older than what we fetched: diff against the real predecessor.
            previous = (
                CodeRevision.objects.filter(task=task, number__lt=revision.number)
                .order_by("-number")
                .first()
            )
        changes.append(_change(revision, previous))
    return changes
