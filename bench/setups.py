"""The set-ups the suite compares, each started from nothing into its own
folder, database and Redis database, and stopped at the end:

- Direct: the script started by hand (xargs -P 2, Popen).
- Taskrun: the project itself (cluster, web, agent) on SQLite, PostgreSQL or
  Redis, with its shipped settings or with extra environment.
- BareQ: django-q2 alone with taskrun's broker settings, running the same
  subprocess in its job.
- CeleryRedis: Celery 5 + Redis, prefork, concurrency 2, prefetch 1."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HELLO = 'print("hello")\n'
# The latency script: its first statement records when it began.
LATENCY = "import sys, time; open(sys.argv[1], 'w').write(repr(time.time()))\n"
CHATTY = "import sys\nfor i in range(int(sys.argv[1])):\n    print('line', i)\n"
TAIL = (
    "import sys, time\n"
    "for i in range(int(sys.argv[1])):\n"
    "    print('tick', repr(time.time()))\n"
    "    time.sleep(float(sys.argv[2]))\n"
)
WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, bytes."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def stop(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM to the main process only (a cluster drains its workers)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class PrivateRedis:
    """A redis-server of the benchmark's own, without persistence."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        stop(self.proc)

    def version(self) -> str:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        match = re.search(r"v=(\S+)", out.stdout)
        return match.group(1) if match else out.stdout.strip()


def write_scripts(folder: Path, runs: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(runs):
        (folder / f"bench_{i:04d}.py").write_text(HELLO)
    (folder / "latency.py").write_text(LATENCY)
    (folder / "chatty.py").write_text(CHATTY)
    (folder / "tail.py").write_text(TAIL)


def reset_postgres(url: str, create: bool = True) -> None:
    """Drop (and create again) the database named in ``url``: only one whose
    name starts with BENCH_PG's, never another one."""
    import psycopg

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    base = urllib.parse.urlsplit(os.environ.get("BENCH_PG", "postgres:///h_perf")).path.lstrip("/")
    assert name.startswith(base), f"{name} is not one of the bench's databases ({base}…)"
    admin = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


class Direct:
    name = "direct"
    kind = "direct"

    def __init__(self, base: Path, runs: int):
        self.folder = base / "direct"
        self.runs = runs

    def start(self) -> None:
        write_scripts(self.folder / "tasks", 1)

    def throughput(self, n: int) -> float:
        script = str(self.folder / "tasks" / "bench_0000.py")
        start = time.perf_counter()
        subprocess.run(
            ["xargs", "-P", str(WORKERS), "-n", "1", PYTHON, "-u"],
            input=(script + "\n") * n,
            text=True,
            stdout=subprocess.DEVNULL,
            check=True,
        )
        return time.perf_counter() - start

    def latency(self, out: Path) -> float:
        sent = time.time()
        proc = subprocess.Popen(
            [PYTHON, "-u", str(self.folder / "tasks" / "latency.py"), str(out)],
            stdout=subprocess.PIPE,
        )
        proc.communicate()
        return float(out.read_text()) - sent

    def stop(self) -> None:
        pass


class Agent:
    """The set-up's Django process (bench.agent)."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "bench.agent"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert json.loads(self.proc.stdout.readline()).get("ready")

    def __call__(self, op: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"agent {op}: {answer['error']}")
        return answer

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


class DjangoSetup:
    """What taskrun and bare django-q2 share: a folder, a database, a cluster
    and an agent."""

    settings_module = "taskrun.settings"
    kind = "django"

    def __init__(
        self,
        name: str,
        base: Path,
        runs: int,
        *,
        database_url: str = "",
        redis_url: str = "",
        env: dict[str, str] | None = None,
    ):
        self.name = name
        self.folder = base / name
        self.runs = runs
        self.database_url = database_url
        self.redis_url = redis_url
        self.extra_env = env or {}
        self.cluster: subprocess.Popen | None = None
        self.agent: Agent | None = None
        self.markers = self.folder / "markers"

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE=self.settings_module,
            DATA_DIR=str(self.folder / "var"),
            TASKS_DIR=str(self.folder / "tasks"),
            MAX_TASK_WORKERS=str(WORKERS),
            LOG_LEVEL="WARNING",
            PYTHONPATH=str(ROOT),
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        return env

    def manage(self, *args: str) -> None:
        subprocess.run(
            [PYTHON, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def prepare(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        write_scripts(self.folder / "tasks", self.runs)
        self.markers.mkdir(parents=True)
        if self.database_url.startswith("postgres"):
            reset_postgres(self.database_url)
        if self.redis_url:
            import redis

            redis.Redis.from_url(self.redis_url).flushdb()
        self.manage("migrate", "-v0")

    def start(self) -> None:
        self.prepare()
        self.cluster = subprocess.Popen(
            [PYTHON, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "cluster.err", "w"),
            start_new_session=True,
        )
        self.agent = Agent(self.env)
        self._wait_cluster()

    def _wait_cluster(self) -> None:
        # Workers are up when the cluster has 1 + pusher + monitor + WORKERS.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.cluster.poll() is not None:
                raise RuntimeError(
                    f"{self.name}: the cluster stopped; see {self.folder}/cluster.err"
                )
            try:
                kids = psutil.Process(self.cluster.pid).children(recursive=True)
            except psutil.Error:
                kids = []
            # The sentinel, its pusher and monitor, and the workers.
            if len(kids) >= WORKERS + 3:
                time.sleep(1.0)  # their first poll
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: the cluster did not start")

    def throughput(self, n: int) -> float:
        for marker in self.markers.iterdir():
            marker.unlink()
        scripts = [str(self.folder / "tasks" / f"bench_{i:04d}.py") for i in range(n)]
        seconds = self.agent("throughput", n=n, scripts=scripts, marker_dir=str(self.markers))[
            "seconds"
        ]
        self.agent("clean")
        return seconds

    def memory(self) -> dict[str, int]:
        return {"cluster": tree_rss(self.cluster.pid)}

    def idle_cpu(self, seconds: float) -> float:
        """Share of one core the idle cluster uses."""
        before = tree_cpu(self.cluster.pid)
        time.sleep(seconds)
        return (tree_cpu(self.cluster.pid) - before) / seconds

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        stop(self.cluster, timeout=60)
        if self.database_url.startswith("postgres"):
            reset_postgres(self.database_url, create=False)


class BareQ(DjangoSetup):
    settings_module = "bench.bare_settings"
    kind = "bare"

    def latency(self, out: Path) -> float:
        sent = self.agent(
            "enqueue", script=str(self.folder / "tasks" / "latency.py"), args=[str(out)]
        )["sent"]
        _wait_file(out)
        return float(out.read_text()) - sent


class Taskrun(DjangoSetup):
    kind = "taskrun"
    USER = "bench"
    PASSWORD = "bench-password-1"

    def __init__(self, *args, web: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.want_web = web
        self.web: subprocess.Popen | None = None
        self.port = free_port()
        self.token = ""
        self.opener: urllib.request.OpenerDirector | None = None

    def start(self) -> None:
        super().start()
        self.manage("sync_tasks", "-v0")
        self.token = self.agent("setup", username=self.USER, password=self.PASSWORD)["token"]
        if self.want_web:
            self.manage("collectstatic", "--noinput", "-v0")
            env = dict(self.env, WEB_WORKERS="2", WEB_THREADS="4")
            self.web = subprocess.Popen(
                [
                    PYTHON,
                    "-m",
                    "gunicorn",
                    "--config",
                    str(ROOT / "taskrun" / "gunicorn.conf.py"),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(self.folder / "web.err", "w"),
                start_new_session=True,
            )
            deadline = time.monotonic() + 30
            while True:
                try:
                    self.http("GET", "/health")
                    break
                except OSError as exc:
                    if time.monotonic() > deadline or self.web.poll() is not None:
                        raise RuntimeError(f"{self.name}: the web server did not start") from exc
                    time.sleep(0.1)

    def http(
        self, method: str, path: str, body: dict | None = None, token: bool = True, opener=None
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def login(self) -> urllib.request.OpenerDirector:
        """A browser-like session: the login form, its CSRF token and cookie."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        base = f"http://127.0.0.1:{self.port}"
        page = opener.open(f"{base}/accounts/login/").read().decode()
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode(
            {"username": self.USER, "password": self.PASSWORD, "csrfmiddlewaretoken": csrf}
        ).encode()
        request = urllib.request.Request(
            f"{base}/accounts/login/", data=data, headers={"Referer": base}
        )
        opener.open(request).read()
        return opener

    def execute(self, task: str, args: list[str]) -> int:
        status, _, body = self.http("POST", f"/api/tasks/{task}/execute", {"args": args})
        if status != 202:
            raise RuntimeError(f"execute {task}: {status} {body[:200]!r}")
        return json.loads(body)["run"]["id"]

    def latency(self, out: Path) -> float:
        sent = time.time()
        self.execute("latency", [str(out)])
        _wait_file(out)
        value = float(out.read_text()) - sent
        self.agent("wait_idle")
        return value

    def memory(self) -> dict[str, int]:
        figures = super().memory()
        if self.web is not None:
            figures["web"] = tree_rss(self.web.pid)
        return figures

    def stop(self) -> None:
        stop(self.web)
        super().stop()


class CeleryRedis:
    kind = "celery"

    def __init__(self, name: str, base: Path, runs: int, broker_url: str):
        self.name = name
        self.folder = base / name
        self.runs = runs
        self.broker_url = broker_url
        self.worker: subprocess.Popen | None = None
        self.markers = self.folder / "markers"

    def start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        write_scripts(self.folder / "tasks", self.runs)
        self.markers.mkdir(parents=True)
        os.environ["BENCH_CELERY_BROKER"] = self.broker_url
        import redis

        redis.Redis.from_url(self.broker_url).flushdb()
        from bench import celery_app

        celery_app.app.conf.broker_url = self.broker_url
        self.app = celery_app
        env = dict(os.environ, BENCH_CELERY_BROKER=self.broker_url, PYTHONPATH=str(ROOT))
        self.worker = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "bench.celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(WORKERS),
                "--prefetch-multiplier",
                "1",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.folder / "worker.err", "w"),
            start_new_session=True,
        )
        # Ready when a job goes through.
        marker = self.folder / "ready"
        self.app.run_script.delay(str(self.folder / "tasks" / "bench_0000.py"), None, str(marker))
        _wait_file(marker, 60, empty=True)
        time.sleep(0.5)

    def throughput(self, n: int) -> float:
        for marker in self.markers.iterdir():
            marker.unlink()
        script = str(self.folder / "tasks" / "bench_0000.py")
        start = time.perf_counter()
        for i in range(n):
            self.app.run_script.delay(script, None, str(self.markers / str(i)))
        deadline = time.monotonic() + 600
        while len(os.listdir(self.markers)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError("celery jobs did not end in time")
            time.sleep(0.005)
        return time.perf_counter() - start

    def latency(self, out: Path) -> float:
        sent = time.time()
        self.app.run_script.delay(str(self.folder / "tasks" / "latency.py"), [str(out)])
        _wait_file(out)
        return float(out.read_text()) - sent

    def memory(self) -> dict[str, int]:
        return {"cluster": tree_rss(self.worker.pid)}

    def idle_cpu(self, seconds: float) -> float:
        before = tree_cpu(self.worker.pid)
        time.sleep(seconds)
        return (tree_cpu(self.worker.pid) - before) / seconds

    def stop(self) -> None:
        stop(self.worker, timeout=30)


def _wait_file(path: Path, timeout: float = 30, empty: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if path.stat().st_size > 0 or empty:
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear")
        time.sleep(0.001)


def processes(setup) -> list[psutil.Process]:
    """Every live process of a set-up (to pause it while others are measured)."""
    roots = [getattr(setup, name, None) for name in ("cluster", "web", "worker")]
    agent = getattr(setup, "agent", None)
    if agent is not None:
        roots.append(agent.proc)
    found = []
    for proc in roots:
        if proc is None or proc.poll() is not None:
            continue
        try:
            root = psutil.Process(proc.pid)
            found += [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
    return found


def pause(setup) -> None:
    for p in processes(setup):
        try:
            p.suspend()
        except psutil.Error:
            pass


def resume(setup) -> None:
    for p in processes(setup):
        try:
            p.resume()
        except psutil.Error:
            pass
    time.sleep(0.3)  # let a poll that was due happen before the clock starts
