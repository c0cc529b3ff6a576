"""What a run's script costs: CPU, resident memory and process count of its
whole process tree, sampled by the supervisor about once a second.

The run keeps its peak memory, its CPU seconds and a compact series
``[[seconds since start, cpu %, rss bytes, processes], …]`` of at most
``max_points`` points: when the series is full, neighbouring points are merged
and each new point covers twice the time, so a week-long run stays as small as
a one-minute one."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import psutil

logger = logging.getLogger(__name__)


def _high_water_rss(pid: int) -> int:
    """The largest resident size this process ever had (Linux VmHWM), which
    catches spikes between two samples; 0 where it cannot be read."""
    if sys.platform != "linux":
        return 0
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class RunUsage:
    """Samples the process tree rooted at ``pid``. Call ``sample()`` as often
    as you like: it measures at most every ``every`` seconds and returns the
    fields to store (``peak_rss``, ``cpu_seconds``, ``usage``) at most every
    ``write_every`` seconds, else an empty dict."""

    def __init__(
        self,
        pid: int,
        *,
        every: float = 1.0,
        write_every: float = 3.0,
        max_points: int = 300,
    ):
        self.every = every
        self.write_every = write_every
        self.max_points = max(2, max_points)
        self.pid = pid
        self.started = time.monotonic()
        self.next_sample = self.started
        self.next_write = self.started + write_every
        # Looked up at the first measure, while the script is still the
        # supervisor's unreaped child (its pid cannot be reused before
        # then); a script gone before its first sample is never looked up.
        self.root: psutil.Process | None = None
        self._root_looked_up = False
        # Every process seen in the tree, kept so that cpu figures have a
        # baseline and an orphaned grandchild is still counted once seen.
        self.procs: dict[int, psutil.Process] = {}
        self.parents: dict[int, int] = {}
        self.cpu_of: dict[int, float] = {}
        # CPU of processes that ended without a parent in the tree to absorb it.
        self.cpu_gone = 0.0
        self.cpu_seconds = 0.0
        self.peak_rss = 0
        self.measured = False
        # The latest sample, for the run's limits.
        self.rss_now = 0
        self.processes_now = 0
        self.last_cpu: tuple[float, float] | None = None  # (monotonic, cpu seconds)
        self.step = every  # seconds one point of the series covers
        self.series: list[list[float]] = []
        self.bucket: list[tuple[float, float, int, int]] = []
        self.bucket_start = 0.0

    # -- measuring --------------------------------------------------------
    def sample(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        if now >= self.next_sample:
            self.next_sample = now + self.every
            self._measure_safely(now)
        if now >= self.next_write:
            self.next_write = now + self.write_every
            return self.fields()
        return {}

    def finish(self) -> dict[str, Any]:
        """The last measure (what is left of the tree) and the final fields.
        Call once the script has been reaped."""
        if self._root_looked_up:
            self._measure_safely(time.monotonic())
        # else: never sampled, nothing was seen, and the pid may be reused.
        self._root_looked_up = True
        self._flush_bucket()
        return self.fields()

    def fields(self) -> dict[str, Any]:
        series = self.series + ([self._bucket_point()] if self.bucket else [])
        if not self.measured:
            # The script ended before its first sample: unknown, not zero.
            return {"peak_rss": None, "cpu_seconds": None, "usage": None}
        return {
            "peak_rss": self.peak_rss,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "usage": series,
        }

    def _measure_safely(self, now: float) -> None:
        # Measuring is an observer's job: a failure here must never stop
        # or fail the run it observes.
        try:
            self._measure(now)
        except Exception:
            logger.exception("could not measure the process tree of pid %s", self.pid)

    def _tree(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        if not self._root_looked_up:
            self._root_looked_up = True
            try:
                self.root = psutil.Process(self.pid)
            except psutil.Error:
                self.root = None
        # Once the script has been reaped (the run's last measure), only the
        # processes already seen are left to read: children() would scan
        # every process of the host for nothing.
        if self.root is not None and self.root.is_running():
            try:
                found[self.root.pid] = self.root
                for child in self.root.children(recursive=True):
                    found[child.pid] = self.procs.get(child.pid, child)
            except psutil.Error:
                pass
        for pid, proc in self.procs.items():
            if pid not in found and proc.is_running():
                found[pid] = proc
        return list(found.values())

    def _measure(self, now: float) -> None:
        rss_total = 0
        running = 0  # processes still running: a zombie has ended already
        alive: set[int] = set()
        for proc in self._tree():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss = proc.memory_info().rss
                    ppid = proc.ppid()
                    zombie = proc.status() == psutil.STATUS_ZOMBIE
            except psutil.Error:
                continue
            alive.add(proc.pid)
            self.procs[proc.pid] = proc
            self.parents[proc.pid] = ppid
            # A process's own time plus that of the children it has waited
            # for; a child that ends is then counted by its parent.
            self.cpu_of[proc.pid] = (
                times.user + times.system + times.children_user + times.children_system
            )
            if not zombie:
                running += 1
                self.measured = True
                rss_total += rss
                self.peak_rss = max(self.peak_rss, _high_water_rss(proc.pid))
        for pid in [p for p in self.procs if p not in alive]:
            # A child reaped by a parent still in the tree is in the parent's
            # children_* times; only an orphan's last figure is kept here.
            if self.parents.get(pid) not in alive:
                self.cpu_gone += self.cpu_of.get(pid, 0.0)
            del self.procs[pid]
            self.parents.pop(pid, None)
            self.cpu_of.pop(pid, None)
        # Never go down: a figure that was read stays spent.
        self.cpu_seconds = max(self.cpu_seconds, self.cpu_gone + sum(self.cpu_of.values()))
        self.peak_rss = max(self.peak_rss, rss_total)
        self.rss_now, self.processes_now = rss_total, running
        percent = 0.0
        if self.last_cpu is not None and now > self.last_cpu[0]:
            percent = 100.0 * (self.cpu_seconds - self.last_cpu[1]) / (now - self.last_cpu[0])
        self.last_cpu = (now, self.cpu_seconds)
        if running:
            self._add_point(now - self.started, max(0.0, percent), rss_total, running)

    # -- the compact series ---------------------------------------------
    def _add_point(self, t: float, cpu: float, rss: int, procs: int) -> None:
        if self.bucket and t - self.bucket_start >= self.step:
            self._flush_bucket()
        if not self.bucket:
            self.bucket_start = t
        self.bucket.append((t, cpu, rss, procs))

    def _bucket_point(self) -> list[float]:
        # Mean CPU over the bucket, but the most memory and processes seen:
        # a peak must survive the compaction.
        n = len(self.bucket)
        return [
            round(self.bucket_start, 1),
            round(sum(b[1] for b in self.bucket) / n, 1),
            max(b[2] for b in self.bucket),
            max(b[3] for b in self.bucket),
        ]

    def _flush_bucket(self) -> None:
        if not self.bucket:
            return
        self.series.append(self._bucket_point())
        self.bucket = []
        if len(self.series) >= self.max_points:
            self.series = [_merge(self.series[i : i + 2]) for i in range(0, len(self.series), 2)]
            self.step *= 2


def _merge(points: list[list[float]]) -> list[float]:
    return [
        points[0][0],
        round(sum(p[1] for p in points) / len(points), 1),
        max(p[2] for p in points),
        max(p[3] for p in points),
    ]
