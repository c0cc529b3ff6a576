"""Bare django-q2: taskrun's database and broker settings (the ones taskrun
shipped with before bench/RESULTS.md's fixes), none of taskrun's apps, and
the stock qcluster. The job is bench.jobs.run_script."""

import os

os.environ.setdefault("LOG_LEVEL", "WARNING")

from taskrun.settings import *  # noqa: E402,F403

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_q"]
MIDDLEWARE = []
ROOT_URLCONF = "bench.bare_urls"
Q_CLUSTER = {
    "name": "bare",
    "workers": int(os.environ.get("MAX_TASK_WORKERS", "2")),
    "timeout": 3600,
    "retry": 4000,
    "max_attempts": 1,
    "ack_failures": True,
    "queue_limit": 2,
    "poll": float(os.environ.get("Q_POLL", "0.2")),
    "save_limit": 100,
    "cache": "default",
    "catch_up": False,
    "scheduler": False,
}
if REDIS_URL:  # noqa: F405
    Q_CLUSTER["redis"] = REDIS_URL  # noqa: F405
else:
    Q_CLUSTER["orm"] = "default"
