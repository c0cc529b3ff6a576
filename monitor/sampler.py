"""The history of each worker host: CPU and memory every
PROCESS_CHECK_INTERVAL, the last hour kept.

Every django-q2 worker process starts this thread (post_spawn), but only the
one holding a file lock in DATA_DIR writes samples, so a host has one series
however many workers and clusters it runs. When that worker goes (recycled,
killed), its lock goes with it and another worker's thread takes over."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import threading
from typing import Any

import psutil
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from monitor.models import HostSample

logger = logging.getLogger(__name__)

_started = threading.Lock()
_thread: threading.Thread | None = None


def read_host() -> dict[str, Any]:
    """One reading; CPU percent is measured since the previous call."""
    memory = psutil.virtual_memory()
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "memory_percent": memory.percent,
        "memory_used": memory.total - memory.available,
        "swap_percent": psutil.swap_memory().percent,
        "load1": load1,
    }


def record_sample(host: str | None = None) -> HostSample:
    """Store one reading of this host and drop what is older than an hour."""
    sample = HostSample.objects.create(host=host or settings.WORKER_HOST, **read_host())
    HostSample.prune()
    return sample


class HostLock:
    """A non-blocking, per-host exclusive lock on a file in DATA_DIR; the
    kernel releases it when the holding process dies."""

    def __init__(self, host: str):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", host)
        self.path = settings.DATA_DIR / f"monitor-sampler-{safe}.lock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def start_sampler(**kwargs: Any) -> None:
    """post_spawn receiver: start this worker process's sampler thread."""
    global _thread
    with _started:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_loop, name="taskrun-host-sampler", daemon=True)
        _thread.start()


def _loop() -> None:
    interval = settings.PROCESS_CHECK_INTERVAL
    lock = HostLock(settings.WORKER_HOST)
    psutil.cpu_percent(interval=None)  # the baseline of the first reading
    stop = threading.Event()
    while not stop.wait(interval):
        try:
            if not lock.acquire():
                continue  # another worker of this host is sampling
            close_old_connections()
            record_sample()
        except DatabaseError as exc:
            logger.warning("host sampler: database unreachable: %s", exc)
            try:
                connection.close()
            except DatabaseError:
                pass
        except Exception:
            logger.exception("host sampler failed")
