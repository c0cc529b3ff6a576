"""The JSON API of CONTRACT: tasks, runs and logs. A thin door onto
runs.services and runs.scripts; what is here is reading and checking input
and shaping answers. Bad input is a 400 that changes nothing."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Prefetch, Subquery
from django.http import (
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.utils.http import content_disposition_header

from runs import automation, schedules, scripts, services
from runs.auth import (
    MAX_BODY_BYTES,
    BadRequest,
    NotFound,
    content_length,
    endpoint,
    error,
    permission_required,
    staff_required,
)
from runs.models import LogChunk, Run, Task, TaskLink, validate_timeout
from runs.names import TASK_NAME_RE, script_path, validate_task_name
from runs.openapi import openapi_document
from runs.parameters import ParamError, params_to_argv, read_parameters
from runs.serializers import run_json, task_json
from runs.templatetags.runs_pages import url_origin

# One read of a log returns at most this much; X-Log-Size tells the caller
# whether to ask again. The download streams the whole log.
MAX_LOG_READ_BYTES = 8 << 20
APP_LOG_TAIL_BYTES = 1 << 20
DEFAULT_LIMIT = 100
MAX_OFFSET = 2**62
MAX_ID = 2**63
MAX_LIMIT = 1000
# Upper bounds keep values inside the database's integer columns.
MAX_LIMIT_VALUE = {"memory_mb": 1 << 20, "cpu_seconds": 2**31 - 1, "output_mb": 1 << 20}
INTEGER_RE = re.compile(r"-?[0-9]{1,30}")
LOG_NAME_RE = re.compile(r"^(?P<task>.+)_(?P<id>[0-9]{1,18})\.log$")


def _get_task(name: str, *, lock: bool = False) -> Task:
    # A name no task can have is unknown without asking the database (which
    # may refuse it: PostgreSQL takes no NUL characters).
    tasks = Task.objects.select_for_update() if lock else Task.objects
    task = tasks.filter(name=name).first() if TASK_NAME_RE.fullmatch(name) else None
    if task is None:
        raise NotFound(f"No task named '{name}'.")
    return task


def _get_run(run_id: int) -> Run:
    # A number past the id column's range is unknown, not a database error.
    run = Run.objects.select_related("task").filter(pk=run_id).first() if run_id < MAX_ID else None
    if run is None:
        raise NotFound(f"No run #{run_id}.")
    return run


# --- reading input -----------------------------------------------------------


def _reject_constant(name: str) -> None:
    raise BadRequest(f"The body is not valid JSON: {name} is not a number.")


def _finite(text: str) -> float:
    # 1e400 reads as infinity, which no JSON column can store.
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"The body is not valid JSON: {text} is too large a number.")
    return value


def _check_strings(value: Any) -> None:
    """Refuse strings no database or file can hold: NUL characters (PostgreSQL
    refuses them) and lone surrogates (not encodable as UTF-8)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise BadRequest("Strings may not contain NUL characters.")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequest("Strings must be valid Unicode.") from None


def read_json(
    request: HttpRequest,
    fields: dict[str, Callable[[Any], Any]],
    required: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The request's JSON object, each field checked by its function. An
    empty body is an empty object."""
    if content_length(request) > MAX_BODY_BYTES:
        raise BadRequest(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    raw = request.body
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    if raw.strip():
        try:
            data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite)
        except (ValueError, RecursionError):
            raise BadRequest("The body is not valid JSON.") from None
    else:
        data = {}
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(fields) or "none"
        raise BadRequest(f"Unknown field(s): {', '.join(unknown)} (allowed: {allowed}).")
    missing = [name for name in required if name not in data]
    if missing:
        raise BadRequest(f"Missing field(s): {', '.join(missing)}.")
    _check_strings(data)
    return {name: fields[name](value) for name, value in data.items()}


def _field(name: str, check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Prefix a check's complaint with the field's name."""

    def checked(value: Any) -> Any:
        try:
            return check(value)
        except (BadRequest, ValidationError) as exc:
            message = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
            raise BadRequest(f"{name}: {message}") from None

    return checked


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest("must be a string.")
    return value


def _name(value: Any) -> str:
    validate_task_name(_string(value))
    return value


def _code(value: Any) -> str:
    code = _string(value).replace("\r\n", "\n")
    scripts.check_syntax(code)
    return code


def _integer(value: Any) -> int:
    # JSON true is a Python int; it is not a number here.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("must be an integer.")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest("must be a number of seconds.")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _timeout(value: Any) -> int:
    validate_timeout(_integer(value))
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadRequest("must be true or false.")
    return value


def _args(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise BadRequest("must be a list of strings.")
    return value


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest("must be an object of strings.")
    for key in value:
        if not key or "=" in key:
            raise BadRequest(f"'{key}' is not a variable name.")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("must be a JSON object.")
    return value


def _limit_value(name: str) -> Callable[[Any], int | float | None]:
    def check(value: Any) -> int | float | None:
        if value is None:
            return None
        if name == "output_mb":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or not 0 < value <= MAX_LIMIT_VALUE[name]:
            kind = "number" if name == "output_mb" else "integer"
            raise BadRequest(
                f"{name} must be a positive {kind} up to {MAX_LIMIT_VALUE[name]}, or null."
            )
        return value

    return check


def _limits(value: Any) -> dict[str, Any]:
    value = _object(value)
    unknown = sorted(set(value) - set(MAX_LIMIT_VALUE))
    if unknown:
        raise BadRequest(
            f"unknown limit(s): {', '.join(unknown)} (allowed: {', '.join(MAX_LIMIT_VALUE)})."
        )
    return {name: _limit_value(name)(v) for name, v in value.items()}


TASK_FIELDS = {
    "code": _field("code", _code),
    "description": _field("description", _string),
    "timeout": _field("timeout", _timeout),
    "enabled": _field("enabled", _boolean),
    "args": _field("args", _args),
    "env": _field("env", _env),
    "limits": _field("limits", _limits),
}


def _named(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A check whose complaint already names the field (and the item in it)."""

    def checked(value: Any) -> Any:
        try:
            return check(value)
        except ValidationError as exc:
            raise BadRequest(" ".join(exc.messages)) from None

    return checked


# Schedules, overlap policy, retries and downstream tasks (runs.automation).
TASK_FIELDS.update({name: _named(check) for name, check in automation.FIELDS.items()})
CREATE_FIELDS = {"name": _field("name", _name), **TASK_FIELDS}


def _no_rename(value: Any) -> None:
    # A clearer word than "unknown field" for the field people try: the name
    # is the script's file name, and runs in flight use it.
    raise BadRequest("name: a task cannot be renamed; create a new task instead.")


UPDATE_FIELDS = {**TASK_FIELDS, "name": _no_rename}
EXECUTE_FIELDS = {
    "args": _field("args", _args),
    "params": _field("params", _object),
    "env": _field("env", _env),
    "config": _field("config", _object),
    # Checked together by schedules.parse_start_time; the types here.
    "delay": _field("delay", _optional(_seconds)),
    "at": _field("at", _optional(_string)),
}


def _query_int(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw is None:
        return default
    # Plain ASCII digits only: int() would also take " 5", "1_000" and "٣".
    if not INTEGER_RE.fullmatch(raw):
        raise BadRequest(f"{name} must be an integer.")
    value = int(raw)
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}.")
    return value


def _apply_task_fields(task: Task, body: dict[str, Any]) -> None:
    for name in ("description", "timeout", "enabled", "args", "env"):
        if name in body:
            setattr(task, name, body[name])
    # Limits not named keep their value; null means the default.
    for name, value in body.get("limits", {}).items():
        setattr(task, name, value)
    automation.apply_fields(task, body)


# --- tasks -------------------------------------------------------------------


def _task_for(request: HttpRequest, task: Task, **kwargs: Any) -> dict[str, Any]:
    """The task object as this caller may see it: as on the task page, a
    webhook's path and query (which often carry its token) are shown only to
    those who may change the task; others see scheme://host/…."""
    data = task_json(task, **kwargs)
    if not request.user.has_perm("runs.change_task"):
        for hook in data["webhooks"]:
            hook["url"] = url_origin(hook["url"])
    return data


@permission_required("runs.view_task")
def list_tasks(request: HttpRequest) -> HttpResponse:
    # Each task's newest run through its (task, -id) index: MAX over a join
    # aggregated the whole run table (1 s at 1,000,000 runs).
    newest = Run.objects.filter(task=OuterRef("pk")).order_by("-id").values("id")[:1]
    # What each task object shows comes with the list, not with a few
    # queries per task (task_json uses these when they are there).
    tasks = list(
        Task.objects.annotate(
            last_run_id=Subquery(newest),
            is_running=Exists(Run.objects.filter(task=OuterRef("pk"), status=Run.Status.RUNNING)),
            next_delayed_at=Subquery(
                Run.objects.filter(
                    task=OuterRef("pk"), status=Run.Status.QUEUED, not_before__isnull=False
                )
                .order_by("not_before")
                .values("not_before")[:1]
            ),
        )
        .prefetch_related(
            "schedules__job",
            "webhooks",
            Prefetch("downstream_links", TaskLink.objects.select_related("downstream")),
        )
        .order_by("name")
    )
    last_runs = Run.objects.select_related("task").in_bulk(
        [t.last_run_id for t in tasks if t.last_run_id]
    )
    return JsonResponse(
        {"tasks": [_task_for(request, t, last_run=last_runs.get(t.last_run_id)) for t in tasks]}
    )


@permission_required("runs.add_task", "runs.edit_code")
def create_task(request: HttpRequest) -> HttpResponse:
    body = read_json(request, CREATE_FIELDS, required=("name", "code"))
    name = body["name"]
    if Task.objects.filter(name=name).exists():
        return error(f"A task named '{name}' already exists.", 409)
    if script_path(name).exists():
        # Someone put the script there by hand: import it, don't overwrite it.
        return error(
            f"{name}.py already exists in TASKS_DIR; import it with `manage.py sync_tasks`.",
            409,
        )
    task = Task(name=name)
    _apply_task_fields(task, body)
    with transaction.atomic():
        try:
            with transaction.atomic():
                task.save()
        except IntegrityError:
            # Another request created it between our check and our insert.
            return error(f"A task named '{name}' already exists.", 409)
        automation.apply_related(task, body)
        try:
            scripts.save_code(task, body["code"], author=request.user)
        except BaseException:
            # The row goes with the transaction; the file must go too.
            scripts.delete_script(name)
            raise
    return JsonResponse({"task": _task_for(request, task, with_code=True)}, status=201)


@permission_required("runs.view_task")
def get_task(request: HttpRequest, name: str) -> HttpResponse:
    return JsonResponse({"task": _task_for(request, _get_task(name), with_code=True)})


@permission_required("runs.change_task")
def update_task(request: HttpRequest, name: str) -> HttpResponse:
    task = _get_task(name)
    body = read_json(request, UPDATE_FIELDS)
    if "code" in body and not request.user.has_perm("runs.edit_code"):
        return error("Permission denied: editing code needs runs.edit_code.", 403)
    try:
        automation.check(task, body)
    except ValidationError as exc:
        raise BadRequest(" ".join(exc.messages)) from None
    with transaction.atomic():
        task = _get_task(name, lock=True)  # It may have been deleted meanwhile.
        _apply_task_fields(task, body)
        if "code" in body:
            task.missing = False
        task.save()
        automation.apply_related(task, body)
        if "code" in body:
            scripts.save_code(task, body["code"], author=request.user)
    return JsonResponse({"task": _task_for(request, task, with_code=True)})


@permission_required("runs.delete_task")
def delete_task(request: HttpRequest, name: str) -> HttpResponse:
    read_json(request, {})
    with transaction.atomic():
        # The same lock start_run takes: no run can start while we decide.
        task = _get_task(name, lock=True)
        active = task.active_run()
        if active is not None:
            return error(
                f"Task '{name}' has run #{active.pk} {active.status}; stop it first.",
                409,
                run=run_json(active),
            )
        task.delete()
        transaction.on_commit(lambda: scripts.delete_script(name))
    return HttpResponse(status=204)


@permission_required("runs.run_task")
def execute_task(request: HttpRequest, name: str) -> HttpResponse:
    task = _get_task(name)
    body = read_json(request, EXECUTE_FIELDS)
    args = body.get("args")
    if body.get("params"):
        if args is not None:
            raise BadRequest("Give either args or params, not both.")
        # The script's own argparse, read from its source, checks the values
        # and turns them into the argv it expects.
        try:
            args = params_to_argv(read_parameters(task.read_code()), body["params"])
        except ParamError as exc:
            raise BadRequest(str(exc)) from None
    try:
        not_before = schedules.parse_start_time(delay=body.get("delay"), at=body.get("at"))
    except ValidationError as exc:
        raise BadRequest(" ".join(exc.messages)) from None
    try:
        run = services.start_run(
            task,
            trigger=Run.Trigger.API,
            user=request.user,
            args=args,
            env=body.get("env"),
            config=body.get("config"),
            not_before=not_before,
        )
    except services.RunRefused as exc:
        return error(str(exc), 409, run=run_json(exc.run) if exc.run else None)
    return JsonResponse({"run": run_json(run)}, status=202)


@permission_required("runs.run_task")
def stop_task(request: HttpRequest, name: str) -> HttpResponse:
    task = _get_task(name)
    read_json(request, {})
    run = task.active_run()
    if run is None:
        return error(f"Task '{name}' has no queued or running run.", 409)
    return _cancel(request, run)


def _cancel(request: HttpRequest, run: Run) -> HttpResponse:
    try:
        run = services.request_cancel(run, user=request.user)
    except services.RunNotActive as exc:
        return error(str(exc), 409, run=run_json(run))
    return JsonResponse({"run": run_json(run)}, status=202)


# --- runs --------------------------------------------------------------------


@permission_required("runs.view_run")
def list_runs(request: HttpRequest) -> HttpResponse:
    raw = request.GET.get("status", "")
    statuses = [s.strip(" ") for s in raw.split(",")] if raw else Run.Status.active()
    unknown = [repr(s) for s in statuses if s not in Run.Status.values]
    if unknown:
        raise BadRequest(
            f"status: unknown state(s) {', '.join(unknown)} "
            f"(states: {', '.join(Run.Status.values)})."
        )
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    runs = Run.objects.select_related("task")
    if "task" in request.GET:
        runs = runs.filter(task=_get_task(request.GET["task"]))
    # One index range (status, -id) per state, merged here: a single IN query
    # walks the whole table newest first when the states asked for are rare
    # (the default, queued and running, with a long history).
    newest = sorted(
        (
            run
            for state in set(statuses)
            for run in runs.filter(status=state).order_by("-id")[:limit]
        ),
        key=lambda run: -run.pk,
    )[:limit]
    return JsonResponse({"runs": [run_json(r) for r in newest]})


@permission_required("runs.view_run")
def get_run(request: HttpRequest, run_id: int) -> HttpResponse:
    return JsonResponse({"run": run_json(_get_run(run_id))})


@permission_required("runs.run_task")
def cancel_run(request: HttpRequest, run_id: int) -> HttpResponse:
    run = _get_run(run_id)
    read_json(request, {})
    return _cancel(request, run)


# --- logs --------------------------------------------------------------------


@permission_required("runs.view_run")
def list_logs(request: HttpRequest) -> HttpResponse:
    limit = _query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    runs = Run.objects.select_related("task").only("id", "log_size", "task__name")
    if "task" in request.GET:
        runs = runs.filter(task=_get_task(request.GET["task"]))
    logs = [
        {"name": run.log_name, "task": run.task.name, "run_id": run.pk, "size": run.log_size}
        for run in runs.order_by("-id")[:limit]
    ]
    return JsonResponse({"logs": logs})


def _log_run(log: str) -> Run:
    match = LOG_NAME_RE.fullmatch(log)
    run = _get_run(int(match["id"])) if match else None
    if run is None or run.task.name != match["task"]:
        raise NotFound(f"No log named '{log}'.")
    return run


@permission_required("runs.view_run")
def read_log(request: HttpRequest, log: str) -> HttpResponse:
    run = _log_run(log)
    offset = _query_int(request, "offset", 0, 0, MAX_OFFSET)
    limit = _query_int(request, "limit", MAX_LOG_READ_BYTES, 1, MAX_LOG_READ_BYTES)
    # log_size and the chunks are written in one transaction, and the run was
    # read first: reading up to log_size gives the same snapshot as the header.
    size = run.log_size
    data = run.read_log(offset, min(limit, size - offset)) if offset < size else b""
    response = HttpResponse(data, content_type="text/plain; charset=utf-8")
    response["X-Log-Size"] = str(size)
    response["X-Run-Status"] = run.status
    response["Cache-Control"] = "no-store"
    return response


def _log_bytes(run_id: int, size: int, batch: int = 32) -> Iterator[bytes]:
    # Batches by position rather than one long cursor: nothing stays open on
    # the database while a slow client reads.
    position = 0
    while position < size:
        rows = list(
            LogChunk.objects.filter(run_id=run_id, start__gte=position)
            .order_by("start")
            .values_list("start", "data")[:batch]
        )
        if not rows:
            return
        for start, data in rows:
            data = bytes(data)[: size - start]
            yield data
            position = start + len(data)
            if position >= size:
                return


@permission_required("runs.view_run")
def download_log(request: HttpRequest, log: str) -> HttpResponse:
    run = _log_run(log)
    response = StreamingHttpResponse(
        _log_bytes(run.pk, run.log_size), content_type="text/plain; charset=utf-8"
    )
    response["Content-Length"] = str(run.log_size)
    response["Content-Disposition"] = content_disposition_header(True, run.log_name)
    response["X-Run-Status"] = run.status
    return response


@staff_required
def app_log(request: HttpRequest) -> HttpResponse:
    lines = _query_int(request, "lines", 200, 1, 10000)
    path = settings.LOGS_DIR / "app.log"
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - APP_LOG_TAIL_BYTES))
            data = fh.read(APP_LOG_TAIL_BYTES)
    except FileNotFoundError:
        data, size = b"", 0
    tail = data.splitlines(keepends=True)
    if size > APP_LOG_TAIL_BYTES:
        tail = tail[1:]  # The first line was cut by the window.
    text = b"".join(tail[-lines:]).decode("utf-8", "replace")
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


def openapi(request: HttpRequest) -> HttpResponse:
    return JsonResponse(openapi_document())


def not_found(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    raise NotFound(f"No API call at {request.path}.")


# Every other /api/ URL (routed last, after the other apps' API calls): a JSON
# 404 for every method, after the same authentication.
unknown_call = endpoint(**{m: not_found for m in ("GET", "POST", "PUT", "PATCH", "DELETE")})
