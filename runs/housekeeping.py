"""Work every worker process does beside running jobs: reaping runs whose
supervisor stopped renewing its lease. It starts when django-q2 spawns a
worker (so at cluster start) and repeats every PROCESS_CHECK_INTERVAL."""

from __future__ import annotations

import logging
import random
import threading

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

logger = logging.getLogger(__name__)

_started = threading.Lock()
_thread: threading.Thread | None = None


def start_housekeeper(**kwargs) -> None:
    global _thread
    with _started:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threading.Thread(target=_loop, name="taskrun-housekeeper", daemon=True)
        _thread.start()


def housekeep() -> None:
    from runs import services

    services.reap_lost_runs()
    services.rescue_stranded_runs()


def _loop() -> None:
    interval = settings.PROCESS_CHECK_INTERVAL
    while True:
        try:
            close_old_connections()
            housekeep()
        except DatabaseError as exc:
            logger.warning("housekeeping: database unreachable: %s", exc)
            try:
                connection.close()
            except DatabaseError:
                pass
        except Exception:
            logger.exception("housekeeping failed")
        # Jitter spreads the workers of a cluster over the interval.
        threading.Event().wait(interval * random.uniform(0.5, 1.0))
