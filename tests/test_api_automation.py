"""The API's side of issue 5: schedules, overlap, retries and downstream tasks
in the task object and PUT, and delayed runs in execute. Bad input is a 400
that says what is wrong and changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from runs import services
from runs.models import Run, Task, TaskLink

pytestmark = pytest.mark.django_db
S = Run.Status


@pytest.fixture
def job(make_task):
    return make_task("job", "print('hi')")


def test_put_replaces_the_schedules_and_shows_the_next_run(editor, job):
    body = {
        "schedules": [
            {"cron": "0 6 * * *", "timezone": "Europe/Paris"},
            {"cron": "*/15 * * * *", "enabled": False},
        ]
    }
    response = editor.put("/api/tasks/job", body)
    assert response.status_code == 200, response.json()
    task = response.json()["task"]
    first, second = task["schedules"]
    assert (first["cron"], first["timezone"], first["enabled"]) == (
        "0 6 * * *",
        "Europe/Paris",
        True,
    )
    assert first["next_run_at"] is not None
    assert second == {
        "cron": "*/15 * * * *",
        "timezone": "UTC",
        "enabled": False,
        "next_run_at": None,
    }
    assert task["next_run_at"] == first["next_run_at"]
    # The list read back can be sent again unchanged.
    again = editor.put("/api/tasks/job", {"schedules": task["schedules"]})
    assert again.json()["task"]["schedules"] == task["schedules"]

    response = editor.put("/api/tasks/job", {"schedules": []})
    assert response.json()["task"]["schedules"] == []
    assert response.json()["task"]["next_run_at"] is None
    assert Schedule.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"schedules": [{"cron": "0 25 * * *"}]}, "schedules[0].cron: Invalid cron expression"),
        ({"schedules": [{"cron": "0 6 * * *", "timezone": "Moon/Base"}]}, "Unknown time zone"),
        ({"schedules": {"cron": "0 6 * * *"}}, "schedules must be a list"),
        ({"overlap": "parallel"}, "overlap must be one of skip, queue, replace"),
        ({"max_queued": -1}, "max_queued must be an integer"),
        ({"retry": {"count": 2, "tries": 3}}, "retry: unknown field(s) tries"),
        ({"retry": {"on": ["cancelled"]}}, 'retry.on must be a list of "failed"'),
        ({"retry": {"backoff": 0.5}}, "retry.backoff must be a number from 1"),
        ({"retry": {"delay": "10"}}, "retry.delay must be a number of seconds"),
        ({"downstream": [{"task": "ghost"}]}, "downstream[0].task: no task named 'ghost'"),
        ({"downstream": [{"task": "job", "on": "maybe"}]}, "downstream[0].on must be one of"),
        ({"downstream": [{"task": "job"}]}, "downstream: Task 'job' cannot be downstream"),
    ],
)
def test_bad_automation_input_is_400_and_changes_nothing(editor, job, body, message):
    body = {**body, "description": "changed"}
    response = editor.put("/api/tasks/job", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    job.refresh_from_db()
    assert job.description == ""
    assert not job.schedules.exists() and not job.downstream_links.exists()


def test_put_sets_overlap_retries_and_downstream(editor, job, make_task):
    make_task("after", "print(1)")
    response = editor.put(
        "/api/tasks/job",
        {
            "overlap": "queue",
            "max_queued": 3,
            "retry": {"count": 2, "on": ["failed"], "delay": 5, "backoff": 3, "max_delay": 60},
            "downstream": [{"task": "after", "on": "any"}],
        },
    )
    assert response.status_code == 200, response.json()
    task = response.json()["task"]
    assert (task["overlap"], task["max_queued"]) == ("queue", 3)
    assert task["retry"] == {
        "count": 2,
        "on": ["failed"],
        "delay": 5,
        "backoff": 3,
        "max_delay": 60,
    }
    assert task["downstream"] == [{"task": "after", "on": "any"}]
    # A partial retry object keeps the rest.
    task = editor.put("/api/tasks/job", {"retry": {"count": 0}}).json()["task"]
    assert task["retry"]["count"] == 0 and task["retry"]["backoff"] == 3


def test_put_refuses_a_downstream_cycle(editor, job, make_task):
    after = make_task("after", "print(1)")
    TaskLink.objects.create(upstream=job, downstream=after)
    response = editor.put("/api/tasks/after", {"downstream": [{"task": "job"}]})
    assert response.status_code == 400
    assert response.json()["error"] == (
        "downstream: This link would make a cycle: after → job → after."
    )
    assert not after.downstream_links.exists()


def test_create_takes_schedules_too(editor, tasks_dir):
    response = editor.post(
        "/api/tasks",
        {"name": "fresh", "code": "print(1)", "schedules": [{"cron": "@hourly"}]},
    )
    assert response.status_code == 201, response.json()
    assert response.json()["task"]["schedules"][0]["cron"] == "@hourly"
    assert Task.objects.get(name="fresh").schedules.get().job_id is not None


def test_execute_with_a_delay_queues_a_waiting_run(operator, job):
    response = operator.post("/api/tasks/job/execute", {"delay": 30})
    assert response.status_code == 202
    run = response.json()["run"]
    assert run["status"] == "queued"
    not_before = Run.objects.get(pk=run["id"]).not_before
    assert run["not_before"] == run["scheduled_for"] == not_before.isoformat()
    assert timedelta(seconds=25) < not_before - timezone.now() <= timedelta(seconds=30)


def test_execute_at_a_time(operator, job):
    at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    response = operator.post("/api/tasks/job/execute", {"at": at.isoformat()})
    assert response.status_code == 202
    assert Run.objects.get(pk=response.json()["run"]["id"]).not_before == at


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"delay": -5}, "delay must be between 0"),
        ({"delay": 1, "at": "2099-01-01T00:00:00Z"}, "either delay or at"),
        ({"at": "next tuesday"}, "at must be an ISO 8601 time"),
        ({"at": "2000-01-01T00:00:00Z"}, "is in the past"),
    ],
)
def test_execute_with_a_bad_time_is_400(operator, job, body, message):
    response = operator.post("/api/tasks/job/execute", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Run.objects.exists()


def test_execute_on_a_paused_task_is_409_with_a_clear_message(operator, job):
    Task.objects.filter(pk=job.pk).update(enabled=False)
    response = operator.post("/api/tasks/job/execute", {})
    assert response.status_code == 409
    assert response.json()["error"] == "Task 'job' is paused; resume it to start runs."


def test_execute_while_running_under_queue_waits_and_under_skip_is_409(operator, job):
    first = services.start_run(job)
    assert operator.post("/api/tasks/job/execute", {}).status_code == 409
    Task.objects.filter(pk=job.pk).update(overlap="queue", max_queued=1)
    response = operator.post("/api/tasks/job/execute", {})
    assert response.status_code == 202
    assert response.json()["run"]["status"] == "queued"
    refused = operator.post("/api/tasks/job/execute", {})
    assert refused.status_code == 409
    assert refused.json()["run"]["id"] == first.pk


def test_put_sets_notifications_and_never_shows_webhook_secrets(editor, job):
    secret = "x" * 20
    body = {
        "notify": {"emails": ["ops@example.com", "dev@example.com"], "on_success": True},
        "alerts": {"not_succeeded_in": 86400, "slow_factor": 3},
        "webhooks": [{"url": "https://hooks.example.com/a", "secret": secret, "on_alert": False}],
    }
    response = editor.put("/api/tasks/job", body)
    assert response.status_code == 200, response.json()
    task = response.json()["task"]
    assert task["notify"] == {
        "emails": ["ops@example.com", "dev@example.com"],
        "on_failure": True,
        "on_success": True,
        "on_recovery": True,
    }
    assert task["alerts"] == {"not_succeeded_in": 86400, "slow_factor": 3}
    assert task["webhooks"] == [
        {
            "url": "https://hooks.example.com/a",
            "on_failure": True,
            "on_success": False,
            "on_recovery": True,
            "on_alert": False,
            "enabled": True,
        }
    ]
    assert secret not in response.content.decode()
    # Listed again without a secret, a webhook keeps its own.
    editor.put("/api/tasks/job", {"webhooks": [{"url": "https://hooks.example.com/a"}]})
    assert job.webhooks.get().secret == secret
    editor.put("/api/tasks/job", {"webhooks": [], "alerts": {"slow_factor": None}})
    job.refresh_from_db()
    assert not job.webhooks.exists()
    assert (job.alert_after, job.slow_factor) == (86400, None)


def test_webhook_urls_show_their_path_only_to_editors(editor, operator, viewer, job):
    """A webhook's path and query often carry its token (Slack, Teams): like
    the task page, the API shows them only to those who may change the task."""
    job.webhooks.create(url="https://hooks.example.com/services/T0/B0/s3cr3t?token=abc")
    job.webhooks.create(url="https://plain.example.com")
    masked = ["https://hooks.example.com/…", "https://plain.example.com"]
    for caller in (viewer, operator):
        listed = caller.get("/api/tasks").json()["tasks"]
        one = caller.get("/api/tasks/job").json()["task"]
        for task in (listed[0], one):
            assert sorted(hook["url"] for hook in task["webhooks"]) == masked
        assert "s3cr3t" not in caller.get("/api/tasks").content.decode()
        assert "token=abc" not in caller.get("/api/tasks/job").content.decode()
    full = sorted(hook["url"] for hook in editor.get("/api/tasks/job").json()["task"]["webhooks"])
    assert full == [
        "https://hooks.example.com/services/T0/B0/s3cr3t?token=abc",
        "https://plain.example.com",
    ]
    listed = editor.get("/api/tasks").json()["tasks"][0]["webhooks"]
    assert "https://hooks.example.com/services/T0/B0/s3cr3t?token=abc" in [h["url"] for h in listed]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"notify": {"emails": ["not-an-address"]}}, "'not-an-address' is not an address"),
        ({"notify": {"on_failure": "yes"}}, "notify.on_failure must be true or false"),
        ({"alerts": {"not_succeeded_in": -5}}, "alerts.not_succeeded_in must be"),
        ({"alerts": {"slow_factor": 0.5}}, "alerts.slow_factor must be a number from 1"),
        ({"webhooks": [{"url": "ftp://x.example.com"}]}, "webhooks[0].url: 'ftp://x.example.com'"),
        ({"webhooks": [{"url": "https://a.example.com", "secret": "short"}]}, "16 to 128"),
        (
            {"webhooks": [{"url": "https://a.example.com"}, {"url": "https://a.example.com"}]},
            "webhooks[1].url is listed twice",
        ),
    ],
)
def test_bad_notification_input_is_400(editor, job, body, message):
    response = editor.put("/api/tasks/job", body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    job.refresh_from_db()
    assert job.notify_emails == "" and not job.webhooks.exists()
