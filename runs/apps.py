from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Tasks and runs"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate
        from django_q.signals import post_spawn

        from runs import checks  # noqa: F401  (registers the system checks)
        from runs.housekeeping import start_housekeeper
        from runs.permissions import ensure_groups
        from runs.schedules import connect_signals

        connect_signals()
        post_spawn.connect(start_housekeeper, dispatch_uid="taskrun-housekeeper")
        post_spawn.connect(_mark_cluster_worker, dispatch_uid="taskrun-cluster-worker")
        # After auth's own receiver has made the permissions.
        post_migrate.connect(ensure_groups, dispatch_uid="taskrun-groups")


def _mark_cluster_worker(**kwargs) -> None:
    """django-q2 sends post_spawn in each worker process it starts."""
    from runs import executor

    executor.in_cluster_worker = True
