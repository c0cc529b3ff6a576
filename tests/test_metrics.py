"""/metrics: Prometheus text computed from the runs table at scrape time."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from runs import services
from runs.models import Run
from tests.api_client import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client: Client | None = None, **headers: str) -> dict[str, list]:
    response = (client or _staff()).get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    families = text_string_to_metric_families(response.content.decode())
    return {family.name: family.samples for family in families}


def _staff() -> Client:
    client = Client()
    client.force_login(make_user(None, is_staff=True))
    return client


def value(samples: list, name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def test_metrics_need_staff_or_the_metrics_token(settings):
    settings.METRICS_TOKEN = "s3cret-token"
    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert Client().get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    viewer = Client()
    viewer.force_login(make_user("Viewers"))
    assert viewer.get("/metrics").status_code == 403
    assert "taskrun_runs_running" in scrape(Client(), Authorization="Bearer s3cret-token")
    assert "taskrun_runs_running" in scrape(_staff())


def test_an_unset_metrics_token_opens_nothing(settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_counters_move_when_runs_finish(make_task, execute):
    ok = make_task("ok", "print('x' * 99)")
    bad = make_task("bad", "import sys; sys.exit(2)")
    before = scrape()
    assert value(before["taskrun_runs_finished"], "taskrun_runs_finished_total", task="ok") is None

    execute(services.start_run(ok))
    execute(services.start_run(ok))
    execute(services.start_run(bad))
    queued = services.start_run(bad)
    after = scrape()

    finished = after["taskrun_runs_finished"]
    assert value(finished, "taskrun_runs_finished_total", task="ok", status="succeeded") == 2
    assert value(finished, "taskrun_runs_finished_total", task="bad", status="failed") == 1
    assert value(after["taskrun_runs_started"], "taskrun_runs_started_total", task="ok") == 2
    assert value(after["taskrun_runs_queued"], "taskrun_runs_queued") == 1
    assert value(after["taskrun_runs_running"], "taskrun_runs_running") == 0
    durations = after["taskrun_run_duration_seconds"]
    assert value(durations, "taskrun_run_duration_seconds_count", task="ok") == 2
    assert value(durations, "taskrun_run_duration_seconds_bucket", task="ok", le="+Inf") == 2
    assert value(durations, "taskrun_run_duration_seconds_bucket", task="ok", le="60.0") == 2
    assert value(durations, "taskrun_run_duration_seconds_sum", task="ok") > 0
    since = value(
        after["taskrun_task_seconds_since_last_success"],
        "taskrun_task_seconds_since_last_success",
        task="ok",
    )
    assert since is not None and 0 <= since < 60
    assert (
        value(
            after["taskrun_task_seconds_since_last_success"],
            "taskrun_task_seconds_since_last_success",
            task="bad",
        )
        is None
    )
    assert (
        value(after["taskrun_log_bytes_written"], "taskrun_log_bytes_written_total", task="ok")
        == 200
    )
    assert value(after["taskrun_clusters_alive"], "taskrun_clusters_alive") >= 0

    services.request_cancel(queued, actor="test")
    again = scrape()
    assert value(again["taskrun_runs_queued"], "taskrun_runs_queued") == 0
    assert (
        value(
            again["taskrun_runs_finished"],
            "taskrun_runs_finished_total",
            task="bad",
            status="cancelled",
        )
        == 1
    )
    assert Run.objects.count() == 4


def test_openmetrics_when_the_scraper_asks_for_it():
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

    response = _staff().get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    names = {family.name for family in parse_om(response.content.decode())}
    assert {"taskrun_runs_finished", "taskrun_clusters_alive"} <= names
