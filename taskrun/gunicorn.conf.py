"""gunicorn settings, from the environment.

Used by `manage.py serve`, `manage.py web` and the Docker image alike:
`gunicorn --config taskrun/gunicorn.conf.py` needs no other argument."""

from __future__ import annotations

import os
import sys
from typing import Any


def _number(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        sys.exit(f"taskrun: {name} must be a whole number, not {value!r}")


wsgi_app = "taskrun.wsgi:application"
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{_number('PORT', 8000)}"

# Threads serve the slow requests (a live log tail polls often) without a
# process each; processes give CPU parallelism and isolate a crash.
worker_class = "gthread"
workers = _number("WEB_WORKERS", _number("WEB_CONCURRENCY", 2))
threads = _number("WEB_THREADS", 4)
timeout = _number("WEB_TIMEOUT", 60)
graceful_timeout = _number("WEB_GRACEFUL_TIMEOUT", 20)
keepalive = _number("WEB_KEEPALIVE", 5)
# Recycle workers now and then, staggered, so that a slow leak never grows.
max_requests = _number("WEB_MAX_REQUESTS", 1000)
max_requests_jitter = max_requests // 10

# Access log to stdout, errors to stderr: the container runtime keeps both.
accesslog = os.environ.get("WEB_ACCESS_LOG", "-")
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Which proxies may tell gunicorn the original scheme (X-Forwarded-Proto);
# Django itself trusts it only with BEHIND_PROXY=true.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# The workers' heartbeat files: in memory, since a container's /tmp may be an
# overlay file system on which a busy disk stalls them into timeouts.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"


def on_starting(server: Any) -> None:
    """Load the Django settings in the master: a misconfiguration stops the
    start with one readable line, instead of a traceback from every worker."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "taskrun.settings")
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.SECRET_KEY  # noqa: B018  (importing the settings is the check)
    except ImproperlyConfigured as exc:
        sys.exit(f"taskrun: {exc}")
