from django.apps import AppConfig


class MonitorConfig(AppConfig):
    name = "monitor"
    verbose_name = "Monitor"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from monitor import checks  # noqa: F401  (registers the system checks)
        from monitor.sampler import start_sampler

        # Every worker process starts a sampler thread; a file lock lets only
        # one per host write samples (see monitor.sampler).
        post_spawn.connect(start_sampler, dispatch_uid="taskrun-host-sampler")
