from django.urls import path

from monitor import views

app_name = "monitor"

urlpatterns = [
    path("health", views.health, name="health"),
    path("metrics", views.prometheus_metrics, name="metrics"),
    path("monitor/", views.monitor_page, name="monitor"),
    path("monitor/live", views.monitor_live, name="live"),
    path("monitor/runs/<int:run_id>/usage", views.run_usage, name="run_usage"),
    # The system calls of the JSON API (CONTRACT); no trailing slash, as there.
    path("api/system/info", views.system_info, name="system_info"),
    path("api/system/process", views.system_process, name="system_process"),
    path("api/system/processes", views.system_processes, name="system_processes"),
    path("api/system/health", views.system_health, name="system_health"),
]
