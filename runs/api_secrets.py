"""/api/secrets: named secrets for editors. A value goes in and never comes
out: every answer carries the name, scope and who changed it, never the value."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse

from runs import vault
from runs.api import _field, _get_task, _name, _string, read_json
from runs.auth import BadRequest, NotFound, permission_required
from runs.models import Secret


def secret_json(secret: Secret) -> dict:
    return {
        "name": secret.name,
        "task": secret.task.name if secret.task_id else None,
        "updated_at": secret.updated_at.isoformat(),
        "updated_by": secret.updated_by.get_username() if secret.updated_by_id else None,
    }


def _secret_name(name: str) -> str:
    try:
        vault.validate_secret_name(name)
    except ValidationError as exc:
        raise BadRequest(f"name: {exc.messages[0]}") from None
    return name


@permission_required("runs.view_secret")
def list_secrets(request: HttpRequest) -> JsonResponse:
    secrets = Secret.objects.select_related("task", "updated_by").order_by("name", "task__name")
    return JsonResponse({"secrets": [secret_json(s) for s in secrets]})


@permission_required("runs.add_secret", "runs.change_secret")
def put_secret(request: HttpRequest, name: str) -> JsonResponse:
    name = _secret_name(name)
    data = read_json(
        request,
        {"value": _field("value", _string), "task": _field("task", _name)},
        required=("value",),
    )
    if data["value"] == "":
        raise BadRequest("value: must not be empty.")
    task = _get_task(data["task"]) if "task" in data else None
    secret = vault.set_secret(name, data["value"], task=task, user=request.user)
    return JsonResponse({"secret": secret_json(secret)})


@permission_required("runs.delete_secret")
def delete_secret(request: HttpRequest, name: str) -> HttpResponse:
    # A name that breaks the format names nothing there is to delete.
    if not vault.SECRET_NAME_RE.fullmatch(name):
        raise NotFound(f"No secret named '{name}'.")
    task_name = request.GET.get("task")
    task = _get_task(task_name) if task_name else None
    if not vault.delete_secret(name, task=task):
        scope = f"task '{task_name}'" if task else "global"
        raise NotFound(f"No {scope} secret named '{name}'.")
    return HttpResponse(status=204)
