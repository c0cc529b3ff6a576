"""Graceful shutdown of a worker cluster.

The cluster's main process sets a deadline in memory shared with the workers
it forks; supervisors then let their runs finish until the deadline and
cancel them after it ("worker shutdown"), and runs not yet claimed are put
back on the queue for another worker."""

from __future__ import annotations

import multiprocessing
import time

# Created at import, before the cluster forks its workers, which inherit it.
_deadline = multiprocessing.get_context("fork").Value("d", 0.0, lock=False)


def begin(seconds: float) -> None:
    if not _deadline.value:
        _deadline.value = time.time() + seconds


def is_draining() -> bool:
    return _deadline.value > 0


def deadline() -> float | None:
    """Wall-clock time after which running runs are cancelled, if draining."""
    return _deadline.value or None
