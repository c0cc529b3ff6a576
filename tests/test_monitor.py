"""The host and its processes: real psutil figures, the system API, the
monitor page and its history."""

from __future__ import annotations

import os
import threading
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from monitor import charts, sampler, system
from monitor.health import alive_clusters
from monitor.models import HostSample
from runs import services
from runs.models import Run
from tests.api_client import Api, make_user
from tests.conftest import wait_for

S = Run.Status


def _viewer_client() -> Client:
    client = Client()
    client.force_login(make_user("Viewers"))
    return client


# -- figures -----------------------------------------------------------------
def test_host_figures_are_sane(settings, tmp_path):
    settings.TASKS_DIR = tmp_path
    info = system.host_info()
    assert 0 <= info["cpu"]["percent"] <= 100
    assert info["cpu"]["count"] >= 1
    assert len(info["cpu"]["per_core"]) == info["cpu"]["count"]
    assert all(0 <= core <= 100 for core in info["cpu"]["per_core"])
    memory = info["memory"]
    assert memory["total"] > 0 and 0 < memory["used"] <= memory["total"]
    assert 0 <= memory["percent"] <= 100
    disk = info["disk"]
    assert disk["total"] > 0 and disk["used"] + disk["free"] <= disk["total"]
    assert 0 <= disk["percent"] <= 100
    assert "DATA_DIR" in disk["holds"]
    assert {h for d in info["disks"] for h in d["holds"]} == {"DATA_DIR", "TASKS_DIR"}
    assert info["uptime"] > 0
    assert len(info["cpu"]["load"]) == 3


def test_this_process_and_the_python_processes_include_the_test_itself():
    me = system.this_process()
    assert me["pid"] == os.getpid()
    assert me["rss"] > 0 and me["threads"] >= 1 and me["cpu_percent"] >= 0
    processes = system.python_processes()
    mine = [p for p in processes if p["pid"] == os.getpid()]
    assert len(mine) == 1
    assert mine[0]["role"] == "this process" and mine[0]["run_id"] is None
    assert all(p["rss"] > 0 and p["cpu_percent"] >= 0 for p in processes)


@pytest.mark.django_db(transaction=True)
def test_a_running_runs_script_is_listed_with_its_run(make_task, execute):
    task = make_task(
        "sleepy",
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        # A grandchild with an environment of its own is still the run's.
        clean = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={})
        print("started", flush=True)
        time.sleep(60)
        """,
    )
    run = services.start_run(task)
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    try:

        def marked() -> list[dict]:
            # By task too: a parallel test database may have a run of the same id.
            return [
                p
                for p in system.python_processes()
                if p["run_id"] == run.pk and p["task"] == "sleepy"
            ]

        wait_for(
            lambda: len(marked()) >= 3,
            message="the script and its children were not listed with the run",
        )
        procs = marked()
        assert {p["role"] for p in procs} == {"script"}
        # The pid rides along with the supervisor's first write, which comes
        # within LIVE_OUTPUT_SECONDS of the script's first output.
        pid = wait_for(
            lambda: Run.objects.values_list("pid", flat=True).get(pk=run.pk),
            timeout=5,
            message="the run's pid was not written",
        )
        assert pid in {p["pid"] for p in procs}
    finally:
        services.request_cancel(Run.objects.get(pk=run.pk), actor="test")
        worker.join(30)
    assert Run.objects.get(pk=run.pk).status == S.CANCELLED


# -- the system API ------------------------------------------------------------
SYSTEM_CALLS = ["/api/system/info", "/api/system/process", "/api/system/processes"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", [*SYSTEM_CALLS, "/api/system/health"])
def test_system_api_needs_a_user_and_the_view_permission(path):
    anonymous = Client().get(path)
    assert anonymous.status_code == 401
    assert "error" in anonymous.json()
    bad_token = Client().get(path, headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401
    nobody = Api(make_user(None)).get(path)
    assert nobody.status_code == 403
    assert "error" in nobody.json()


@pytest.mark.django_db
def test_system_api_answers_with_real_figures_to_a_token():
    api = Api(make_user("Viewers"))
    info = api.get("/api/system/info").json()
    assert {"cpu", "memory", "disk"} <= info.keys()
    assert {"percent", "count"} <= info["cpu"].keys()
    assert {"total", "used", "percent"} <= info["memory"].keys()
    assert {"total", "used", "free", "percent"} <= info["disk"].keys()
    me = api.get("/api/system/process").json()
    assert me["pid"] == os.getpid()
    assert {"rss", "cpu_percent", "threads"} <= me.keys()
    processes = api.get("/api/system/processes").json()["processes"]
    assert os.getpid() in {p["pid"] for p in processes}
    assert all({"pid", "name", "cmdline", "cpu_percent", "rss"} <= p.keys() for p in processes)


@pytest.mark.django_db
def test_system_api_refuses_writes():
    api = Api(make_user("Viewers"))
    api.client = Client(enforce_csrf_checks=True)  # as a real program meets it
    response = api.post("/api/system/info", {})
    assert response.status_code == 405
    assert response["Allow"] == "GET"


# -- the page --------------------------------------------------------------------
@pytest.mark.django_db
def test_monitor_page_needs_login_and_the_view_permission():
    anonymous = Client().get("/monitor/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    stranger = Client()
    stranger.force_login(make_user(None))
    assert stranger.get("/monitor/").status_code == 403
    assert stranger.get("/monitor/live").status_code == 403
    assert Client().get("/monitor/live").status_code == 302


@pytest.mark.django_db
def test_monitor_page_shows_host_workers_history_and_processes():
    HostSample.objects.create(
        host="worker-a", cpu_percent=42, memory_percent=30, memory_used=1 << 30
    )
    # A cluster of an earlier test may linger in the cache for a few seconds.
    wait_for(lambda: alive_clusters() == 0, timeout=10)
    client = _viewer_client()
    page = client.get("/monitor/")
    assert page.status_code == 200
    html = page.content.decode()
    for text in ("CPU", "Memory", "Swap", "Disk", "Uptime", "This web process", "Workers"):
        assert text in html
    assert "No worker cluster is alive" in html
    assert "worker-a" in html and "<svg" in html
    assert f'data-pid="{os.getpid()}"' in html
    assert "monitor/monitor.js" in html
    live = client.get("/monitor/live")
    assert live.status_code == 200
    sections = live.json()["html"]
    assert set(sections) == {"host", "clusters", "processes", "history"}
    assert "worker-a" in sections["history"]


# -- history ------------------------------------------------------------------------
@pytest.mark.django_db
def test_samples_older_than_an_hour_are_dropped(settings):
    old = HostSample.objects.create(
        host="h",
        at=timezone.now() - timedelta(minutes=61),
        cpu_percent=1,
        memory_percent=1,
        memory_used=1,
    )
    sample = sampler.record_sample("h")
    assert 0 <= sample.cpu_percent <= 100 and 0 < sample.memory_percent <= 100
    assert sample.memory_used > 0
    assert not HostSample.objects.filter(pk=old.pk).exists()
    assert HostSample.objects.filter(pk=sample.pk).exists()


def test_one_sampler_per_host_holds_the_lock(settings, tmp_path):
    settings.DATA_DIR = tmp_path
    first, second = sampler.HostLock("host-1"), sampler.HostLock("host-1")
    other_host = sampler.HostLock("host-2")
    try:
        assert first.acquire()
        assert first.acquire()  # already held: still ours
        assert not second.acquire()
        assert other_host.acquire()
        first.release()
        assert second.acquire()
    finally:
        for lock in (first, second, other_host):
            lock.release()


@pytest.mark.django_db
def test_host_chart_draws_the_runs_of_the_hour_over_the_samples(make_task):
    now = timezone.now()
    for minutes in (50, 30, 10):
        HostSample.objects.create(
            host="w1",
            at=now - timedelta(minutes=minutes),
            cpu_percent=minutes,
            memory_percent=20,
            memory_used=1,
        )
    task = make_task("spiky", "pass")
    inside = Run.objects.create(
        task=task,
        status=S.SUCCEEDED,
        worker="w1:123",
        started_at=now - timedelta(minutes=31),
        finished_at=now - timedelta(minutes=29),
    )
    Run.objects.create(  # finished before the hour: not drawn
        task=task,
        status=S.FAILED,
        worker="w1:123",
        started_at=now - timedelta(hours=3),
        finished_at=now - timedelta(hours=2),
    )
    Run.objects.create(  # another host's run
        task=task,
        status=S.SUCCEEDED,
        worker="w2:9",
        started_at=now - timedelta(minutes=5),
        finished_at=now - timedelta(minutes=4),
    )
    (chart,) = charts.host_charts(now)
    assert chart["host"] == "w1" and chart["samples"] == 3
    assert [bar["run"].pk for bar in chart["bars"]] == [inside.pk]
    bar = chart["bars"][0]
    # 31 to 29 minutes ago on a 720-wide hour: x near 348, about 24 wide.
    assert 340 < bar["x"] < 356 and 20 < bar["width"] < 30
    assert len(chart["cpu"].split()) == 3


# -- the run page's chart -------------------------------------------------------------
@pytest.mark.django_db
def test_run_usage_partial_and_endpoint(make_task):
    from django.template.loader import render_to_string

    task = make_task("cost", "pass")
    run = Run.objects.create(
        task=task,
        status=S.SUCCEEDED,
        peak_rss=150 << 20,
        cpu_seconds=2.5,
        usage=[[0, 10.0, 50 << 20, 1], [1, 90.0, 150 << 20, 2], [2, 50.0, 100 << 20, 2]],
    )
    html = render_to_string("monitor/_run_usage.html", {"run": run})
    assert "150.0\xa0MB" in html and "2.50 s" in html and "<polyline" in html
    client = _viewer_client()
    data = client.get(f"/monitor/runs/{run.pk}/usage").json()
    assert data["active"] is False and data["peak_rss"] == 150 << 20
    assert "<polyline" in data["html"]
    assert "data-run-usage" not in data["html"]  # the inside of the box, not a second box
    assert client.get("/monitor/runs/999999/usage").status_code == 404
    assert Client().get(f"/monitor/runs/{run.pk}/usage").status_code == 302


def test_a_cache_private_to_one_process_is_refused_at_start(settings):
    from monitor.checks import check_stats_cache

    assert check_stats_cache() == []
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    (error,) = check_stats_cache()
    assert error.id == "monitor.E001"
