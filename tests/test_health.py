"""/health, /api/system/health and `manage.py health`: fast, and honest about
what is down."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from monitor.health import alive_clusters
from runs import services
from runs.models import Run
from tests.api_client import Api, make_user
from tests.conftest import ROOT, database_url, subprocess_env, wait_for

# A /health request in a process of its own, timed around the request only.
PROBE = """
import json, time, django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
start = time.monotonic()
response = Client().get("/health")
print(json.dumps({"status": response.status_code, "body": response.json(),
                  "seconds": time.monotonic() - start}))
"""


def probe_health(tmp_path: Path, database_url: str, **extra: str) -> dict:
    env = subprocess_env(
        tmp_path, DATABASE_URL=database_url, DATA_DIR=str(tmp_path / "data"), **extra
    )
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return json.loads(out.stdout.decode().strip().splitlines()[-1])


@pytest.mark.django_db
def test_health_is_503_naming_the_workers_when_no_cluster_is_alive():
    # A cluster of an earlier test may still be in the cache for 3 seconds.
    wait_for(lambda: alive_clusters() == 0, timeout=10)
    start = time.monotonic()
    response = Client().get("/health")
    assert time.monotonic() - start < 2
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["checks"] == {"database": "ok", "broker": "ok", "workers": 0}
    assert body["failing"] == ["workers"]
    # Load balancers that probe with HEAD get the same status.
    assert Client().head("/health").status_code == 503


def test_health_is_503_fast_when_the_database_hangs(tmp_path):
    # A server that accepts connections and never answers: the connect would
    # wait for PostgreSQL's connect_timeout (5 s) without a deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        result = probe_health(tmp_path, f"postgres://taskrun@127.0.0.1:{port}/taskrun")
    assert result["status"] == 503
    assert result["seconds"] < 2
    assert result["body"]["checks"]["database"].startswith("error")
    assert "database" in result["body"]["failing"]


def test_health_is_503_fast_when_nothing_listens_on_the_database_port(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        result = probe_health(tmp_path, f"postgres://taskrun@127.0.0.1:{port}/taskrun")
    assert result["status"] == 503
    assert result["seconds"] < 2
    assert result["body"]["checks"]["database"].startswith("error")
    # The ORM broker lives in the same database.
    assert set(result["body"]["failing"]) == {"database", "broker", "workers"}


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.django_db
@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_with_redis_the_broker_check_is_a_ping(tmp_path):
    result = probe_health(tmp_path, database_url(), REDIS_URL="redis://127.0.0.1:6379/13")
    assert result["body"]["checks"]["broker"] == "ok"
    assert result["body"]["checks"]["database"] == "ok"
    assert result["status"] == 503 and result["body"]["failing"] == ["workers"]


@pytest.mark.django_db
def test_a_hanging_redis_fails_the_broker_check_fast(tmp_path):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        result = probe_health(tmp_path, database_url(), REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert result["status"] == 503
    assert result["seconds"] < 2
    assert result["body"]["checks"]["database"] == "ok"
    assert result["body"]["checks"]["broker"].startswith("error")
    assert set(result["body"]["failing"]) == {"broker", "workers"}


@pytest.mark.django_db
def test_health_command_exits_non_zero_when_a_check_fails(capsys):
    wait_for(lambda: alive_clusters() == 0, timeout=10)
    with pytest.raises(SystemExit) as exited:
        call_command("health")
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "database" in out and "UNHEALTHY: workers" in out


@pytest.mark.slow
def test_with_a_live_cluster_everything_is_healthy_and_busy_workers_are_counted(
    cluster, make_task, capsys
):
    from monitor.clusters import clusters
    from monitor.models import HostSample

    started = cluster()
    response = wait_for(lambda: (r := Client().get("/health")).status_code == 200 and r)
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert body["checks"]["workers"] >= 1
    assert Api(make_user("Viewers")).get("/api/system/health").status_code == 200
    call_command("health")  # no SystemExit: healthy
    assert "healthy" in capsys.readouterr().out

    def ours() -> dict:
        # A cluster of an earlier test may linger in the cache for a few seconds.
        return next(c for c in clusters() if c["pid"] == started.pid)

    live = ours()
    assert live["workers"] == 3 and live["busy"] == 0
    assert live["host"] and live["seconds_since_heartbeat"] < 60
    task = make_task("nap", "import time; time.sleep(30)")
    run = services.start_run(task)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.RUNNING)
    wait_for(lambda: ours()["busy"] == 1, message="the busy worker was not counted")
    # The worker host's history is being written by one of its workers.
    wait_for(lambda: HostSample.objects.exists(), message="no host sample was recorded")
    services.request_cancel(Run.objects.get(pk=run.pk), actor="test")
    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.CANCELLED)


def test_a_hanging_check_fails_at_the_deadline_and_is_not_started_twice(monkeypatch):
    from monitor import health

    release = threading.Event()
    calls = []

    def hanging() -> str:
        calls.append(1)
        release.wait(30)
        return "ok"

    monkeypatch.setitem(health.CHECKS, "broker", hanging)
    monkeypatch.setitem(health.CHECKS, "database", lambda: "ok")
    monkeypatch.setitem(health.CHECKS, "workers", lambda: 1)
    try:
        for _ in range(3):
            healthy, checks = health.run_checks(timeout=0.2)
            assert not healthy
            assert checks == {
                "database": "ok",
                "broker": "error: no answer within 0.2 s",
                "workers": 1,
            }
        assert len(calls) == 1
    finally:
        release.set()
    wait_for(lambda: health.run_checks(timeout=1)[0], message="the check did not recover")


def test_counting_clusters_leaves_django_q2s_list_of_clusters_alone():
    """django-q2's own reader writes the list of cluster keys back without the
    expired ones; racing a cluster that adds itself, that dropped live
    clusters for a moment, and health saw 0 alive. Ours only reads."""
    from django_q.brokers import Broker
    from django_q.conf import Conf
    from django_q.signing import SignedPackage
    from django_q.status import Status

    from monitor.clusters import cluster_stats

    cache = Broker.get_cache()
    saved = cache.get(Conf.Q_STAT)
    try:
        live = Status(pid=4242, cluster_id="live-one")
        cache.set(f"{Conf.Q_STAT}:live-one", SignedPackage.dumps(live, True), 30)
        keys = [f"{Conf.Q_STAT}:gone-one", f"{Conf.Q_STAT}:live-one"]
        cache.set(Conf.Q_STAT, keys, None)

        assert [stat.pid for stat in cluster_stats()] == [4242]
        assert cache.get(Conf.Q_STAT) == keys  # not rewritten
    finally:
        cache.delete(f"{Conf.Q_STAT}:live-one")
        cache.set(Conf.Q_STAT, saved or [], None)
