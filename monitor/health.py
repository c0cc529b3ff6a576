"""Health checks shared by /health, the API and the `health` command.

Each check runs in a thread of its own with a deadline, so a dead database or
broker (a connect that hangs, a lock that is never granted) turns into a
failed check within HEALTH_TIMEOUT seconds instead of a hanging request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)

# Seconds one check may take; /health must answer well within two.
HEALTH_TIMEOUT = 1.5


def _describe(name: str, exc: BaseException) -> str:
    # /health is public: it names the kind of failure, the log has the rest
    # (messages carry host names and ports).
    logger.warning("health check %s failed: %s", name, exc)
    return f"error: {exc.__class__.__name__}"


def check_database() -> str:
    connection = connections["default"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A query stuck behind a lock fails instead of waiting.
            # (The connection is this thread's own and is closed after.)
            cursor.execute("SET statement_timeout = 1000")
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_broker() -> str:
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    broker = get_broker()
    if Conf.ORM:
        # The ORM broker's ping() always says yes: ask its table instead.
        broker.queue_size()
    elif not broker.ping():
        return "error: no answer"
    return "ok"


def alive_clusters() -> int:
    from monitor.clusters import cluster_stats

    return len(cluster_stats())


# At most one thread per check and process: while a check hangs (a Redis
# ping without a timeout), later requests wait on it instead of piling up
# more hanging threads.
_inflight: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}
_inflight_lock = threading.Lock()


def _run_check(check: Callable[[], Any], box: dict[str, Any], name: str) -> None:
    try:
        box["value"] = check()
    except Exception as exc:
        box["value"] = _describe(name, exc)
    finally:
        # Each thread has its own connections; do not leave them open.
        connections.close_all()


def _start(name: str, check: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    with _inflight_lock:
        current = _inflight.get(name)
        if current is not None and current[0].is_alive():
            return current
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=_run_check, args=(check, box, name), name=f"health-{name}", daemon=True
        )
        _inflight[name] = (thread, box)
        thread.start()
        return thread, box


CHECKS: dict[str, Callable[[], Any]] = {
    "database": check_database,
    "broker": check_broker,
    "workers": alive_clusters,
}


def run_checks(timeout: float = HEALTH_TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """(healthy, checks): database, broker and the number of live clusters,
    checked side by side in daemon threads, so the whole takes at most about
    ``timeout`` seconds; a check that has not answered by then has failed."""
    deadline = time.monotonic() + timeout
    started = {name: _start(name, check) for name, check in CHECKS.items()}
    results: dict[str, Any] = {}
    for name, (thread, box) in started.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if "value" in box:
            results[name] = box["value"]
    late = f"error: no answer within {timeout:g} s"
    checks: dict[str, Any] = {
        "database": results.get("database", late),
        "broker": results.get("broker", late),
    }
    # Always a number, as the contract says; a failed count is 0 alive.
    workers = results.get("workers")
    checks["workers"] = workers if isinstance(workers, int) else 0
    return not failing(checks), checks


def failing(checks: dict[str, Any]) -> list[str]:
    """The names of the checks that failed."""
    bad = [name for name in ("database", "broker") if checks.get(name) != "ok"]
    workers = checks.get("workers")
    if not isinstance(workers, int) or workers < 1:
        bad.append("workers")
    return bad


def health_report(timeout: float = HEALTH_TIMEOUT) -> tuple[bool, dict[str, Any]]:
    """The body of /health: status, checks and, when not ok, what failed."""
    healthy, checks = run_checks(timeout)
    body: dict[str, Any] = {"status": "ok" if healthy else "error", "checks": checks}
    if not healthy:
        body["failing"] = failing(checks)
    return healthy, body
