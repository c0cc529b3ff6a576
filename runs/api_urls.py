"""/api/… of CONTRACT, except /api/system (monitor/urls.py). Paths have no
trailing slash, as in CONTRACT. A call added here must be described in
runs/openapi.py too: tests/test_api_openapi.py checks both ways."""

from django.urls import path

from runs import api, api_secrets
from runs.auth import endpoint

app_name = "api"

urlpatterns = [
    path("openapi.json", endpoint(GET=api.openapi), name="openapi"),
    path("tasks", endpoint(GET=api.list_tasks, POST=api.create_task), name="tasks"),
    # Before tasks/<name>: "runs" is a reserved task name for this.
    path("tasks/runs", endpoint(GET=api.list_runs), name="runs"),
    path("tasks/runs/<int:run_id>", endpoint(GET=api.get_run), name="run"),
    path(
        "tasks/runs/<int:run_id>/cancel",
        endpoint(POST=api.cancel_run),
        name="cancel_run",
    ),
    path(
        "tasks/<str:name>",
        endpoint(GET=api.get_task, PUT=api.update_task, DELETE=api.delete_task),
        name="task",
    ),
    path(
        "tasks/<str:name>/execute",
        endpoint(POST=api.execute_task),
        name="execute_task",
    ),
    path("tasks/<str:name>/stop", endpoint(POST=api.stop_task), name="stop_task"),
    path("secrets", endpoint(GET=api_secrets.list_secrets), name="secrets"),
    path(
        "secrets/<str:name>",
        endpoint(PUT=api_secrets.put_secret, DELETE=api_secrets.delete_secret),
        name="secret",
    ),
    path("logs", endpoint(GET=api.list_logs), name="logs"),
    path("logs/app.log", endpoint(GET=api.app_log), name="app_log"),
    path("logs/<str:log>", endpoint(GET=api.read_log), name="log"),
    path("logs/<str:log>/download", endpoint(GET=api.download_log), name="download_log"),
]
