"""The script's watchdog on its own: it stops the script's process group
when the supervisor stops renewing, or dies, and lets it be otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from runs.watchdog import Watchdog
from tests.conftest import wait_for

pytestmark = pytest.mark.faults


@pytest.fixture
def script():
    """A stand-in script: a process group with a child that ignores SIGTERM."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
            "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
            "time.sleep(60)",
        ],
        start_new_session=True,
    )
    yield proc
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def members(script) -> list[int]:
    wait_for(lambda: psutil.Process(script.pid).children(), timeout=5, interval=0.02)
    return [script.pid, *(c.pid for c in psutil.Process(script.pid).children())]


def running(pids) -> list[int]:
    """The pids that still run (a zombie has been stopped already)."""
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_without_renewals_the_watchdog_stops_the_whole_group(script):
    pids = members(script)
    dog = Watchdog(script.pid, fence=0.5, grace=0.2)
    started = time.monotonic()
    wait_for(lambda: not running(pids), timeout=5, interval=0.02)
    # 0.5 s fence, SIGTERM (ignored by the child), 0.2 s grace, SIGKILL.
    assert 0.4 < time.monotonic() - started < 1.5
    script.wait(timeout=5)
    assert dog.close() is True


def test_renewals_keep_the_script_alive_and_close_lets_it_be(script):
    pids = members(script)
    dog = Watchdog(script.pid, fence=0.5, grace=0.2)
    for _ in range(15):
        dog.renew(time.monotonic())
        time.sleep(0.1)
    assert running(pids) == pids
    assert dog.close() is False
    time.sleep(0.7)
    assert running(pids) == pids


def test_a_dead_supervisor_closes_the_pipe_and_the_script_is_stopped_at_once(script):
    pids = members(script)
    dog = Watchdog(script.pid, fence=30, grace=0.2)
    started = time.monotonic()
    dog.proc.stdin.close()  # what the kernel does when the supervisor dies
    wait_for(lambda: not running(pids), timeout=5, interval=0.02)
    assert time.monotonic() - started < 1.5
    dog.proc.wait(timeout=5)


def test_a_short_run_lets_its_watchdog_go_without_waiting_for_an_answer(script, monkeypatch):
    from runs.watchdog import _Guard

    pids = members(script)
    dog = Watchdog(script.pid, fence=0.6, grace=0.2)

    def no_round_trip(*args, **kwargs):
        raise AssertionError("waited for the watchdog's answer")

    monkeypatch.setattr(_Guard, "done", no_round_trip)
    assert dog.close() is False
    # Forgotten, not fired: well past the fence the script is untouched.
    time.sleep(1.2)
    assert running(pids) == pids


def test_past_half_its_fence_a_close_asks_the_watchdog_whether_it_fired(script, monkeypatch):
    from runs import watchdog

    pids = members(script)
    dog = Watchdog(script.pid, fence=0.4, grace=0.2)
    asked = []
    real_done = watchdog._Guard.done
    monkeypatch.setattr(watchdog._Guard, "done", lambda pgid: asked.append(pgid) or real_done(pgid))
    time.sleep(0.25)
    dog.renew(time.monotonic())
    assert dog.close() is False
    assert asked == [script.pid]
    time.sleep(0.6)
    assert running(pids) == pids
