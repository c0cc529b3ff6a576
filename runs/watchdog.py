"""A script's dead-man's switch: a tiny process beside each running script
that stops the script's process group when its supervisor stops renewing
the lease.

The supervisor fences itself when it cannot write its heartbeat, but only
while it runs: a worker that is frozen (SIGSTOP, a stalled VM, swapping), or
stuck in a database call across a network partition, cannot stop its script.
The reaper on another host then marks the run lost and its retry may start
while the old script still runs. The watchdog is a separate process in a
session of its own, so it keeps its clock when the worker stops: past
``fence`` seconds after the last renewed heartbeat it stops the script
(SIGTERM, ``grace``, SIGKILL) — before the lease expires and any reaper may
act. When the supervisor dies, its pipe closes and the watchdog stops the
script at once (PR_SET_PDEATHSIG does that too, but not for a frozen one)."""

from __future__ import annotations

import os
import subprocess
import sys

# The watchdog's code: standard library only, started with -I -S so that it
# costs a few milliseconds and nothing of the worker's state.
_CODE = r"""
import os, select, signal, sys, time
pgid, fence, grace = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
signal.signal(signal.SIGINT, signal.SIG_IGN)
deadline = time.monotonic() + fence
buffer = b""
while True:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    ready, _, _ = select.select([0], [], [], left)
    if not ready:
        continue
    data = os.read(0, 4096)
    if not data:
        break
    buffer += data
    *lines, buffer = buffer.split(b"\n")
    for line in lines:
        if line == b"done":
            sys.exit(0)
        if line:
            deadline = max(deadline, float(line) + fence)
try:
    os.killpg(pgid, signal.SIGTERM)
except ProcessLookupError:
    sys.exit(3)
end = time.monotonic() + grace
while time.monotonic() < end:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        sys.exit(3)
    time.sleep(0.05)
try:
    os.killpg(pgid, signal.SIGKILL)
except ProcessLookupError:
    pass
sys.exit(3)
"""

FIRED = 3


class Watchdog:
    """Stops process group ``pgid`` unless ``renew`` is called at least every
    ``fence`` seconds."""

    def __init__(self, pgid: int, fence: float, grace: float):
        self.fence = fence
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _CODE, str(pgid), str(fence), str(grace)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        os.set_blocking(self.proc.stdin.fileno(), False)

    def renew(self, since: float) -> None:
        """The lease was renewed by a heartbeat written at ``since``
        (time.monotonic(), which every process of the host shares)."""
        self._send(f"{since:.3f}\n".encode())

    def fired(self) -> bool:
        """Whether the watchdog stopped the script."""
        return self.proc.poll() == FIRED

    def close(self) -> bool:
        """Let the watchdog go (the script has ended); returns whether it
        had fired."""
        if self.proc.returncode is not None:
            return self.proc.returncode == FIRED
        self._send(b"done\n")
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode == FIRED

    def _send(self, data: bytes) -> None:
        if self.proc.stdin.closed:
            return
        try:
            os.write(self.proc.stdin.fileno(), data)
        except (BlockingIOError, BrokenPipeError):
            # A watchdog that does not read is one that has fired.
            pass
