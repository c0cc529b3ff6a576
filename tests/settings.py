"""Test settings: the real settings with short intervals, so that leases,
heartbeats and stops happen in seconds. Test subprocesses (clusters,
commands) use this module too and so see the same values."""

import os
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
# One folder per xdist worker: its own SQLite file and its own stats cache.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ.setdefault("DATA_DIR", str(_root / "var" / "test" / _worker))
os.environ.setdefault("PROCESS_CHECK_INTERVAL", "1")
os.environ.setdefault("LEASE_SECONDS", "3")
os.environ.setdefault("KILL_GRACE_SECONDS", "1")
os.environ.setdefault("LOG_FLUSH_SECONDS", "0.2")
os.environ.setdefault("DRAIN_SECONDS", "3")
os.environ.setdefault("MAX_TASK_WORKERS", "3")
os.environ.setdefault("Q_POLL", "0.05")

from taskrun.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests render pages without running collectstatic first.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
