"""The server-rendered pages (dashboard, tasks, runs) and the small JSON
endpoints their scripts poll. Every state change goes through runs.services;
these views only check permissions, read forms and pick a template."""

from __future__ import annotations

import codecs
import hashlib
from collections import namedtuple
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.db.models import Count, F, Min, QuerySet, prefetch_related_objects
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from runs import chains, schedules, services, vault
from runs.charts import FAILED_STATES, STATUS_GROUP, hourly_chart, sparkline
from runs.forms import RunFilterForm, RunTaskForm
from runs.models import LogChunk, Run, Task
from runs.parameters import read_parameters
from runs.revisions import diff_lines, revision_history
from runs.templatetags.runs_pages import duration

S = Run.Status

# The run page renders only the end of a log; earlier parts come on request,
# and the whole log only as a download.
LOG_TAIL_BYTES = 64 * 1024
# The most one poll of a live log returns.
LOG_LIVE_MAX_BYTES = 256 * 1024
# A client further behind than this (a tab asleep beside a chatty script)
# jumps to the tail instead of crawling through the middle.
LOG_CATCH_UP_BYTES = 4 * LOG_LIVE_MAX_BYTES
RUNS_PAGE_SIZE = 50
TASK_HISTORY_SIZE = 20
SPARK_RUNS = 20


def table_runs(runs: QuerySet[Run]) -> QuerySet[Run]:
    """Runs as a table of them (runs/_run_table.html, runs_pages.run_rows)
    shows them: only the columns it shows, the task's and the user's names
    joined in as values. A page of 50 costs 1 ms less than with the other
    columns' conversions and a Task and a User object a row."""
    return runs.only(
        "id",
        "task_id",
        "status",
        "trigger",
        "triggered_by_id",
        "attempt",
        "exit_code",
        "queued_at",
        "started_at",
        "finished_at",
        "progress",
        "not_before",
    ).annotate(task_name=F("task__name"), triggered_by_name=F("triggered_by__username"))


view_runs = permission_required("runs.view_run", raise_exception=True)
view_tasks = permission_required("runs.view_task", raise_exception=True)
start_runs = permission_required("runs.run_task", raise_exception=True)


def _moving(run: Run) -> bool:
    """Worth watching closely: running, or queued to start now. A run
    delayed until later changes nothing for hours; its page polls slowly."""
    return run.status == S.RUNNING or (run.status == S.QUEUED and run.not_before is None)


def _partial(request: HttpRequest) -> bool:
    """The page's refresh script asks for the live part of the page only."""
    return request.GET.get("partial") == "1"


def _refresh(request: HttpRequest, template: str, context: dict[str, Any]) -> JsonResponse:
    return JsonResponse(
        {"html": render_to_string(template, context, request), "live": context["live"]}
    )


# --- dashboard ---------------------------------------------------------------


def _dashboard_context() -> dict[str, Any]:
    now = timezone.now()
    running = list(
        Run.objects.filter(status=S.RUNNING)
        .select_related("task", "triggered_by")
        .order_by("started_at", "id")[:50]
    )
    queued_qs = Run.objects.filter(status=S.QUEUED)
    queued = list(queued_qs.select_related("task", "triggered_by").order_by("id")[:20])
    queued_count = queued_qs.count() if len(queued) == 20 else len(queued)
    # One index range per failed state (status, -id), merged here: a single
    # IN query could walk the whole table when failures are rare.
    failures = sorted(
        (
            run
            for state in FAILED_STATES
            for run in Run.objects.filter(status=state).select_related("task").order_by("-id")[:10]
        ),
        key=lambda run: -run.pk,
    )[:10]
    counts = dict(
        Run.objects.filter(queued_at__gte=now - timedelta(hours=24))
        .annotate(state=STATUS_GROUP)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {
        "running": running,
        "queued": queued,
        "queued_count": queued_count,
        "failures": failures,
        "counts": [(value, label, counts.get(value, 0)) for value, label in S.choices],
        "chart": hourly_chart(now),
        "live": bool(running) or any(_moving(run) for run in queued),
        "now": now,
    }


@never_cache
@login_required
@view_runs
def dashboard(request: HttpRequest) -> HttpResponse:
    context = _dashboard_context()
    if _partial(request):
        return _refresh(request, "runs/_dashboard_live.html", context)
    return render(request, "runs/dashboard.html", context)


# --- tasks -------------------------------------------------------------------


def _next_runs(tasks: list[Task]) -> dict[int, datetime | None]:
    """When each task runs next, as schedules.next_run_at says, without a
    query per task: the caller prefetched the schedules, and the delayed runs
    come from one range of the (status, -id) index, where a query per task
    could walk that task's whole history."""
    delayed = dict(
        Run.objects.filter(status=S.QUEUED, not_before__isnull=False)
        .values_list("task_id")
        .annotate(t=Min("not_before"))
        .order_by()
    )
    nexts: dict[int, datetime | None] = {}
    for task in tasks:
        times = [ts.next_run_at for ts in schedules.task_schedules(task) if ts.enabled]
        times = [t for t in [*times, delayed.get(task.pk)] if t is not None]
        nexts[task.pk] = min(times) if task.enabled and times else None
    return nexts


# What the task list shows of a task's recent runs: the last one's state,
# progress and times, the others' durations and whether any is live.
_Recent = namedtuple(
    "_Recent",
    "id status progress progress_message queued_at started_at finished_at not_before",
)


def _task_rows() -> list[dict[str, Any]]:
    rows = []
    tasks = list(Task.objects.order_by("name").prefetch_related("schedules__job"))
    nexts = _next_runs(tasks)
    for task in tasks:
        # One short index range per task (task, -id): cheap however long the
        # history is, unlike a window over the whole run table. Read as
        # values, as a row shows them: 20 Run objects a task cost more than
        # the rest of the page.
        recent = [
            _Recent(*values)
            for values in task.runs.order_by("-id").values_list(*_Recent._fields)[:SPARK_RUNS]
        ]
        rows.append(
            {
                "task": task,
                "last": Run(task=task, **recent[0]._asdict()) if recent else None,
                "live": any(_moving(run) for run in recent),
                "spark": sparkline(recent),
                "next_run_at": nexts[task.pk],
            }
        )
    return rows


@never_cache
@login_required
@view_tasks
def task_list(request: HttpRequest) -> HttpResponse:
    rows = _task_rows()
    context = {"rows": rows, "live": any(row["live"] for row in rows)}
    if _partial(request):
        return _refresh(request, "runs/_task_rows.html", context)
    return render(request, "runs/task_list.html", context)


def _task_history(task: Task) -> dict[str, Any]:
    runs = list(table_runs(task.runs.all()).order_by("-id")[: TASK_HISTORY_SIZE + 1])
    return {
        "runs": runs[:TASK_HISTORY_SIZE],
        "more": len(runs) > TASK_HISTORY_SIZE,
        "live": any(_moving(run) for run in runs[:TASK_HISTORY_SIZE]),
    }


@never_cache
@login_required
@view_tasks
def task_detail(request: HttpRequest, name: str, form: RunTaskForm | None = None) -> HttpResponse:
    task = get_object_or_404(Task, name=name)
    history = _task_history(task)
    context = {"task": task, **history}
    if _partial(request):
        return _refresh(request, "runs/_task_history.html", context)
    code = task.read_code()
    spec = read_parameters(code)
    context.update(
        code=code,
        spec=spec,
        revisions=revision_history(task),
        form=form or RunTaskForm.for_task(task, spec),
        active=task.active_run(),
        **_automation(task),
    )
    return render(request, "runs/task_detail.html", context, status=400 if form else 200)


def _automation(task: Task) -> dict[str, Any]:
    """What starts the task without a click, and whom its runs tell."""
    # Both calls below then read the schedules from this cache.
    prefetch_related_objects([task], "schedules__job")
    return {
        "schedules": schedules.task_schedules(task),
        "next_run_at": schedules.next_run_at(task),
        "retry_on": [S(value).label.lower() for value in task.retry_on if value in S.values],
        "downstream_links": list(task.downstream_links.select_related("downstream")),
        "upstream_links": list(task.upstream_links.select_related("upstream")),
        # The secret stays in the admin: only what the page shows is read.
        "webhooks": list(
            task.webhooks.only(
                "id",
                "task_id",
                "url",
                "enabled",
                "on_failure",
                "on_success",
                "on_recovery",
                "on_alert",
            )
        ),
    }


@login_required
@start_runs
@require_POST
def run_task(request: HttpRequest, name: str) -> HttpResponse:
    """Start a run: with the task's defaults (the Run button of the list), or
    with what the task page's form says."""
    task = get_object_or_404(Task, name=name)
    kwargs: dict[str, Any] = {}
    if "args" in request.POST:
        form = RunTaskForm(request.POST, spec=read_parameters(task.read_code()), task=task)
        if not form.is_valid():
            messages.error(request, "The run was not started: see the form below.")
            return task_detail(request, name, form=form)
        kwargs = form.run_kwargs()
    return _start(request, task, **kwargs)


def _start(request: HttpRequest, task: Task, **kwargs: Any) -> HttpResponse:
    try:
        run = services.start_run(task, trigger=Run.Trigger.MANUAL, user=request.user, **kwargs)
    except services.RunRefused as exc:
        messages.error(request, str(exc))
        if exc.run is not None:
            return redirect("runs:detail", exc.run.pk)
        return redirect("runs:task", task.name)
    if run.not_before is not None:
        when = timezone.localtime(run.not_before).strftime("%Y-%m-%d %H:%M:%S %Z")
        messages.success(request, f"Run #{run.pk} of {task.name} waits until {when}.")
    else:
        messages.success(request, f"Run #{run.pk} of {task.name} is queued.")
    return redirect("runs:detail", run.pk)


# --- runs --------------------------------------------------------------------


@dataclass
class Page:
    runs: list[Run]
    newer: int | None  # id to pass as ?after= for the newer page, if any
    older: int | None  # id to pass as ?before= for the older page, if any


def _cursor(request: HttpRequest, key: str) -> int | None:
    try:
        value = int(request.GET.get(key, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def keyset_page(runs: QuerySet[Run], before: int | None, after: int | None, size: int) -> Page:
    """One page of runs, newest first, without counting the table: fetch one
    row more than the page to know whether there is another, and walk by id,
    which the (…, -id) indexes serve directly."""
    if after is not None and before is None:
        rows = list(runs.filter(id__gt=after).order_by("id")[: size + 1])
        has_newer = len(rows) > size
        rows = rows[:size][::-1]
        edge = rows[-1].id if rows else after + 1
        older = edge if runs.filter(id__lt=edge).exists() else None
        newer = rows[0].id if has_newer else None
    else:
        window = runs.filter(id__lt=before) if before is not None else runs
        rows = list(window.order_by("-id")[: size + 1])
        has_older = len(rows) > size
        rows = rows[:size]
        older = rows[-1].id if has_older else None
        newer = None
        if before is not None:
            edge = rows[0].id if rows else before - 1
            newer = edge if runs.filter(id__gt=edge).exists() else None
    return Page(runs=rows, newer=newer, older=older)


@never_cache
@login_required
@view_runs
def run_list(request: HttpRequest) -> HttpResponse:
    form = RunFilterForm(request.GET or None)
    form.is_valid()
    runs = form.filter(table_runs(Run.objects.all()))
    page = keyset_page(runs, _cursor(request, "before"), _cursor(request, "after"), RUNS_PAGE_SIZE)
    live = any(_moving(run) for run in page.runs)
    context = {"form": form, "page": page, "runs": page.runs, "live": live}
    if _partial(request):
        return _refresh(request, "runs/_run_page.html", context)
    return render(request, "runs/run_list.html", context)


def _get_run(run_id: int, *, usage: bool = False) -> Run:
    """A run with what its page shows. Its schedule and the run that started
    it (rare) are read apart: PostgreSQL took 2–3 ms to plan the one query
    with all eight joins, the run itself 0.1 ms."""
    runs = Run.objects.select_related("task", "triggered_by", "revision__author")
    if not usage:
        runs = runs.defer("usage")  # drawn by the full page only
    run = get_object_or_404(runs, pk=run_id)
    if run.upstream_id is not None:
        run.upstream = Run.objects.select_related("task").filter(pk=run.upstream_id).first()
    return run


def code_changes(run: Run) -> dict[str, Any]:
    """What changed in the code between the task's last successful run
    before this one and this run."""
    last_ok = (
        Run.objects.filter(task_id=run.task_id, status=S.SUCCEEDED, id__lt=run.pk)
        .select_related("revision")
        .order_by("-id")
        .first()
    )
    info: dict[str, Any] = {"last_ok": last_ok, "diff": None, "state": ""}
    if not run.code_hash:
        info["state"] = "unknown"  # not started yet, or the script was missing
    elif last_ok is None:
        info["state"] = "no_success"
    elif not last_ok.code_hash:
        info["state"] = "unknown"
    elif last_ok.code_hash == run.code_hash:
        info["state"] = "same"
    elif last_ok.revision is None or run.revision is None:
        info["state"] = "no_revision"
    else:
        info["state"] = "changed"
        info["diff"] = diff_lines(
            last_ok.revision.code,
            run.revision.code,
            f"r{last_ok.revision.number} (run #{last_ok.pk})",
            f"r{run.revision.number} (run #{run.pk})",
        )
    return info


def _wait_left(run: Run) -> timedelta | None:
    """How long a delayed run still waits; None once its time has come (the
    clock admits it on its next pass)."""
    if run.status != S.QUEUED or run.not_before is None:
        return None
    left = run.not_before - timezone.now()
    return left if left > timedelta(0) else None


def _run_context(run: Run) -> dict[str, Any]:
    """What the parts the live endpoint swaps in show (summary, buttons,
    history, code)."""
    attempts = chains.attempts(run)
    return {
        "run": run,
        "events": list(run.events.all()),
        "changes": code_changes(run),
        # A run without retries is a chain of one: nothing to show.
        "attempts": attempts if len(attempts) > 1 else [],
        "wait_left": _wait_left(run),
        "downstream": list(run.downstream_runs.select_related("task").order_by("id")[:20]),
    }


@never_cache
@login_required
@view_runs
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run(run_id, usage=True)
    start = max(0, run.log_size - LOG_TAIL_BYTES)
    start, text, end = read_log_text(run.pk, start, LOG_TAIL_BYTES)
    context = _run_context(run)
    context.update(
        # What the user typed may hold a secret's value: shown masked.
        run_env=vault.masker_for(run.task).mask_json(run.env),
        log_start=start,
        log_text=text,
        log_end=end,
        live=run.is_active,
        version=_live_version(run),
    )
    return render(request, "runs/run_detail.html", context)


# What the swapped parts of the run page show of a live run. While none of
# these changes (nor its history of states), a poll of the live endpoint
# renders nothing: it sends the new log and the ticking times only.
# A run's retries and downstream runs appear after its end, and the parts of
# an ended run are always sent.
LIVE_FIELDS = (
    "status",
    "reason",
    "cancel_requested",
    "progress",
    "progress_message",
    "exit_code",
    "started_at",
    "finished_at",
    "not_before",
    "dispatched_at",
    "worker",
    "code_hash",
    "revision_id",
    "result",
)


def _live_version(run: Run) -> str:
    last_event = run.events.order_by("-id").values_list("id", flat=True).first()
    values = repr([getattr(run, name) for name in LIVE_FIELDS] + [last_event])
    return hashlib.blake2b(values.encode(), digest_size=8).hexdigest()


def _ticking(run: Run) -> dict[str, str | None]:
    """The times of the summary that move with the clock alone, as its
    template writes them."""
    wait = None
    if run.status == S.QUEUED and run.not_before is not None:
        left = _wait_left(run)
        wait = f"in {duration(left)}" if left else "due now"
    return {"duration": duration(run.duration), "wait_left": wait}


def read_log_text(run_id: int, start: int, limit: int) -> tuple[int, str, int]:
    """Up to ``limit`` bytes of a run's log from ``start``, as text, with both
    ends moved to character boundaries: returns (start, text, end)."""
    data = LogChunk.read(run_id, start, limit)
    # A byte offset may fall inside a multi-byte character: skip its tail.
    skip = 0
    while skip < min(3, len(data)) and 0x80 <= data[skip] < 0xC0:
        skip += 1
    data = data[skip:]
    start += skip
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    text = decoder.decode(data, final=False)
    pending = decoder.getstate()[0]
    return start, text, start + len(data) - len(pending)


def _offset(request: HttpRequest, key: str) -> int | None:
    try:
        value = int(request.GET.get(key, "0"))
    except ValueError:
        return None
    return value if value >= 0 else None


@never_cache
@login_required
@view_runs
@require_GET
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """What the run page polls: state, progress and fragments to swap in, and
    the log after ``offset`` (at most LOG_LIVE_MAX_BYTES per call)."""
    offset = _offset(request, "offset")
    if offset is None:
        return HttpResponseBadRequest("offset must be a byte count")
    # The run row is read before the log: once it says the run has ended,
    # every byte of its log is already stored. Most polls find that nothing
    # the parts show has changed: the run alone first, without joins.
    run = get_object_or_404(Run.objects.defer("usage"), pk=run_id)
    version = _live_version(run)
    # The parts are rendered only when what they show has changed (or the
    # caller does not say what it has).
    render = request.GET.get("version") != version or not run.is_active
    if render:
        run = _get_run(run_id)
        version = _live_version(run)
    size = run.log_size
    reset = size - offset > LOG_CATCH_UP_BYTES
    if reset:
        start, text, end = read_log_text(run.pk, max(0, size - LOG_TAIL_BYTES), LOG_TAIL_BYTES)
    elif offset >= size:
        # Nothing new (the page polls several times a second): no log query.
        start, text, end = offset, "", offset
    else:
        start, text, end = read_log_text(run.pk, offset, LOG_LIVE_MAX_BYTES)
    data = {
        "status": run.status,
        "active": run.is_active,
        "waiting": run.not_before is not None,
        "progress": run.progress,
        "progress_message": run.progress_message,
        "exit_code": run.exit_code,
        "cancel_requested": run.cancel_requested,
        "version": version,
        **_ticking(run),
        "log": {
            "start": start,
            "text": text,
            "offset": end,
            "size": max(size, end),
            "reset": reset,
            "more": end < size,
        },
    }
    if render:
        context = _run_context(run)
        data["html"] = {
            "summary": render_to_string("runs/_run_summary.html", context, request),
            "actions": render_to_string("runs/_run_actions.html", context, request),
            "events": render_to_string("runs/_run_events.html", context, request),
            "code": render_to_string("runs/_run_code.html", context, request),
        }
    return JsonResponse(data)


@never_cache
@login_required
@view_runs
@require_GET
def run_log(request: HttpRequest, run_id: int) -> HttpResponse:
    """An earlier part of the log, for the run page's "load earlier" button:
    the LOG_TAIL_BYTES before byte ``before``."""
    before = _offset(request, "before")
    if before is None:
        return HttpResponseBadRequest("before must be a byte count")
    run = get_object_or_404(Run.objects.only("id", "log_size"), pk=run_id)
    before = min(before, run.log_size)
    start = max(0, before - LOG_TAIL_BYTES)
    start, text, end = read_log_text(run.pk, start, before - start)
    return JsonResponse({"start": start, "text": text, "end": end})


def _log_bytes(run_id: int) -> Iterator[bytes]:
    chunks = LogChunk.objects.filter(run_id=run_id).order_by("start").values_list("data", flat=True)
    for data in chunks.iterator(chunk_size=20):
        yield bytes(data)


@login_required
@view_runs
@require_GET
def download_log(request: HttpRequest, run_id: int) -> HttpResponse:
    """The whole log as a file, streamed chunk by chunk from the database."""
    run = get_object_or_404(Run.objects.select_related("task"), pk=run_id)
    response = StreamingHttpResponse(_log_bytes(run.pk), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{run.log_name}"'
    return response


@login_required
@start_runs
@require_POST
def cancel_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run(run_id)
    try:
        services.request_cancel(run, user=request.user)
    except services.RunNotActive as exc:
        messages.warning(request, str(exc))
    else:
        messages.success(request, f"Cancel requested for run #{run.pk}.")
    return redirect("runs:detail", run.pk)


@login_required
@start_runs
@require_POST
def rerun(request: HttpRequest, run_id: int) -> HttpResponse:
    """Start the task again with this run's arguments, environment and config."""
    run = _get_run(run_id)
    return _start(request, run.task, args=run.args, env=run.env, config=run.config)
