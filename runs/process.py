"""Operating-system side of a run: the script's environment, starting it in a
session of its own, and stopping its whole process tree."""

from __future__ import annotations

import logging
import os
import resource
import select
import signal
import subprocess
import time
from pathlib import Path

import psutil
from django.conf import settings

logger = logging.getLogger(__name__)

# What a script may see of the service's own environment.
BASE_ENV = ("PATH", "HOME", "LANG", "TZ")


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


def apply_limits(pid: int, rlimits: list[tuple[int, int, int]]) -> None:
    """Give a just-started script the run's rlimits (prlimit(2)).

    Not in a preexec_fn between fork and exec: running Python in the forked
    child costs tens of milliseconds per run (the worker's memory is copied
    page by page as the child touches it), and without it the script is
    spawned with vfork. Popen returns once the script has exec'd, before its
    interpreter has done anything, so the limits hold from its first line.
    A supervisor that dies is covered by the watchdog (runs.watchdog), which
    stops the scripts it guards as soon as its pipe closes."""
    for which, soft, hard in rlimits:
        try:
            resource.prlimit(pid, which, (soft, hard))
        except ProcessLookupError:
            return  # It has already ended.


def limits_in_child(rlimits: list[tuple[int, int, int]]):
    """A preexec_fn that sets the rlimits in the child, for a script that runs
    as another user: prlimit(2) on another user's process needs
    CAP_SYS_RESOURCE, which a container's root may not have. (Dropping to
    another user forks rather than vforks anyway.)"""

    def setup() -> None:
        for which, soft, hard in rlimits:
            resource.setrlimit(which, (soft, hard))

    return setup


def wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for our child to exit; True once it
    has. Woken the moment it exits through a pidfd, where ``Popen.wait``
    polls (0.5 ms, then doubling up to 50 ms) and a trivial script's worker
    would idle for part of that."""
    if proc.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # Not Linux ≥ 5.3.
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return proc.poll() is not None
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return proc.poll() is not None


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
    kill_group(pgid, reap=reap)


def kill_group(pgid: int, reap=None, wait: float = 2.0) -> None:
    """SIGKILL to the group, then wait (a little) until it is gone: a run is
    only recorded as ended once none of its processes is left."""
    if not _signal_group(pgid, signal.SIGKILL):
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.02)


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
