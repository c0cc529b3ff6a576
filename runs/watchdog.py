"""A script's dead-man's switch: a tiny process beside the supervisor that
stops a script's process group when its supervisor stops renewing the lease.

The supervisor fences itself when it cannot write its heartbeat, but only
while it runs: a worker that is frozen (SIGSTOP, a stalled VM, swapping), or
stuck in a database call across a network partition, cannot stop its script.
The reaper on another host then marks the run lost and its retry may start
while the old script still runs. The watchdog is a separate process in a
session of its own, so it keeps its clock when the worker stops: past
``fence`` seconds after the last renewed heartbeat it stops the script
(SIGTERM, ``grace``, SIGKILL) — before the lease expires and any reaper may
act. When the supervisor dies, its pipe closes and the watchdog stops the
scripts it guards at once.

One watchdog process serves every run of a worker process, one after the
other (or several at once in one process): starting a Python interpreter
beside every script would cost as much CPU as a trivial script itself."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time

# The watchdog's code: standard library only, started with -I -S so that it
# costs a few milliseconds and nothing of the worker's state. Commands, one a
# line: "arm PGID FENCE GRACE", "renew PGID SINCE", "done PGID" (answered
# "PGID fired" or "PGID ok"), "forget PGID" (not answered).
_CODE = r"""
import os, select, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
guarded = {}  # pgid -> [deadline, fence, grace, kill_at or None, fired]

def alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True

def stop(pgid, entry, now):
    entry[4] = True
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        entry[3] = None
        return
    entry[3] = now + entry[2]

buffer = b""
open_ = True
while open_ or any(e[3] is not None for e in guarded.values()):
    now = time.monotonic()
    for pgid, entry in guarded.items():
        if not entry[4] and now >= entry[0]:
            stop(pgid, entry, now)
        elif entry[3] is not None and (now >= entry[3] or not alive(pgid)):
            if alive(pgid):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            entry[3] = None
    if not open_:
        time.sleep(0.05)
        continue
    waits = [e[0] - now for e in guarded.values() if not e[4]]
    waits += [0.05 for e in guarded.values() if e[3] is not None]
    ready, _, _ = select.select([0], [], [], max(0.0, min(waits)) if waits else None)
    if not ready:
        continue
    data = os.read(0, 65536)
    if not data:
        # The supervisor is gone: stop at once what it was guarding.
        open_ = False
        for pgid, entry in guarded.items():
            if not entry[4]:
                stop(pgid, entry, time.monotonic())
        continue
    buffer += data
    *lines, buffer = buffer.split(b"\n")
    for line in lines:
        words = line.split()
        if not words:
            continue
        pgid = int(words[1])
        if words[0] == b"arm":
            fence, grace = float(words[2]), float(words[3])
            guarded[pgid] = [time.monotonic() + fence, fence, grace, None, False]
        elif words[0] == b"renew" and pgid in guarded:
            entry = guarded[pgid]
            entry[0] = max(entry[0], float(words[2]) + entry[1])
        elif words[0] == b"done":
            entry = guarded.pop(pgid, None)
            fired = entry is not None and entry[4]
            os.write(1, b"%d %s\n" % (pgid, b"fired" if fired else b"ok"))
        elif words[0] == b"forget":
            guarded.pop(pgid, None)
"""


class _Guard:
    """This process's watchdog process, started on first use (and again
    after a fork, or if it died)."""

    _lock = threading.Lock()
    _proc: subprocess.Popen | None = None
    _pid: int | None = None
    _answers: dict[int, bool] = {}
    _buffer = b""

    @classmethod
    def send(cls, line: str) -> bool:
        with cls._lock:
            proc = cls._proc
            if proc is None or cls._pid != os.getpid() or proc.stdin.closed:
                return False
            try:
                os.write(proc.stdin.fileno(), line.encode() + b"\n")
            except (BrokenPipeError, OSError):
                return False
            return True

    @classmethod
    def arm(cls, pgid: int, fence: float, grace: float) -> None:
        with cls._lock:
            proc = cls._process()
            os.write(proc.stdin.fileno(), f"arm {pgid} {fence:.3f} {grace:.3f}\n".encode())

    @classmethod
    def done(cls, pgid: int, timeout: float = 2.0) -> bool:
        """Stop guarding ``pgid``; returns whether the watchdog had fired."""
        with cls._lock:
            proc = cls._proc
            if proc is None or cls._pid != os.getpid() or proc.stdin.closed:
                return False
            try:
                os.write(proc.stdin.fileno(), f"done {pgid}\n".encode())
            except OSError:
                return False
            deadline = time.monotonic() + timeout
            out = proc.stdout.fileno()
            while pgid not in cls._answers:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([out], [], [], left)[0]:
                    return False
                data = os.read(out, 4096)
                if not data:
                    return False
                cls._buffer += data
                *lines, cls._buffer = cls._buffer.split(b"\n")
                for line in lines:
                    key, _, word = line.partition(b" ")
                    cls._answers[int(key)] = word == b"fired"
            return cls._answers.pop(pgid)

    @classmethod
    def _process(cls) -> subprocess.Popen:
        proc = cls._proc
        if (
            cls._pid == os.getpid()
            and proc is not None
            and not proc.stdin.closed
            and proc.poll() is None
        ):
            return proc
        # Another process's (inherited through a fork), or gone: start ours.
        cls._answers, cls._buffer = {}, b""
        cls._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        cls._pid = os.getpid()
        return cls._proc


class Watchdog:
    """Stops process group ``pgid`` unless ``renew`` is called at least every
    ``fence`` seconds."""

    def __init__(self, pgid: int, fence: float, grace: float):
        self.pgid = pgid
        self.fence = fence
        self.closed = False
        self.result = False
        # The watchdog's clock for this group starts when it reads "arm",
        # which is after this.
        self.armed_at = time.monotonic()
        _Guard.arm(pgid, fence, grace)

    @property
    def proc(self) -> subprocess.Popen | None:
        """The watchdog process (shared by this worker's runs)."""
        return _Guard._proc

    def renew(self, since: float) -> None:
        """The lease was renewed by a heartbeat written at ``since``
        (time.monotonic(), which every process of the host shares)."""
        if not self.closed:
            _Guard.send(f"renew {self.pgid} {since:.3f}")

    def close(self) -> bool:
        """Let the watchdog go (the script has ended); returns whether it
        had fired."""
        if not self.closed:
            self.closed = True
            if time.monotonic() < self.armed_at + self.fence / 2:
                # Far from the first moment it could fire (most runs are
                # short): it has not, so no need to wait for its answer.
                _Guard.send(f"forget {self.pgid}")
                self.result = False
            else:
                self.result = _Guard.done(self.pgid)
        return self.result
