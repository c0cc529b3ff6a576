"""Run one queued run's executor in this process, as a cluster worker would,
and print its wall time and this process's peak memory (P3). The driver
compares that with the script piped into cat."""

from __future__ import annotations

import json
import resource
import sys
import time

import django


def main() -> None:
    django.setup()
    from runs.executor import execute_run
    from runs.models import Run

    run_id = int(sys.argv[1])
    # What the process holds before the run (Django, the executor's imports).
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    outcome = execute_run(run_id)
    elapsed = time.perf_counter() - start
    run = Run.objects.get(pk=run_id)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "outcome": outcome,
                "log_size": run.log_size,
                "rss_before": before,
                "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
