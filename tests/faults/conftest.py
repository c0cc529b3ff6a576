"""Fault injection: real clusters, real databases, real signals and real
network cuts. What every scenario shares:

- ``FAULTS_SCALE``: ``ci`` (default, every scenario in its short form) or
  ``full`` (``make faults``). ``scaled(ci, full)`` picks the value.
- ``FAULTS_FIGURES``: a JSON-lines file the scenarios append their figures
  to; ``devtools/faults.py`` turns it into docs/reliability.md.
- Probe scripts that record their own start and end in a ledger, and hold an
  flock on a per-task file while alive: a second script of the task that
  finds the lock taken writes ``overlap`` — the kernel, not a clock, says
  whether two scripts of one task were alive at once.
- A private PostgreSQL, a private Redis and a network namespace, each
  started by the test and always torn down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, ClusterProcess, wait_for

SCALE = os.environ.get("FAULTS_SCALE", "ci")
PG_BIN = Path(os.environ.get("FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))


def scaled(ci, full):
    return full if SCALE == "full" else ci


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: fault-injection scenario (tests/faults)")


def record_figures(scenario: str, **figures) -> None:
    """Append one scenario's figures for docs/reliability.md."""
    figures = {"scenario": scenario, "scale": SCALE, **figures}
    print(f"\nFIGURES {json.dumps(figures)}")
    path = os.environ.get("FAULTS_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(figures) + "\n")


# --- probe scripts and their ledger ---------------------------------------

PROBE = """\
import fcntl, os, sys, time

LEDGER = {ledger!r}
RUN = os.environ["TASKRUN_RUN_ID"]


def note(word):
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{{word}} {{RUN}} {{os.getpid()}} {{time.time():.3f}}\\n".encode())
    os.close(fd)


lock = open({lock!r}, "w")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    note("overlap")
note("start")
seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.1
if len(sys.argv) > 3 and os.environ.get("TASKRUN_ATTEMPT", "1") != "1":
    seconds = float(sys.argv[3])  # a retry's own length
code = int(sys.argv[2]) if len(sys.argv) > 2 else 0
print("working", flush=True)
time.sleep(seconds)
note("end")
sys.exit(code)
"""


@dataclass
class Entry:
    word: str
    run: int
    pid: int
    at: float


@dataclass
class Ledger:
    """What the probe scripts of one test wrote about themselves."""

    folder: Path
    entries: list[Entry] = field(default_factory=list)

    def script(self, task: str) -> str:
        return PROBE.format(
            ledger=str(self.folder / f"{task}.ledger"), lock=str(self.folder / f"{task}.lock")
        )

    def read(self) -> Ledger:
        self.entries = []
        for path in sorted(self.folder.glob("*.ledger")):
            for line in path.read_text().splitlines():
                word, run, pid, at = line.split()
                self.entries.append(Entry(word, int(run), int(pid), float(at)))
        return self

    def overlaps(self) -> list[int]:
        return [e.run for e in self.read().entries if e.word == "overlap"]

    def started(self) -> list[int]:
        return [e.run for e in self.read().entries if e.word == "start"]

    def twice_started(self) -> list[int]:
        runs = self.started()
        return sorted({r for r in runs if runs.count(r) > 1})

    def pids(self) -> list[int]:
        return [e.pid for e in self.read().entries if e.word == "start"]


@pytest.fixture
def clusters(tasks_dir, tmp_path, transactional_db):
    """Clusters on the test's own database."""
    from tests.conftest import subprocess_env

    made = Clusters(lambda **env: subprocess_env(tasks_dir, **env), tmp_path)
    try:
        yield made
    finally:
        made.kill_all()


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    folder = tmp_path / "ledger"
    folder.mkdir()
    return Ledger(folder)


def script_processes(run_ids, tasks_dir: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes of these runs on this host: TASKRUN_RUN_ID
    in their environment, and a script from this test's TASKS_DIR (other
    tests on the machine have runs with the same ids)."""
    wanted = {str(r) for r in run_ids}
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("TASKRUN_RUN_ID") not in wanted:
                continue
            if not any(str(tasks_dir) in part for part in proc.cmdline()):
                continue
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def describe(pids) -> list[str]:
    """What a left-over process is, for an assertion message."""
    out = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.append(
                f"{pid} ppid={p.ppid()} {p.status()} run={p.environ().get('TASKRUN_RUN_ID')} "
                f"age={time.time() - p.create_time():.1f}s {' '.join(p.cmdline())[:120]}"
            )
        except psutil.Error as exc:
            out.append(f"{pid} gone ({exc.__class__.__name__})")
    return out


def orphans(run_ids, tasks_dir: Path, ledger: Ledger | None = None) -> list[int]:
    """Script processes still alive: by run id, and by the pids the probes
    wrote (in case a script changed its environment)."""
    alive = {p.pid for p in script_processes(run_ids, tasks_dir)}
    started = {e.pid: e.at for e in ledger.read().entries if e.word == "start"} if ledger else {}
    for pid, at in started.items():
        try:
            proc = psutil.Process(pid)
            # The same process, not a later one that got its pid.
            if proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= at:
                alive.add(pid)
        except psutil.Error:
            pass
    return sorted(alive)


# --- clusters that can crash ------------------------------------------------


class Clusters:
    """Real qclusters that the test may SIGKILL (whole process group, like a
    machine going away) and start again."""

    def __init__(self, env_for, folder: Path):
        self.env_for = env_for
        self.folder = folder
        self.live: dict[str, FaultCluster] = {}
        self.every: list[FaultCluster] = []
        self.starts = 0

    def start(self, name: str, wait: bool = True, prefix=(), **env) -> FaultCluster:
        self.starts += 1
        log = self.folder / f"cluster-{name}.log"
        proc = FaultCluster(self.env_for(WORKER_HOST=f"host-{name}", **env), log, prefix)
        self.live[name] = proc
        self.every.append(proc)
        if wait:
            proc.wait_ready(timeout=60)
        return proc

    def crash(self, name: str) -> None:
        proc = self.live.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.proc.wait()

    def count_in_logs(self, needle: bytes) -> int:
        return sum(path.read_bytes().count(needle) for path in self.folder.glob("cluster-*.log"))

    def stop_all(self, timeout: float = 30) -> list[int]:
        codes = [proc.stop(timeout=timeout) for proc in self.live.values()]
        self.live.clear()
        return codes

    def kill_all(self) -> None:
        for proc in self.every:
            proc.kill()


class FaultCluster(ClusterProcess):
    """tests.conftest.ClusterProcess, optionally run through a prefix (such
    as ``ip netns exec <ns>``)."""

    def __init__(self, env: dict[str, str], log_path: Path, prefix=()):
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(ROOT / "manage.py"), "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if not self.log.closed:
            super().kill()


def worker_pids(cluster: FaultCluster) -> list[int]:
    return [p.pid for p in psutil.Process(cluster.pid).children(recursive=True)]


# --- a private PostgreSQL -----------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        cmd = ("runuser", "-u", "postgres", "--", *cmd)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary folder on a port
    of its own. Never the shared server."""

    def __init__(self, listen: str = "127.0.0.1"):
        self.folder = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()
        self.listen = listen
        self.log = self.folder / "server.log"
        _as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip

    def url(self, host: str = "127.0.0.1", name: str = "taskrun") -> str:
        return f"postgres://postgres@{host}:{self.port}/{name}"

    def start(self) -> None:
        hba = self.data / "pg_hba.conf"
        if self.listen != "127.0.0.1" and "faults" not in hba.read_text():
            # Clients in the test's network namespaces (10.251.x.x).
            with hba.open("a") as fh:
                fh.write("\n# faults\nhost all all 10.251.0.0/16 trust\n")
        options = (
            f"-k {self.folder} -p {self.port} -c listen_addresses='{self.listen}' "
            "-c fsync=off -c max_connections=200"
        )
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
            check=False,
        )  # fmt: skip

    def restart(self) -> None:
        self.stop(mode="immediate")
        self.start()

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = _as_postgres(
            str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql",
            "-h", str(self.folder), "-p", str(self.port), "-U", "postgres", "-d", db,
            "-At", "-c", sql,
        )  # fmt: skip
        return out.stdout.strip()

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def _pg_available() -> str | None:
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN} (set FAULTS_PG_BIN)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user for initdb"
    return None


@pytest.fixture
def private_pg():
    """Start a private PostgreSQL; yields a factory so a test may choose the
    listen addresses (a network namespace needs its veth address)."""
    made: list[PrivatePostgres] = []

    def make(listen: str = "127.0.0.1") -> PrivatePostgres:
        if why := _pg_available():
            pytest.skip(why)
        pg = PrivatePostgres(listen)
        made.append(pg)
        pg.start()
        pg.psql("CREATE DATABASE taskrun")
        return pg

    try:
        yield make
    finally:
        for pg in made:
            pg.destroy()


def pg_only() -> None:
    """Scenarios on a private PostgreSQL run once: in the PostgreSQL pass of
    ``make test`` (or always under ``make faults``)."""
    from django.db import connection

    if SCALE != "full" and connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass (a private server of its own)")


@pytest.fixture
def pg_clusters(tmp_path, tasks_dir):
    """Clusters on another database than the test's: ``pg_clusters(url)``."""
    made: list[Clusters] = []

    def make(url: str) -> Clusters:
        clusters = Clusters(lambda **env: ops_env(url, tasks_dir, **env), tmp_path)
        made.append(clusters)
        return clusters

    try:
        yield make
    finally:
        for clusters in made:
            clusters.kill_all()


def migrate(url: str, tasks_dir: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"],
        cwd=ROOT,
        env=ops_env(url, tasks_dir),
        check=True,
        timeout=180,
    )


def ops_env(url: str, tasks_dir: Path, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        DATABASE_URL=url,
        TASKS_DIR=str(tasks_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def ops(url: str, tasks_dir: Path, *args: str, timeout: float = 120, **env) -> dict:
    """Run ``python -m tests.faults.ops`` against another database than the
    test's own (a private PostgreSQL); returns its JSON answer."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.faults.ops", *args],
        cwd=ROOT,
        env=ops_env(url, tasks_dir, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise AssertionError(f"ops {args} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- a private Redis ------------------------------------------------------------


class PrivateRedis:
    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10, message="redis-server did not start")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def private_redis():
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


# --- a network namespace ----------------------------------------------------------


class Netns:
    """A network namespace joined to this one by a veth pair: the host side
    is ``host_ip``, the namespace side ``ns_ip``. ``cut()`` takes the link
    down (packets vanish, as in a partition); ``heal()`` brings it back."""

    def __init__(self, tag: str):
        self.name = f"faults-{tag}"
        self.host_if = f"fh{tag}"[:15]
        self.ns_if = f"fn{tag}"[:15]
        octet = 100 + int(tag) % 100
        self.host_ip = f"10.251.{octet}.1"
        self.ns_ip = f"10.251.{octet}.2"

    def create(self) -> None:
        run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        run("ip", "link", "set", self.ns_if, "netns", self.name)
        run("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        ns = ("ip", "netns", "exec", self.name)
        run(*ns, "ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
        run(*ns, "ip", "link", "set", self.ns_if, "up")
        run(*ns, "ip", "link", "set", "lo", "up")

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def cut(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "down"], check=True)

    def heal(self) -> None:
        subprocess.run(["ip", "link", "set", self.host_if, "up"], check=True)

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    ns = Netns(str(os.getpid() % 100))
    try:
        ns.create()
    except subprocess.CalledProcessError as exc:
        ns.destroy()
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        yield ns
    finally:
        ns.destroy()


def probe_script(ledger: Ledger, name: str) -> str:
    return textwrap.dedent(ledger.script(name))


def elapsed(since: float) -> float:
    return round(time.monotonic() - since, 1)
