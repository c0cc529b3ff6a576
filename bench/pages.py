"""P5: the pages and the runs API with a small and a large history. Each
database is prepared once (migrate + bench.bulk), then measured in a fresh
process through Django's test client (the view, its queries and its
template, without the network), an older page of a filtered run list
included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(folder: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="taskrun.settings",
        DATA_DIR=str(folder / "var"),
        TASKS_DIR=str(folder / "tasks"),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    if url:
        env["DATABASE_URL"] = url
    return env


def prepare(folder: Path, url: str, runs: int) -> float:
    """Migrate a fresh database and fill it; returns the generator's seconds."""
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    if url:
        from bench.setups import reset_postgres

        reset_postgres(url)
    env = _env(folder, url)
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.pages", "prepare", str(runs)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def measure(folder: Path, url: str, requests: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.pages", "measure", str(requests)],
        cwd=ROOT,
        env=_env(folder, url),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _p95(values: list[float]) -> float:
    from bench.suite import percentile

    return percentile(values, 0.95)


def _measure(requests: int) -> dict[str, float]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from runs.models import Run, Task

    user = get_user_model().objects.filter(username="bench").first()
    client = Client(HTTP_HOST="localhost")
    client.force_login(user)
    task = Task.objects.filter(name__startswith="bulk-").order_by("name")[1]
    # A finished run some way down the history (not timed: count() is slow).
    middle = Run.objects.order_by("-id").values_list("pk", flat=True)[
        min(500, Run.objects.count() // 2)
    ]
    from runs.views import RUNS_PAGE_SIZE, _live_version

    # A live run as its open page polls it (several times a second): at the
    # end of its log, with the version of the parts it shows.
    live = Run.objects.filter(status=Run.Status.RUNNING).order_by("id").first()

    # The cursor of the 2nd page, as the 1st page's "Older" link has it.
    def second_page(**where) -> int:
        ids = Run.objects.filter(**where).order_by("-id").values_list("pk", flat=True)
        return ids[min(RUNS_PAGE_SIZE, ids.count()) - 1]

    newest_failed = Run.objects.filter(status="failed").order_by("-id").values_list("pk", flat=True)
    urls = {
        "dashboard": "/",
        # A rare state and a common filter, each a page older than a cursor.
        # For the rare one the cursor is its newest run: one run in twenty
        # failed, so with 1,000 runs its true 2nd page is empty, and the
        # ratio compared an empty page with a full one (49 rows at 1,000
        # runs, 50 at 1,000,000 this way).
        "run list, failed, before the newest": f"/runs/?status=failed&before={newest_failed[0]}",
        "run list, scheduled, 2nd page": (
            f"/runs/?trigger=schedule&before={second_page(trigger='schedule')}"
        ),
        "task page": f"/tasks/{task.name}/",
        "run page": f"/runs/{middle}/",
        "run page live poll": (
            f"/runs/{live.pk}/live?offset={live.log_size}&version={_live_version(live)}"
        ),
        "GET /api/tasks/runs": "/api/tasks/runs",
    }
    timings: dict[str, list[float]] = {name: [] for name in urls}
    for url in urls.values():  # warm: templates, connection
        assert client.get(url).status_code == 200, url
    for _ in range(requests):
        for name, url in urls.items():
            t0 = time.perf_counter()
            response = client.get(url)
            timings[name].append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
    return {name: _p95(values) for name, values in timings.items()}


def main() -> None:
    import django

    django.setup()
    command, number = sys.argv[1], int(sys.argv[2])
    if command == "prepare":
        from django.contrib.auth import get_user_model

        from bench import bulk

        get_user_model().objects.create_superuser("bench", "", "bench-password-1")
        started = time.perf_counter()
        bulk.generate(number)
        print(json.dumps({"seconds": time.perf_counter() - started}))
    else:
        print(json.dumps(_measure(number)))


if __name__ == "__main__":
    main()
