"""/api/… of CONTRACT, except /api/secrets and /api/system (their owners
route those). Paths have no trailing slash, as in CONTRACT."""

from django.urls import path

from runs import api

app_name = "api"

urlpatterns = [
    path("openapi.json", api.endpoint(GET=api.openapi), name="openapi"),
    path("tasks", api.endpoint(GET=api.list_tasks, POST=api.create_task), name="tasks"),
    # Before tasks/<name>: "runs" is a reserved task name for this.
    path("tasks/runs", api.endpoint(GET=api.list_runs), name="runs"),
    path("tasks/runs/<int:run_id>", api.endpoint(GET=api.get_run), name="run"),
    path(
        "tasks/runs/<int:run_id>/cancel",
        api.endpoint(POST=api.cancel_run),
        name="cancel_run",
    ),
    path(
        "tasks/<str:name>",
        api.endpoint(GET=api.get_task, PUT=api.update_task, DELETE=api.delete_task),
        name="task",
    ),
    path(
        "tasks/<str:name>/execute",
        api.endpoint(POST=api.execute_task),
        name="execute_task",
    ),
    path("tasks/<str:name>/stop", api.endpoint(POST=api.stop_task), name="stop_task"),
    path("logs", api.endpoint(GET=api.list_logs), name="logs"),
    path("logs/app.log", api.endpoint(GET=api.app_log), name="app_log"),
    path("logs/<str:log>", api.endpoint(GET=api.read_log), name="log"),
    path("logs/<str:log>/download", api.endpoint(GET=api.download_log), name="download_log"),
]
