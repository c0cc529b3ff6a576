"""Resource limits of a run: the task's own, else the RUN_* settings.

Memory and CPU apply to the script's whole process tree: the supervisor sums
the tree about once a second (runs.usage) and stops the run when it goes over.
rlimits set at exec are the backstop for each process: CPU time (SIGXCPU),
address space (a runaway allocation between two samples) and open files."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from django.conf import settings

MB = 1 << 20


@dataclass(frozen=True)
class RunLimits:
    memory_mb: int | None
    cpu_seconds: int | None
    output_mb: float | None
    max_processes: int
    open_files: int

    @classmethod
    def for_task(cls, task) -> RunLimits:
        def pick(own, default):
            return own if own is not None else default

        return cls(
            memory_mb=pick(task.memory_mb, settings.RUN_MEMORY_MB),
            cpu_seconds=pick(task.cpu_seconds, settings.RUN_CPU_SECONDS),
            output_mb=pick(task.output_mb, settings.RUN_OUTPUT_MB),
            max_processes=settings.RUN_MAX_PROCESSES,
            open_files=settings.RUN_OPEN_FILES,
        )

    @property
    def output_bytes(self) -> int | None:
        return int(self.output_mb * MB) if self.output_mb else None

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) to set in the child before exec."""
        limits = []
        if self.cpu_seconds:
            # SIGXCPU at the soft limit, SIGKILL at the hard one.
            limits.append((resource.RLIMIT_CPU, self.cpu_seconds, self.cpu_seconds + 5))
        if self.memory_mb:
            # Address space is far larger than resident memory for Python
            # (reserved arenas, thread stacks): only a backstop.
            space = (2 * self.memory_mb + 256) * MB
            limits.append((resource.RLIMIT_AS, space, space))
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        files = self.open_files if hard == resource.RLIM_INFINITY else min(self.open_files, hard)
        limits.append((resource.RLIMIT_NOFILE, files, files))
        return limits

    def exceeded(self, rss: int, cpu_seconds: float, processes: int) -> str | None:
        """The reason to stop a tree with these figures, if it is over a limit."""
        if self.memory_mb and rss > self.memory_mb * MB:
            return f"memory limit {self.memory_mb} MB reached ({rss // MB} MB)"
        if self.cpu_seconds and cpu_seconds > self.cpu_seconds:
            return f"CPU limit {self.cpu_seconds} s reached"
        if processes > self.max_processes:
            return f"process limit {self.max_processes} reached ({processes} processes)"
        return None

    def explain_exit(self, returncode: int | None, log_tail: bytes) -> str | None:
        """Why a script that died by itself may have hit a limit's backstop."""
        import signal

        if self.cpu_seconds and returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            return f"CPU limit {self.cpu_seconds} s reached"
        if self.memory_mb and b"MemoryError" in log_tail:
            return f"memory limit {self.memory_mb} MB reached"
        return None
