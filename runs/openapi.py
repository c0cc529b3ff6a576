"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json.
tests/test_api_openapi.py calls every operation listed here against the app
and checks the answers against it, so a change to the API that is not made
here too fails the suite."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from runs.models import Run, Task

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SECRET_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,63}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    if headers:
        response["headers"] = headers
    return response


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): {"$ref": f"#/components/responses/{ERRORS[code]}"} for code in codes}


ERRORS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}


def _body(schema: str, example: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {"application/json": {"schema": _ref(schema), "example": example}},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _schemas() -> dict[str, Any]:
    timeout = {"type": "integer", "minimum": 1, "maximum": settings.TASK_TIMEOUT_MAX}
    limits = {
        "type": "object",
        "description": "Resource limits of each run; null means the RUN_* default. "
        "On update, limits not named keep their value.",
        "properties": {
            "memory_mb": _nullable({"type": "integer", "minimum": 1, "maximum": 1 << 20}),
            "cpu_seconds": _nullable({"type": "integer", "minimum": 1, "maximum": 2**31 - 1}),
            "output_mb": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 1 << 20}),
        },
        "additionalProperties": False,
    }
    args = {"type": "array", "items": {"type": "string"}}
    env = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "propertyNames": {"pattern": "^[^=]+$"},
    }
    task_fields = {
        "code": {"type": "string", "description": "The script; it must compile."},
        "description": {"type": "string"},
        "timeout": timeout,
        "enabled": {"type": "boolean", "description": "A paused task refuses new runs."},
        "args": args,
        "env": env,
        "limits": limits,
    }
    # Schedules, overlap policy, retries, downstream tasks and notifications
    # (runs.automation checks them; README "Schedules, retries, chains and
    # notifications" describes them).
    objects = {"type": "array", "items": {"type": "object"}}
    automation = {
        "schedules": {**objects, "description": '[{"cron", "timezone"?, "enabled"?}…]'},
        "overlap": {"type": "string", "enum": list(Task.Overlap.values)},
        "max_queued": {"type": "integer", "minimum": 0, "maximum": 1000},
        "retry": {
            "type": "object",
            "description": '{"count", "on", "delay", "backoff", "max_delay"}, any of them',
        },
        "downstream": {**objects, "description": '[{"task", "on"?}…]'},
        "notify": {
            "type": "object",
            "description": '{"emails", "on_failure", "on_success", "on_recovery"}',
        },
        "alerts": {"type": "object", "description": '{"not_succeeded_in", "slow_factor"}'},
        "webhooks": {
            **objects,
            "description": '[{"url", "secret"?, "on_failure"?, "on_success"?, '
            '"on_recovery"?, "on_alert"?, "enabled"?}…]; secrets are never shown',
        },
    }
    task_fields.update(automation)
    run_status = {"type": "string", "enum": list(Run.Status.values)}
    optional_time = _nullable({"type": "string", "format": "date-time"})
    return {
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        },
        "RunConflict": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "run": _nullable(_ref("Run"))},
            "required": ["error", "run"],
        },
        "Run": {
            "type": "object",
            "properties": {
                "id": {"type": "integer"},
                "task": {"type": "string"},
                "status": run_status,
                "reason": _nullable({"type": "string"}),
                "trigger": {"type": "string", "enum": list(Run.Trigger.values)},
                "args": args,
                "attempt": {"type": "integer", "minimum": 1},
                "exit_code": _nullable({"type": "integer"}),
                "queued_at": {"type": "string", "format": "date-time"},
                "started_at": _nullable({"type": "string", "format": "date-time"}),
                "finished_at": _nullable({"type": "string", "format": "date-time"}),
                "duration": _nullable({"type": "number", "description": "seconds"}),
                "progress": _nullable({"type": "integer", "minimum": 0, "maximum": 100}),
                "progress_message": {"type": "string"},
                "result": _nullable({"type": "object"}),
                "worker": _nullable({"type": "string"}),
                "log_url": {"type": "string"},
                "scheduled_for": optional_time,
                "not_before": optional_time,
                "retry_of": _nullable({"type": "integer"}),
                "upstream_run": _nullable({"type": "integer"}),
            },
            "required": [
                "id",
                "task",
                "status",
                "reason",
                "trigger",
                "args",
                "attempt",
                "exit_code",
                "queued_at",
                "started_at",
                "finished_at",
                "duration",
                "progress",
                "progress_message",
                "result",
                "worker",
                "log_url",
            ],
            # Other issues add fields (schedules, retries): CONTRACT's are
            # required here, more may come.
            "additionalProperties": True,
        },
        "Parameter": {
            "type": "object",
            "description": "A parameter read from the script's argparse.",
            "properties": {
                "name": {"type": "string"},
                "kind": {"type": "string", "enum": ["positional", "option", "flag"]},
                "type": {"type": "string", "enum": ["str", "int", "float", "bool"]},
                "choices": _nullable({"type": "array"}),
                "default": {},
                "required": {"type": "boolean"},
                "help": _nullable({"type": "string"}),
            },
            "required": ["name", "kind", "type"],
        },
        "Task": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": NAME_PATTERN},
                "script": {"type": "string"},
                "description": {"type": "string"},
                "enabled": {"type": "boolean"},
                "timeout": {"type": "integer"},
                "args": args,
                "env": env,
                "limits": {**limits, "required": list(limits["properties"])},
                "parameters": {"type": "array", "items": _ref("Parameter")},
                "running": {"type": "boolean"},
                "last_run": _nullable(_ref("Run")),
                "code": {"type": "string", "description": "Only for a single task."},
                **automation,
                "next_run_at": optional_time,
            },
            "required": [
                "name",
                "script",
                "description",
                "enabled",
                "timeout",
                "args",
                "env",
                "limits",
                "parameters",
                "running",
                "last_run",
            ],
            # Other issues add fields (schedules, retries): CONTRACT's are
            # required here, more may come.
            "additionalProperties": True,
        },
        "TaskCreate": {
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": NAME_PATTERN,
                    "not": {"const": "runs"},
                    "description": "Also the script's file name, <name>.py.",
                },
                **task_fields,
            },
            "required": ["name", "code"],
            "additionalProperties": False,
        },
        "TaskUpdate": {
            "type": "object",
            "description": "Only the fields given change. A task cannot be renamed.",
            "properties": task_fields,
            "additionalProperties": False,
        },
        "Execute": {
            "type": "object",
            "properties": {
                "args": {**args, "description": "Instead of the task's default arguments."},
                "params": {
                    "type": "object",
                    "description": "Values for the script's argparse parameters.",
                },
                "env": {**env, "description": "Added to the task's variables."},
                "config": {
                    "type": "object",
                    "description": "Given to the script as a JSON file, TASKRUN_CONFIG.",
                },
                "delay": _nullable(
                    {"type": "number", "description": "Start after this many seconds."}
                ),
                "at": _nullable(
                    {"type": "string", "description": "Start then (ISO 8601); not with delay."}
                ),
            },
            "additionalProperties": False,
        },
        "Secret": {
            "type": "object",
            "description": "A secret's name, scope and history; never its value.",
            "properties": {
                "name": {"type": "string", "pattern": SECRET_NAME_PATTERN},
                "task": _nullable({"type": "string", "pattern": NAME_PATTERN}),
                "updated_at": {"type": "string", "format": "date-time"},
                "updated_by": _nullable({"type": "string"}),
            },
            "required": ["name", "task", "updated_at", "updated_by"],
            "additionalProperties": False,
        },
        "SecretPut": {
            "type": "object",
            "properties": {
                "value": {
                    "type": "string",
                    "minLength": 1,
                    # An environment variable cannot hold a NUL character.
                    "pattern": "^[^\\u0000]+$",
                    "description": "Write-only.",
                },
                "task": {
                    "type": "string",
                    "pattern": NAME_PATTERN,
                    "description": "The task it belongs to; without it, a global secret.",
                },
            },
            "required": ["value"],
            "additionalProperties": False,
        },
        "LogEntry": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "task": {"type": "string"},
                "run_id": {"type": "integer"},
                "size": {"type": "integer", "minimum": 0},
            },
            "required": ["name", "task", "run_id", "size"],
            "additionalProperties": False,
        },
    }


def _envelope(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: schema},
        "required": [key],
        "additionalProperties": False,
    }


def _paths() -> dict[str, Any]:
    states = "(" + "|".join(Run.Status.values) + ")"
    task = _envelope("task", _ref("Task"))
    run = _envelope("run", _ref("Run"))
    conflict = _json(_ref("Error"), "In conflict with the current state.")
    run_conflict = _json(_ref("RunConflict"), "In conflict with a run.")
    name = {"$ref": "#/components/parameters/TaskName"}
    run_id = {"$ref": "#/components/parameters/RunId"}
    log = {"$ref": "#/components/parameters/LogName"}
    secret = {"$ref": "#/components/parameters/SecretName"}
    limit = _query(
        "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "At most this many (100)."
    )
    task_filter = _query("task", {"type": "string"}, "Only this task's (404 if it is unknown).")
    log_headers = {
        "X-Log-Size": {"schema": {"type": "integer"}, "description": "Bytes in the log so far."},
        "X-Run-Status": {"schema": {"type": "string", "enum": list(Run.Status.values)}},
    }
    return {
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors(401)},
            }
        },
        "/api/tasks": {
            "get": {
                "operationId": "list_tasks",
                "summary": "Every task (runs.view_task)",
                "responses": {
                    "200": _json(
                        _envelope("tasks", {"type": "array", "items": _ref("Task")}), "Tasks"
                    ),
                    **_errors(401, 403),
                },
            },
            "post": {
                "operationId": "create_task",
                "summary": "Create a task and its script (runs.add_task, runs.edit_code)",
                "requestBody": _body(
                    "TaskCreate",
                    {"name": "hello", "code": "print('hello')\n", "description": "Says hello"},
                ),
                "responses": {
                    "201": _json(task, "Created"),
                    "409": conflict,
                    **_errors(400, 401, 403),
                },
            },
        },
        "/api/tasks/{name}": {
            "parameters": [name],
            "get": {
                "operationId": "get_task",
                "summary": "A task with its code (runs.view_task)",
                "responses": {"200": _json(task, "The task"), **_errors(401, 403, 404)},
            },
            "put": {
                "operationId": "update_task",
                "summary": "Change a task (runs.change_task; runs.edit_code for code)",
                "requestBody": _body(
                    "TaskUpdate", {"description": "Nightly clean-up", "timeout": 600}
                ),
                "responses": {"200": _json(task, "Changed"), **_errors(400, 401, 403, 404)},
            },
            "delete": {
                "operationId": "delete_task",
                "summary": "Delete a task, its script and its runs (runs.delete_task)",
                "responses": {
                    "204": {"description": "Deleted"},
                    "409": run_conflict,
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/tasks/{name}/execute": {
            "parameters": [name],
            "post": {
                "operationId": "execute_task",
                "summary": "Queue a run (runs.run_task)",
                "requestBody": _body(
                    "Execute",
                    {"args": ["--verbose"], "env": {"GREETING": "hi"}, "config": {"n": 3}},
                    required=False,
                ),
                "responses": {
                    "202": _json(run, "Queued"),
                    "409": _json(
                        _ref("RunConflict"),
                        "The task has a queued or running run (``run``), or is paused.",
                    ),
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/tasks/{name}/stop": {
            "parameters": [name],
            "post": {
                "operationId": "stop_task",
                "summary": "Cancel the task's queued or running run (runs.run_task)",
                "responses": {
                    "202": _json(run, "Cancelled, or cancel requested of a running run"),
                    "409": conflict,
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/tasks/runs": {
            "get": {
                "operationId": "list_runs",
                "summary": "Runs, newest first (runs.view_run)",
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "pattern": f"^( *{states} *(, *{states} *)*)?$"},
                        "One state or several joined by commas (default: queued,running).",
                    ),
                    task_filter,
                    limit,
                ],
                "responses": {
                    "200": _json(
                        _envelope("runs", {"type": "array", "items": _ref("Run")}), "Runs"
                    ),
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/tasks/runs/{id}": {
            "parameters": [run_id],
            "get": {
                "operationId": "get_run",
                "summary": "A run (runs.view_run)",
                "responses": {"200": _json(run, "The run"), **_errors(401, 403, 404)},
            },
        },
        "/api/tasks/runs/{id}/cancel": {
            "parameters": [run_id],
            "post": {
                "operationId": "cancel_run",
                "summary": "Cancel a run (runs.run_task)",
                "responses": {
                    "202": _json(run, "Cancelled, or cancel requested of a running run"),
                    "409": run_conflict,
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/secrets": {
            "get": {
                "operationId": "list_secrets",
                "summary": "Secrets, without their values (runs.view_secret)",
                "responses": {
                    "200": _json(
                        _envelope("secrets", {"type": "array", "items": _ref("Secret")}),
                        "Secrets",
                    ),
                    **_errors(401, 403),
                },
            },
        },
        "/api/secrets/{secret}": {
            "parameters": [secret],
            "put": {
                "operationId": "put_secret",
                "summary": "Create or change a secret (runs.add_secret, runs.change_secret)",
                # Creates what it names: an unknown name is no 404 (only an
                # unknown task is).
                "x-creates": True,
                "requestBody": _body("SecretPut", {"value": "s3cret-value"}),
                "responses": {
                    "200": _json(_envelope("secret", _ref("Secret")), "Saved"),
                    **_errors(400, 401, 403, 404),
                },
            },
            "delete": {
                "operationId": "delete_secret",
                "summary": "Delete a secret (runs.delete_secret)",
                "parameters": [
                    _query(
                        "task",
                        {"type": "string"},
                        "The task's secret of that name; without it, the global one.",
                    )
                ],
                "responses": {"204": {"description": "Deleted"}, **_errors(401, 403, 404)},
            },
        },
        "/api/logs": {
            "get": {
                "operationId": "list_logs",
                "summary": "Run logs, newest first (runs.view_run)",
                "parameters": [task_filter, limit],
                "responses": {
                    "200": _json(
                        _envelope("logs", {"type": "array", "items": _ref("LogEntry")}), "Logs"
                    ),
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/logs/app.log": {
            "get": {
                "operationId": "app_log",
                "summary": "The end of the application log (staff)",
                "parameters": [
                    _query(
                        "lines", {"type": "integer", "minimum": 1, "maximum": 10000}, "Lines (200)."
                    )
                ],
                "responses": {"200": _text("The last lines"), **_errors(400, 401, 403)},
            },
        },
        "/api/logs/{log}": {
            "parameters": [log],
            "get": {
                "operationId": "read_log",
                "summary": "A run's log from a byte offset (runs.view_run)",
                "parameters": [
                    _query(
                        "offset",
                        {"type": "integer", "minimum": 0, "maximum": 2**62},
                        "Start here (0).",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 8 << 20},
                        "At most this many bytes (8 MiB).",
                    ),
                ],
                "responses": {
                    "200": _text("The log from the offset", log_headers),
                    **_errors(400, 401, 403, 404),
                },
            },
        },
        "/api/logs/{log}/download": {
            "parameters": [log],
            "get": {
                "operationId": "download_log",
                "summary": "A run's whole log as a file (runs.view_run)",
                "responses": {
                    "200": _text(
                        "The log, as an attachment", {"X-Run-Status": log_headers["X-Run-Status"]}
                    ),
                    **_errors(401, 403, 404),
                },
            },
        },
        **_system_paths(),
    }


def _object(required: dict[str, Any]) -> dict[str, Any]:
    """An object with at least these properties (the host figures may grow)."""
    return {"type": "object", "properties": required, "required": list(required)}


def _system_paths() -> dict[str, Any]:
    """The monitor's calls (monitor/views.py): host, this process, the Python
    processes and health, for anyone who may view runs."""
    number = {"type": "number"}
    integer = {"type": "integer"}
    health = _object(
        {
            "status": {"type": "string"},
            "checks": _object({"database": {"type": "string"}, "broker": {"type": "string"}}),
        }
    )
    calls = {
        "info": (
            "The host: CPU, memory, disks",
            _object(
                {
                    "cpu": _object({"percent": number, "count": integer}),
                    "memory": _object({"total": integer, "used": integer, "percent": number}),
                    "disk": _object(
                        {"total": integer, "used": integer, "free": integer, "percent": number}
                    ),
                }
            ),
        ),
        "process": (
            "This web process",
            _object({"pid": integer, "rss": integer, "cpu_percent": number, "threads": integer}),
        ),
        "processes": (
            "The Python processes on this host (workers, scripts, web)",
            _envelope(
                "processes",
                {
                    "type": "array",
                    "items": _object(
                        {
                            "pid": integer,
                            "name": {"type": "string"},
                            "cmdline": {"type": "array", "items": {"type": "string"}},
                            "cpu_percent": number,
                            "rss": integer,
                        }
                    ),
                },
            ),
        ),
        "health": ("Database, broker and workers", health),
    }
    paths = {}
    for name, (summary, schema) in calls.items():
        responses = {"200": _json(schema, summary), **_errors(401, 403)}
        if name == "health":
            responses["503"] = _json(health, "A check failed (named in `failing`).")
        paths[f"/api/system/{name}"] = {
            "get": {
                "operationId": f"system_{name}",
                "summary": f"{summary} (runs.view_run)",
                "responses": responses,
            }
        }
    return paths


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskrun",
            "version": "1",
            "description": "Run Python scripts on demand and watch their output. "
            "Authenticate with a session (and its CSRF token for writes) or an API "
            "token from the admin: `Authorization: Bearer <token>`.",
        },
        "security": [{"bearerAuth": []}, {"sessionAuth": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "parameters": {
                "TaskName": {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    # "runs" is the path of the run calls, not a task.
                    "schema": {"type": "string", "pattern": NAME_PATTERN, "not": {"const": "runs"}},
                },
                "RunId": {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                },
                "SecretName": {
                    "name": "secret",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": SECRET_NAME_PATTERN},
                },
                "LogName": {
                    "name": "log",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^.+_[0-9]+\.log$"},
                    "description": "<task>_<run id>.log",
                },
            },
            "responses": {
                "BadRequest": _json(_ref("Error"), "Bad input; nothing was changed."),
                "Unauthorized": _json(_ref("Error"), "No session and no valid API token."),
                "Forbidden": _json(_ref("Error"), "Missing permission (or CSRF token)."),
                "NotFound": _json(_ref("Error"), "Unknown task, run or log."),
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "sessionAuth": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
            },
        },
    }
