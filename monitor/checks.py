"""System checks of the monitor's configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, register

# Caches that no other process can read: cluster stats saved there are lost.
PRIVATE_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}


@register()
def check_stats_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """django-q2 clusters report themselves through a cache; one private to a
    process would make every cluster invisible and /health always 503."""
    if settings.Q_CLUSTER.get("redis"):
        return []  # The Redis broker keeps its stats in Redis itself.
    alias = settings.Q_CLUSTER.get("cache", "default")
    backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
    if backend in PRIVATE_CACHES:
        return [
            Error(
                f"The cache '{alias}' ({backend.rsplit('.', 1)[-1]}) is private to one "
                "process: the worker clusters' stats would be invisible to the web "
                "and /health would report no live cluster.",
                hint="Use a file-based cache in DATA_DIR (the default) or REDIS_URL.",
                id="monitor.E001",
            )
        ]
    return []
