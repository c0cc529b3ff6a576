"""The monitor page in a real browser (Debian's Chromium through Playwright):
it renders, draws its charts and refreshes itself."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from monitor.models import HostSample
from runs.models import Run, Task
from tests.api_client import make_user

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists() and os.environ.get("CI") != "true",
        reason="Chromium is not installed",
    ),
]


@pytest.fixture
def viewer_cookie(transactional_db) -> dict:
    """A logged-in Viewer's session, made before the browser starts (its
    event loop forbids the ORM in this thread afterwards)."""
    client = Client()
    client.force_login(make_user("Viewers"))
    return {
        "name": settings.SESSION_COOKIE_NAME,
        "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
    }


def test_monitor_page_renders_charts_and_refreshes(live_server, viewer_cookie):
    playwright_api = pytest.importorskip("playwright.sync_api")
    now = timezone.now()
    for minutes in range(50, 0, -5):
        HostSample.objects.create(
            host="worker-1",
            at=now - timedelta(minutes=minutes),
            cpu_percent=minutes,
            memory_percent=40,
            memory_used=1 << 30,
        )
    task = Task.objects.create(name="nightly")
    run = Run.objects.create(
        task=task,
        status=Run.Status.SUCCEEDED,
        worker="worker-1:42",
        started_at=now - timedelta(minutes=20),
        finished_at=now - timedelta(minutes=18),
    )
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context()
            context.add_cookies([{**viewer_cookie, "url": live_server.url}])
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_server.url}/monitor/")
            assert page.title().startswith("Monitor")
            host = page.locator('[data-section="host"]')
            assert "CPU" in host.inner_text() and "Memory" in host.inner_text()
            chart = page.locator(".host-chart svg")
            assert chart.count() == 1 and chart.bounding_box()["width"] > 300
            bar = page.locator(f'.host-chart a[href="/runs/{run.pk}/"] rect')
            assert bar.count() == 1
            assert str(os.getpid()) in page.locator('[data-section="processes"]').inner_text()
            # The script swaps in freshly rendered sections.
            # Coming back to the tab refreshes at once (no wait for the timer).
            with page.expect_response(lambda r: "/monitor/live" in r.url, timeout=15000) as live:
                page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
            assert live.value.status == 200
            page.wait_for_function(
                "document.querySelector('[data-monitor-note]')"
                " && !document.querySelector('[data-monitor-note]').classList.contains('stale')"
            )
            assert page.locator(".host-chart svg").count() == 1
            assert errors == []
        finally:
            browser.close()


def test_run_page_chart_follows_a_live_run(live_server, viewer_cookie, make_task, execute):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from runs import services
    from tests.conftest import wait_for

    task = make_task("grower", "import time\ntime.sleep(30)\n")
    run = services.start_run(task)
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    try:
        # The ORM before the browser: its event loop forbids it in this thread.
        wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.RUNNING)
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                context = browser.new_context()
                context.add_cookies([{**viewer_cookie, "url": live_server.url}])
                page = context.new_page()
                page.goto(f"{live_server.url}/runs/{run.pk}/")
                assert page.locator("[data-run-usage]").get_attribute("data-active") == "1"
                # The script swaps in the chart once the sampler has figures.
                page.wait_for_selector(
                    "[data-run-usage] polyline.line-memory", state="attached", timeout=20000
                )
                assert "Peak memory" in page.locator("[data-run-usage]").inner_text()
            finally:
                browser.close()
    finally:
        # After the browser (and its event loop) is gone: the ORM is allowed again.
        services.request_cancel(Run.objects.get(pk=run.pk), actor="test")
        worker.join(30)
