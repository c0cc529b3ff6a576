"""What taskrun adds to running a script: N trivial runs through a real
cluster (2 workers, the default SQLite + ORM broker install, or DATABASE_URL)
against the same script started directly, 2 at a time. Prints figures; it is
not a test.

    .venv/bin/python bench/overhead.py [--runs 300] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = 'print("hello")\n'


def direct(script: Path, runs: int) -> float:
    def one(_):
        subprocess.run([sys.executable, "-u", str(script)], capture_output=True, check=True)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(one, range(runs)))
    return time.perf_counter() - start


def through_taskrun(env: dict[str, str], runs: int) -> float:
    """Queue ``runs`` runs over as many tasks, wait until all have ended."""
    code = f"""
import time
from runs import services
from runs.models import Run, Task
tasks = list(Task.objects.filter(name__startswith="bench").order_by("name")[:{runs}])
start = time.perf_counter()
for task in tasks:
    services.start_run(task)
while Run.objects.filter(status__in=Run.Status.active()).exists():
    time.sleep(0.01)
elapsed = time.perf_counter() - start
bad = Run.objects.exclude(status="succeeded").count()
Run.objects.all().delete()
print(elapsed if not bad else -bad)
"""
    out = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    value = float(out.stdout.strip().splitlines()[-1])
    if value < 0:
        raise SystemExit(f"{-value:.0f} run(s) did not succeed")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    opts = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="taskrun-bench-") as tmp:
        tasks_dir = Path(tmp) / "tasks"
        tasks_dir.mkdir()
        for i in range(opts.runs):
            (tasks_dir / f"bench{i:04d}.py").write_text(SCRIPT)
        env = dict(
            os.environ,
            DATA_DIR=str(Path(tmp) / "var"),
            TASKS_DIR=str(tasks_dir),
            MAX_TASK_WORKERS="2",
            LOG_LEVEL="WARNING",
        )
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        subprocess.run(
            [*manage, "sync_tasks", "-v0"], cwd=ROOT, env=env, check=True, capture_output=True
        )
        cluster = subprocess.Popen(
            [*manage, "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            time.sleep(3)  # let the cluster start
            pairs = []
            for rep in range(opts.reps):  # interleaved: direct, then taskrun
                d = direct(tasks_dir / "bench0000.py", opts.runs)
                t = through_taskrun(env, opts.runs)
                pairs.append((d, t))
                print(f"rep {rep + 1}: direct {d:.2f} s, taskrun {t:.2f} s, ratio {t / d:.2f}")
        finally:
            cluster.send_signal(signal.SIGTERM)
            cluster.wait(timeout=60)
    ds, ts = zip(*pairs, strict=True)
    ratios = [t / d for d, t in pairs]
    print(f"\n{opts.runs} trivial runs, 2 at a time, {opts.reps} reps")
    print(f"direct   min {min(ds):.2f}  median {statistics.median(ds):.2f}  max {max(ds):.2f} s")
    print(f"taskrun  min {min(ts):.2f}  median {statistics.median(ts):.2f}  max {max(ts):.2f} s")
    print(f"ratio (median of paired reps): {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
