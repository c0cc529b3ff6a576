"""Operating-system side of a run: the script's environment, starting it in a
session of its own, and stopping its whole process tree."""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import sys
import time
from pathlib import Path

import psutil
from django.conf import settings

logger = logging.getLogger(__name__)

# What a script may see of the service's own environment.
BASE_ENV = ("PATH", "HOME", "LANG", "TZ")
PR_SET_PDEATHSIG = 1

try:
    _libc = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform == "linux" else None
except OSError:  # pragma: no cover - non-glibc Linux
    _libc = None


def script_env(
    run_id: int, task_name: str, attempt: int, *layers: dict, worker: str = ""
) -> dict[str, str]:
    """A clean environment: the allow-list, then each layer in order (the task's
    variables, the run's), then the TASKRUN_* variables, which always win."""
    env = {
        name: os.environ[name]
        for name in (*BASE_ENV, *settings.SCRIPT_ENV_PASSTHROUGH)
        if name in os.environ
    }
    env.setdefault("PATH", os.defpath)
    env.setdefault("LANG", "C.UTF-8")
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    for layer in layers:
        env.update({str(k): str(v) for k, v in (layer or {}).items()})
    env["TASKRUN_RUN_ID"] = str(run_id)
    env["TASKRUN_TASK"] = task_name
    env["TASKRUN_ATTEMPT"] = str(attempt)
    # Which supervisor started it: with the run id, it tells this run's
    # processes apart from another installation's run of the same id.
    env["TASKRUN_WORKER"] = worker
    return env


def command(script: Path, args: list[str]) -> list[str]:
    return [settings.SCRIPT_PYTHON, "-u", str(script), *[str(a) for a in args]]


def child_setup(rlimits: list[tuple[int, int, int]]):
    """What runs in the child between fork and exec: die with the supervisor,
    and take the run's rlimits. Only async-signal-safe-ish calls here (no
    logging, no locks): other threads of the supervisor may hold them."""
    parent = os.getpid()

    def setup() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            # The supervisor may have died before prctl took effect.
            if os.getppid() != parent:
                os._exit(137)
        for which, soft, hard in rlimits:
            resource.setrlimit(which, (soft, hard))

    return setup


def stop_group(pgid: int, grace: float, reap=None) -> None:
    """SIGTERM to the whole process group, then SIGKILL to what is left after
    ``grace`` seconds. ``reap`` collects our own child, so that its zombie
    does not count as alive."""
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)


def kill_group(pgid: int) -> None:
    _signal_group(pgid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        logger.warning("not allowed to signal process group %s", pgid)
        return False


def run_processes(run_id: int, worker: str | None = None) -> list[psutil.Process]:
    """Processes on this host that belong to run ``run_id`` (its script and
    the script's children, found by TASKRUN_RUN_ID in their environment),
    and to the run that ``worker`` supervised when it is given."""
    wanted = str(run_id)
    found = []
    for proc in psutil.process_iter():
        try:
            environ = proc.environ()
            if environ.get("TASKRUN_RUN_ID") == wanted and (
                worker is None or environ.get("TASKRUN_WORKER") == worker
            ):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def kill_run_processes(run_id: int, worker: str) -> None:
    """Kill what is left of a lost run on this host. The process group is only
    signalled when one of its members really belongs to the run, so a reused
    pid is never hit."""
    procs = run_processes(run_id, worker)
    groups = set()
    for proc in procs:
        try:
            groups.add(os.getpgid(proc.pid))
        except ProcessLookupError:
            pass
    for group in groups:
        kill_group(group)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if procs:
        logger.warning("killed %d leftover process(es) of run %s", len(procs), run_id)
