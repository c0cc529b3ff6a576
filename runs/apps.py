from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Tasks and runs"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from runs import checks  # noqa: F401  (registers the system checks)
        from runs.housekeeping import start_housekeeper

        post_spawn.connect(start_housekeeper, dispatch_uid="taskrun-housekeeper")
