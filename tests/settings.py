"""Test settings: the real settings with short intervals, so that leases,
heartbeats and stops happen in seconds. Test subprocesses (clusters,
commands) use this module too and so see the same values."""

import os
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
# One folder per xdist worker: its own SQLite file, stats cache and wake-up
# sockets. The controller imports these settings first and its DATA_DIR is
# inherited by the workers, so a folder of ours is replaced, not kept; a
# DATA_DIR given from outside (a test's own subprocess) is kept.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
_tests_data = _root / "var" / "test"
_given = os.environ.get("DATA_DIR")
if not _given or Path(_given).parent == _tests_data:
    os.environ["DATA_DIR"] = str(_tests_data / _worker)
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
