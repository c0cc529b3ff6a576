"""Where a trivial run's CPU goes: P1 on one set-up, with the CPU time of
every process on the machine, grouped, per run.

    .venv/bin/python -m bench.account --setup taskrun-postgres --runs 300 --reps 2

It prints a line per rep, then the figures as JSON.
The groups: the cluster (``qcluster``), the process that starts the runs
(``bench.agent``), PostgreSQL's backends and its own processes, Celery's
workers, Redis, and the rest. Each process's CPU time is read from
``/proc/<pid>/task/*/schedstat`` (nanoseconds) before and after each rep;
what exited meanwhile — the scripts, mostly — is the machine's busy time
(``/proc/stat``) minus what the remaining processes spent. PostgreSQL is
``BENCH_PG``'s server, as in the suite; Redis is a private one."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from bench import setups
from bench.suite import PG_BASE

SETUPS = ("direct", "taskrun-sqlite", "taskrun-postgres", "taskrun-redis", "celery-redis")
_PG_OWN = ("walwriter", "checkpointer", "background writer", "autovacuum", "logical", "stats")


def cpu_by_process() -> dict[int, tuple[int, str]]:
    """pid → (CPU nanoseconds of all its threads, command line)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/cmdline", "rb") as fh:
                command = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
            total = 0
            for thread in os.scandir(f"{entry.path}/task"):
                with open(f"{thread.path}/schedstat") as fh:
                    total += int(fh.read().split()[0])
        except OSError:
            continue  # Gone meanwhile, or a kernel thread's unreadable entry.
        found[int(entry.name)] = (total, command)
    return found


def busy_seconds() -> float:
    """The machine's CPU time spent on anything but idle and I/O wait."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def group(command: str) -> str:
    if command.startswith("postgres"):
        return "PostgreSQL (its own)" if any(p in command for p in _PG_OWN) else "PostgreSQL"
    for needle, name in (
        ("qcluster", "cluster"),
        ("bench.agent", "starting process"),
        ("celery", "Celery"),
        ("redis-server", "Redis"),
    ):
        if needle in command:
            return name
    return "the rest"


def account(before: dict, after: dict, busy: float, runs: int) -> dict[str, float]:
    """ms of CPU per run by group; what exited is ``busy`` minus the rest."""
    groups: dict[str, float] = {}
    for pid, (ns, command) in after.items():
        earlier = before.get(pid)
        spent = ns - (earlier[0] if earlier and earlier[1] == command else 0)
        name = group(command)
        groups[name] = groups.get(name, 0.0) + spent / 1e6
    groups["exited (the scripts)"] = busy * 1000 - sum(groups.values())
    groups["the machine, busy"] = busy * 1000
    return {name: ms / runs for name, ms in groups.items()}


def make_setup(name: str, base: Path, runs: int, redis: setups.PrivateRedis):
    if name == "direct":
        return setups.Direct(base, runs)
    if name == "taskrun-sqlite":
        return setups.Taskrun(name, base, runs)
    if name == "taskrun-postgres":
        return setups.Taskrun(name, base, runs, database_url=f"{PG_BASE}_taskrun")
    if name == "taskrun-redis":
        return setups.Taskrun(name, base, runs, redis_url=redis.url(1))
    return setups.CeleryRedis(name, base, runs, redis.url(3))


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", choices=SETUPS, default="taskrun-sqlite")
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=2)
    opts = parser.parse_args(argv)
    if opts.runs < 1 or opts.reps < 1:
        parser.error("--runs and --reps must be at least 1")
    reps = []
    with tempfile.TemporaryDirectory(prefix="taskrun-account-") as tmp:
        base = Path(tmp)
        redis = setups.PrivateRedis(base / "redis")
        redis.start()
        setup = make_setup(opts.setup, base, opts.runs, redis)
        try:
            setup.start()
            for rep in range(opts.reps):
                before, busy = cpu_by_process(), busy_seconds()
                seconds = setup.throughput(opts.runs)
                busy, after = busy_seconds() - busy, cpu_by_process()
                figures = account(before, after, busy, opts.runs)
                reps.append(figures)
                shown = ", ".join(
                    f"{name} {ms:.2f}" for name, ms in sorted(figures.items()) if ms >= 0.01
                )
                print(f"{opts.setup} rep {rep + 1}: {seconds:.2f} s; ms of CPU per run: {shown}")
        finally:
            setup.stop()
            redis.stop()
    print(json.dumps(reps))  # For scripts: one object per rep.
    return reps


if __name__ == "__main__":
    main()
