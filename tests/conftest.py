from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, connections

ROOT = Path(__file__).resolve().parent.parent
OUTPUT_DIR = ROOT / "test-output"


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = ""):
    """Poll ``predicate`` until it returns something truthy, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(message or f"condition not met within {timeout} s")
        time.sleep(interval)


def database_url() -> str:
    """A URL for the test database, for subprocesses."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    user = s.get("USER") or ""
    password = f":{s['PASSWORD']}" if s.get("PASSWORD") else ""
    host = s.get("HOST") or "127.0.0.1"
    port = s.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{s['NAME']}"


@pytest.fixture
def tasks_dir(tmp_path, settings):
    folder = tmp_path / "tasks"
    folder.mkdir()
    settings.TASKS_DIR = folder
    return folder


@pytest.fixture
def make_task(tasks_dir):
    """Write a script into the test's TASKS_DIR and create its Task."""
    from runs.models import Task

    def make(name: str, code: str, **fields) -> Task:
        (tasks_dir / f"{name}.py").write_text(textwrap.dedent(code))
        return Task.objects.create(name=name, **fields)

    return make


@pytest.fixture
def execute():
    """Run the executor in this process, as a django-q2 worker would."""
    from runs.executor import execute_run
    from runs.models import Run

    def run(run: Run) -> Run:
        execute_run(run.pk)
        if threading.current_thread() is not threading.main_thread():
            # Threads keep their own connections; close them so the test
            # database can be dropped at the end.
            connections.close_all()
            return run
        run.refresh_from_db()
        return run

    return run


def subprocess_env(tasks_dir: Path, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=database_url(),
        TASKS_DIR=str(tasks_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class ClusterProcess:
    """A real `manage.py qcluster` in a subprocess."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30) -> None:
        wait_for(
            lambda: b"running." in self.log_path.read_bytes() or self.proc.poll() is not None,
            timeout=timeout,
            message="cluster did not start",
        )
        assert self.proc.poll() is None, self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        """Graceful stop: SIGTERM to the main process only."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


@pytest.fixture
def cluster(tasks_dir, tmp_path, transactional_db):
    """Start real clusters; every one is killed at the end of the test."""
    started: list[ClusterProcess] = []

    def start(**env) -> ClusterProcess:
        log_path = tmp_path / f"cluster-{len(started)}.log"
        proc = ClusterProcess(subprocess_env(tasks_dir, **env), log_path)
        started.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in started:
        proc.kill()


# --- API callers: a user of each group of CONTRACT, through a bearer token ----


@pytest.fixture
def editor():
    from tests.api_client import Api, make_user

    return Api(make_user("Editors"))


@pytest.fixture
def operator():
    from tests.api_client import Api, make_user

    return Api(make_user("Operators"))


@pytest.fixture
def viewer():
    from tests.api_client import Api, make_user

    return Api(make_user("Viewers"))


@pytest.fixture
def nobody():
    """Logged in, but in no group."""
    from tests.api_client import Api, make_user

    return Api(make_user())


@pytest.fixture
def anonymous():
    from tests.api_client import Api

    return Api()
