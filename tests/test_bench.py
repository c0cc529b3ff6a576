"""The benchmark suite cannot rot: `make bench-quick`'s code paths run here at
a tiny scale, and the bulk generator's rows are valid runs. Timings never
fail a test; only that every measure produced figures."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from bench import bulk
from runs.models import Run, Task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.django_db(transaction=True)
def test_bulk_generator_makes_valid_runs(client, django_user_model):
    ids = bulk.generate(400, tasks=7, per_day=40, batch=150, live=2)

    assert Task.objects.filter(pk__in=ids).count() == 7
    runs = Run.objects.filter(task_id__in=ids)
    assert runs.count() == 402
    # Every task got its share, and the states are those of a real history.
    per_task = {t: runs.filter(task_id=t).count() for t in ids}
    assert min(per_task.values()) >= 400 // 7
    states = set(runs.values_list("status", flat=True))
    assert {"succeeded", "failed", "timed_out", "running"} <= states
    assert runs.filter(status="running").count() == 2
    # Each row is a valid Run: the model's own validation, sane times.
    now = timezone.now()
    for run in runs.order_by("?")[:40]:
        run.full_clean()
        if run.finished_at:
            assert run.queued_at <= run.started_at < run.finished_at <= now + timedelta(minutes=1)
            assert (run.exit_code == 0) == (run.status == "succeeded")
    assert runs.filter(queued_at__lt=now - timedelta(days=11)).count() == 0
    # And the pages read them.
    client.force_login(django_user_model.objects.create_superuser("admin", "", "pw"))
    for url in (
        "/",
        "/runs/?status=failed",
        f"/tasks/{Task.objects.get(pk=ids[0]).name}/",
        f"/runs/{runs.filter(status='failed').first().pk}/",
        "/api/tasks/runs",
    ):
        assert client.get(url).status_code == 200, url


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="the suite makes its own databases; once per `make test` is enough",
)
def test_tiny_suite_measures_everything(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TMPDIR=str(tmp_path), DJANGO_SETTINGS_MODULE="taskrun.settings")
    env.pop("PYTEST_XDIST_WORKER", None)
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(tmp_path / "RESULTS.md")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=850,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    table = (tmp_path / "RESULTS.md").read_text()
    for row in (
        "| P1 | direct",
        "| P1 | taskrun-sqlite",
        "| P2 median | taskrun-sqlite",
        "| P2 idle CPU | taskrun-sqlite",
        "| P3 | taskrun supervisor",
        "| P4 p95 |",
        "| P5 p95 | sqlite dashboard",
        "| P7 | taskrun-sqlite cluster",
    ):
        assert row in table, row
    assert connection.vendor  # the test database was not touched


def test_the_executor_cpu_probe_runs_trivial_runs_and_prints_its_figures(tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TMPDIR=str(tmp_path))
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def probe(runs: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bench.executor_cpu", "--runs", runs]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )

    out = probe("3")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["runs"] == 3
    assert 0 < figures["cpu_ms_per_run"] < figures["wall_ms_per_run"] * 2
    assert list(tmp_path.iterdir()) == []  # its folder is gone

    bad = probe("0")
    assert bad.returncode == 2 and "--runs must be at least 1" in bad.stderr


def test_the_cpu_account_groups_every_process_of_a_p1_rep(tmp_path):
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TMPDIR=str(tmp_path))
    env.pop("DJANGO_SETTINGS_MODULE", None)

    def account(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bench.account", "--setup", "taskrun-sqlite", *args]
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    out = account("--runs", "4", "--reps", "1")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [figures] = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("cluster", "starting process", "the machine, busy"):
        assert figures[name] > 0, (name, figures)
    assert list(tmp_path.iterdir()) == []  # its folder is gone

    bad = account("--runs", "0")
    assert bad.returncode == 2 and "--runs and --reps must be at least 1" in bad.stderr


def test_the_cpu_account_charges_each_process_what_it_spent_during_the_rep():
    from bench.account import account

    ms = 1_000_000  # ns
    before = {
        10: (5 * ms, "python manage.py qcluster"),
        11: (1 * ms, "postgres: 15/main: postgres h_perf 127.0.0.1(5) idle"),
        12: (9 * ms, "python -m bench.agent"),  # its pid is reused below
    }
    after = {
        10: (9 * ms, "python manage.py qcluster"),
        11: (4 * ms, "postgres: 15/main: postgres h_perf 127.0.0.1(5) idle"),
        12: (2 * ms, "redis-server 127.0.0.1:7000"),  # new: all of it counts
        13: (1 * ms, "postgres: 15/main: walwriter"),  # new
    }
    figures = account(before, after, busy=0.030, runs=2)
    assert figures == pytest.approx(
        {
            "cluster": 2.0,
            "PostgreSQL": 1.5,
            "Redis": 1.0,
            "PostgreSQL (its own)": 0.5,
            "exited (the scripts)": 10.0,  # 30 ms busy − 10 ms above, per run
            "the machine, busy": 15.0,
        }
    )
