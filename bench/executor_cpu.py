"""The executor's own CPU per trivial run, for profiling between full runs of
the suite: ``python -m bench.executor_cpu [--runs N]``.

N trivial runs (each of its own task, as in P1) are executed one after the
other in this process, as a cluster worker executes them, on a fresh SQLite
database in a temporary folder. Printed: this process's CPU per run (the
scripts' own CPU is not in it) and the wall time per run. Throughput on two
cores is mostly the scripts' CPU plus this figure, so a change to the claim,
the supervisor or the end shows here without the cluster's noise. Single
runs still vary by about ±10 % on a shared machine: run it several times
at each of two commits, interleaved, and compare the medians."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    opts = parser.parse_args(argv)
    if opts.runs < 1:
        parser.error("--runs must be at least 1")
    folder = tempfile.mkdtemp(prefix="taskrun-executor-cpu-")
    try:
        print(json.dumps(measure(folder, opts.runs)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(folder: str, runs: int) -> dict:
    tasks_dir = os.path.join(folder, "tasks")
    os.makedirs(tasks_dir)
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="taskrun.settings",
        DATA_DIR=folder,
        TASKS_DIR=tasks_dir,
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from django.core.management import call_command

    from runs import services
    from runs.executor import execute_run
    from runs.models import Run, Task

    call_command("migrate", verbosity=0)
    warm = min(10, runs)
    tasks = []
    for i in range(warm + runs):
        with open(os.path.join(tasks_dir, f"bench_{i:04d}.py"), "w") as fh:
            fh.write('print("hello")\n')
        tasks.append(Task.objects.create(name=f"bench_{i:04d}"))
    for task in tasks[:warm]:
        execute_run(services.start_run(task).pk)
    queued = [services.start_run(task).pk for task in tasks[warm:]]
    cpu, wall = time.process_time(), time.perf_counter()
    for run_id in queued:
        execute_run(run_id)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    failed = Run.objects.exclude(status=Run.Status.SUCCEEDED).count()
    if failed:
        raise SystemExit(f"{failed} run(s) did not succeed")
    return {
        "runs": runs,
        "cpu_ms_per_run": round(cpu / runs * 1000, 3),
        "wall_ms_per_run": round(wall / runs * 1000, 2),
    }


if __name__ == "__main__":
    main()
