"""Downstream tasks: which links a run's end follows, and cycle refusal."""

from __future__ import annotations

from django.core.exceptions import ValidationError

from runs.models import Run, Task, TaskLink

S = Run.Status

# Which outcomes each kind of link follows. A cancelled or skipped run starts
# nothing: whoever cancelled it wanted the work to stop.
FOLLOWS = {
    TaskLink.On.SUCCESS: {S.SUCCEEDED},
    TaskLink.On.FAILURE: {S.FAILED, S.TIMED_OUT, S.LOST},
    TaskLink.On.ANY: {S.SUCCEEDED, S.FAILED, S.TIMED_OUT, S.LOST},
}


def check_no_cycle(upstream: Task, downstream: Task, ignore: int | None = None) -> None:
    """Refuse a link upstream → downstream that would close a loop."""
    if upstream.pk == downstream.pk:
        raise ValidationError(f"Task '{upstream.name}' cannot be downstream of itself.")
    edges = _edges(ignore)
    path = _path(edges, downstream.pk, upstream.pk)
    if path is not None:
        names = dict(Task.objects.filter(pk__in=path).values_list("pk", "name"))
        loop = " → ".join([upstream.name, *(names[pk] for pk in path)])
        raise ValidationError(f"This link would make a cycle: {loop}.")


def check_links(task: Task, downstream: list[tuple[Task, str]]) -> None:
    """Check a task's whole new list of downstream links (as PUT replaces it)."""
    seen = set()
    edges = _edges(exclude_upstream=task.pk)
    for target, _on in downstream:
        if target.pk in seen:
            raise ValidationError(f"Task '{target.name}' is listed twice.")
        seen.add(target.pk)
        edges.setdefault(task.pk, set()).add(target.pk)
    for target, _on in downstream:
        if target.pk == task.pk:
            raise ValidationError(f"Task '{task.name}' cannot be downstream of itself.")
        path = _path(edges, target.pk, task.pk)
        if path is not None:
            names = dict(Task.objects.filter(pk__in=path).values_list("pk", "name"))
            loop = " → ".join([task.name, *(names[pk] for pk in path)])
            raise ValidationError(f"This link would make a cycle: {loop}.")


def _edges(ignore: int | None = None, exclude_upstream: int | None = None) -> dict[int, set[int]]:
    edges: dict[int, set[int]] = {}
    links = TaskLink.objects.all()
    if ignore is not None:
        links = links.exclude(pk=ignore)
    if exclude_upstream is not None:
        links = links.exclude(upstream_id=exclude_upstream)
    for up, down in links.values_list("upstream_id", "downstream_id"):
        edges.setdefault(up, set()).add(down)
    return edges


def _path(edges: dict[int, set[int]], start: int, goal: int) -> list[int] | None:
    """A path start → … → goal through ``edges`` (breadth first), or None."""
    parents: dict[int, int | None] = {start: None}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            if node == goal:
                path = []
                cur: int | None = node
                while cur is not None:
                    path.append(cur)
                    cur = parents[cur]
                return path[::-1]
            for nxt in edges.get(node, ()):
                if nxt not in parents:
                    parents[nxt] = node
                    following.append(nxt)
        frontier = following
    return None


def links_to_follow(run: Run) -> list[TaskLink]:
    return [
        link
        for link in TaskLink.objects.filter(upstream_id=run.task_id).select_related("downstream")
        if run.status in FOLLOWS[link.on]
    ]


def attempts(run: Run) -> list[Run]:
    """Every attempt of ``run``'s retry chain, first to last (for the run page)."""
    first = run
    seen = {run.pk}
    while first.retry_of_id is not None and first.retry_of_id not in seen:
        first = Run.objects.select_related("task").get(pk=first.retry_of_id)
        seen.add(first.pk)
    chain = [first]
    while (nxt := Run.objects.select_related("task").filter(retry_of=chain[-1]).first()) and (
        nxt.pk not in {r.pk for r in chain}
    ):
        chain.append(nxt)
    return chain
