from django.urls import path

from runs import views

app_name = "runs"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("tasks/", views.task_list, name="tasks"),
    path("tasks/<str:name>/", views.task_detail, name="task"),
    path("tasks/<str:name>/run", views.run_task, name="run_task"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<int:run_id>/", views.run_detail, name="detail"),
    path("runs/<int:run_id>/live", views.run_live, name="live"),
    path("runs/<int:run_id>/log", views.run_log, name="log"),
    path("runs/<int:run_id>/log.txt", views.download_log, name="download_log"),
    path("runs/<int:run_id>/cancel", views.cancel_run, name="cancel"),
    path("runs/<int:run_id>/rerun", views.rerun, name="rerun"),
]
