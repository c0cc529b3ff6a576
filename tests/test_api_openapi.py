"""/api/openapi.json tells the truth: every documented operation is called
against the app, without credentials, without permission, on unknown names
and with its example, and each answer's status, content type, headers and
body must be the documented ones. Every API route is documented. Then
schemathesis sends generated input to every operation."""

from __future__ import annotations

import os
import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.urls import URLPattern
from hypothesis import HealthCheck, settings

from runs import api, api_urls, vault
from runs.models import LogChunk, Run
from runs.openapi import openapi_document
from taskrun.wsgi import application
from tests.api_client import Api, make_token, make_user

pytestmark = pytest.mark.django_db
S = Run.Status
METHODS = ["get", "put", "post", "delete", "patch"]
DOC = openapi_document()
OPERATIONS = [
    (path, method) for path, item in DOC["paths"].items() for method in METHODS if method in item
]
# The operations whose success needs a live run; the others use a task that
# has only a finished run.
ON_LIVE = {"stop_task", "cancel_run"}
# No cluster runs in these tests: health may say the workers are missing.
MAY_BE_UNHEALTHY = {"system_health"}


@pytest.fixture
def world(make_task):
    idle = make_task("idle", "print('idle')\n")
    done = Run.objects.create(task=idle, status=S.SUCCEEDED, log_size=6)
    LogChunk.objects.create(run=done, start=0, data=b"idle\r\n")
    busy = make_task("busy", "pass\n")
    live = Run.objects.create(task=busy, status=S.QUEUED)
    vault.set_secret("API_KEY", "a-secret-value")
    return {"idle": idle, "done": done, "busy": busy, "live": live, "secret": "API_KEY"}


def fill(path: str, values: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), path)


def real_values(operation: dict[str, Any], world: dict[str, Any]) -> dict[str, Any]:
    task, run = (
        (world["busy"], world["live"])
        if operation["operationId"] in ON_LIVE
        else (world["idle"], world["done"])
    )
    return {
        "name": task.name,
        "id": run.pk,
        "log": f"{task.name}_{run.pk}.log",
        "secret": world["secret"],
    }


UNKNOWN = {
    "name": "no-such-task",
    "id": 987654321,
    "log": "idle_987654321.log",
    "secret": "NO_SUCH_SECRET",
}


def resolve(item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        section, name = item["$ref"].split("/")[-2:]
        item = DOC["components"][section][name]
    return item


def check_answer(response, operation: dict[str, Any]) -> None:
    """The status is documented, and content type, headers and body are the
    documented ones for it."""
    documented = operation["responses"]
    status = str(response.status_code)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert status in documented, f"{status} not documented: {body[:300]!r}"
    spec = resolve(documented[status])
    content = spec.get("content")
    if not content:
        assert body == b""
        return
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in content, f"{media_type} not documented for {status}"
    if media_type == "application/json":
        schema = {**content[media_type]["schema"], "components": DOC["components"]}
        validator = jsonschema_rs.validator_for(schema, validate_formats=True)
        errors = [str(e) for e in validator.iter_errors(response.json())]
        assert not errors, errors
    for header in spec.get("headers", {}):
        assert response.has_header(header), header


def example_body(operation: dict[str, Any]) -> Any:
    body = operation.get("requestBody")
    return body["content"]["application/json"]["example"] if body else None


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_every_documented_operation_answers_as_documented(path, method, world, settings):
    operation = DOC["paths"][path][method]
    codes = operation["responses"]
    url = fill(path, real_values(operation, world))
    body = example_body(operation)

    anonymous = Api().call(method.upper(), url, body)
    assert anonymous.status_code == 401
    check_answer(anonymous, operation)

    if "403" in codes:
        nobody = Api(make_user()).call(method.upper(), url, body)
        assert nobody.status_code == 403
        check_answer(nobody, operation)

    root = Api(make_user(is_staff=True, is_superuser=True))
    if "404" in codes and "{" in path and not operation.get("x-creates"):
        missing = root.call(method.upper(), fill(path, UNKNOWN), body)
        assert missing.status_code == 404
        check_answer(missing, operation)

    if "400" in codes and method != "get":
        bad = root.call(method.upper(), url, raw=b"{not json")
        assert bad.status_code == 400
        check_answer(bad, operation)

    success = root.call(method.upper(), url, body)
    if operation["operationId"] in MAY_BE_UNHEALTHY:
        assert success.status_code in (200, 503)
    else:
        assert 200 <= success.status_code < 300, success.content
    check_answer(success, operation)

    if "409" in codes:
        # What succeeded once is now in conflict: the name is taken, the run
        # is live, or it has ended. A second DELETE finds nothing to delete.
        again = root.call(method.upper(), url, body)
        assert again.status_code == (404 if method == "delete" else 409)
        check_answer(again, operation)


def test_every_api_route_is_documented():
    routes = set()
    for pattern in api_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        path = "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", "{}", str(pattern.pattern))
        for method in pattern.callback.handlers:
            routes.add((path, method.lower()))
    documented = {
        (re.sub(r"\{\w+\}", "{}", p), m)
        for p, m in OPERATIONS
        if not p.startswith("/api/system/")  # routed by monitor/urls.py
    }
    assert routes == documented


def test_documented_request_fields_are_the_accepted_ones():
    schemas = DOC["components"]["schemas"]
    assert set(schemas["TaskCreate"]["properties"]) == set(api.CREATE_FIELDS)
    # PUT refuses "name" with its own message; it is not documented.
    assert set(schemas["TaskUpdate"]["properties"]) == set(api.UPDATE_FIELDS) - {"name"}
    assert set(schemas["Execute"]["properties"]) == set(api.EXECUTE_FIELDS)


def test_an_unknown_api_url_is_a_json_404_after_authentication():
    for path in ("/api/nothing", "/api/tasks/", "/api/tasks/runs/abc", "/api/logs/a/b/c"):
        assert Api().get(path).status_code == 401
        response = Api(make_user()).call("POST", path)
        assert response.status_code == 404
        assert response.json() == {"error": f"No API call at {path}."}


def test_the_document_is_served_to_logged_in_users():
    response = Api(make_user()).get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")
    assert response.json()["paths"].keys() == DOC["paths"].keys()


# --- schemathesis: generated input for every operation -----------------------


CODE_OPERATIONS = {"create_task", "update_task"}
FUZZ = int(os.environ.get("TASKRUN_API_FUZZ") or 0)


@pytest.fixture
def keep_connection():
    """The calls go to the WSGI app in this thread, so they see the test's
    transaction; like Django's test client, keep the app from closing the
    connection at the end of each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


generated = schemathesis.openapi.from_dict(DOC)
generated.app = application


@generated.parametrize()
@settings(
    # Fixed examples: the suite gives the same answer every time and stays
    # fast. For a deeper, random search: TASKRUN_API_FUZZ=500 pytest -k generated
    max_examples=FUZZ or 25,
    derandomize=not FUZZ,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_get_documented_answers(case, world, keep_connection):
    if case.path_parameters and case.path_parameters.get("name") == "runs":
        # /api/tasks/runs is the run list (CONTRACT reserves the name).
        return
    token = make_token(make_user(is_staff=True, is_superuser=True))
    excluded = []
    operation_id = case.operation.definition.raw.get("operationId")
    if operation_id in CODE_OPERATIONS:
        # Schema-valid code need not compile; that 400 is documented.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    if operation_id in MAY_BE_UNHEALTHY:
        # A documented 503, not a crash.
        excluded.append(schemathesis.checks.not_a_server_error)
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded)
