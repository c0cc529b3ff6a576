"""Notifications: signed webhooks delivered to a small local HTTP server (and
retried when it fails), emails through the locmem backend, and the dead-man
and "far longer than usual" alerts."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone
from django_q.models import Schedule

from runs import notifications, services
from runs.models import Alert, Run, Task, Webhook, WebhookDelivery
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers with the codes it is
    given, one per request (the last one repeats), and keeps every request."""

    def __init__(self, codes: list[int]):
        self.codes = list(codes)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                code = receiver.codes.pop(0) if len(receiver.codes) > 1 else receiver.codes[0]
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator:
    made: list[Receiver] = []

    def make(*codes: int) -> Receiver:
        made.append(Receiver(list(codes) or [200]))
        return made[-1]

    yield make
    for r in made:
        r.close()


def finish(run: Run, status: str, reason: str = "") -> Run:
    """End a run as a worker would (the after-commit work runs at once here,
    outside any test transaction)."""
    assert services.claim_run(run.pk, "w:1") is not None
    assert services.finish_run(run.pk, "w:1", status=status, reason=reason)
    run.refresh_from_db()
    return run


# --- webhooks -----------------------------------------------------------------------


def test_a_failure_webhook_is_signed_retried_and_recorded(make_task, cluster, receiver):
    hook = receiver(500, 200)
    task = make_task("breaks", "import sys; print('oops'); sys.exit(4)")
    webhook = Webhook.objects.create(task=task, url=hook.url, secret="s3cret")
    cluster(SCHEDULER_INTERVAL="0.2", WEBHOOK_RETRY_SECONDS="0.5")
    run = services.start_run(task)
    wait_for(lambda: WebhookDelivery.objects.filter(status_code=200).exists(), timeout=30)

    deliveries = list(WebhookDelivery.objects.order_by("id"))
    assert [(d.attempt, d.status_code, d.event) for d in deliveries] == [
        (1, 500, "failure"),
        (2, 200, "failure"),
    ]
    assert all(d.webhook_id == webhook.pk and d.run_id == run.pk for d in deliveries)
    assert deliveries[1].at - deliveries[0].at >= timedelta(seconds=0.5)
    assert len(hook.requests) == 2
    headers, body = hook.requests[1]
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Taskrun-Signature"] == f"sha256={expected}"
    assert headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["event"] == "failure" and data["task"] == "breaks"
    assert data["run"]["id"] == run.pk and data["run"]["status"] == "failed"
    assert data["run"]["exit_code"] == 4
    # The one-off retry schedule is gone once it has fired.
    assert not Schedule.objects.filter(func="runs.notifications.deliver").exists()


def test_a_delivery_that_keeps_failing_is_given_up(make_task, receiver, settings):
    settings.WEBHOOK_ATTEMPTS = 2
    settings.WEBHOOK_RETRY_SECONDS = 30
    hook = receiver(503)
    task = make_task("t", "print(1)")
    webhook = Webhook.objects.create(task=task, url=hook.url)
    before = timezone.now()
    result = notifications.deliver(webhook.pk, "failure", None, "boom", 1)
    assert result == "failed: 503; attempt 2 scheduled"
    retry = Schedule.objects.get(func="runs.notifications.deliver")
    assert retry.schedule_type == Schedule.ONCE
    assert retry.next_run >= before + timedelta(seconds=30)
    assert notifications.deliver(webhook.pk, "failure", None, "boom", 2) == "gave up: 503"
    assert Schedule.objects.count() == 1
    assert list(WebhookDelivery.objects.values_list("attempt", "status_code")) == [
        (2, 503),
        (1, 503),
    ]


def test_an_unreachable_receiver_is_recorded_with_its_error(make_task, receiver, settings):
    settings.WEBHOOK_ATTEMPTS = 1
    hook = receiver(200)
    hook.close()  # nobody listens there now
    task = make_task("t", "print(1)")
    webhook = Webhook.objects.create(task=task, url=hook.url)
    assert notifications.deliver(webhook.pk, "failure", None, "boom").startswith("gave up")
    delivery = WebhookDelivery.objects.get()
    assert delivery.status_code is None and "refused" in delivery.error.lower()


def test_a_redirect_is_not_followed(make_task, receiver, settings):
    settings.WEBHOOK_ATTEMPTS = 1
    hook = receiver(302)
    webhook = Webhook.objects.create(task=make_task("t", "print(1)"), url=hook.url)
    notifications.deliver(webhook.pk, "success", None, "ok")
    assert WebhookDelivery.objects.get().status_code == 302
    assert len(hook.requests) == 1


# --- which events --------------------------------------------------------------------


def test_failure_recovery_and_success_emails(make_task):
    task = make_task(
        "mailer",
        "print(1)",
        notify_emails="ops@example.com, dev@example.com",
    )
    finish(services.start_run(task), S.FAILED, "exit code 1")
    assert len(mail.outbox) == 1
    failed = mail.outbox[0]
    assert failed.to == ["ops@example.com", "dev@example.com"]
    assert failed.subject.startswith("[taskrun] Task 'mailer': run #")
    assert "failed (exit code 1)" in failed.subject

    recovered = finish(services.start_run(task), S.SUCCEEDED)
    assert len(mail.outbox) == 2
    assert mail.outbox[1].subject == (
        f"[taskrun] Task 'mailer' recovered: run #{recovered.pk} succeeded after a failure."
    )
    # A plain success is not mailed unless asked for.
    finish(services.start_run(task), S.SUCCEEDED)
    assert len(mail.outbox) == 2
    Task.objects.filter(pk=task.pk).update(email_on_success=True)
    finish(services.start_run(Task.objects.get(pk=task.pk)), S.SUCCEEDED)
    assert len(mail.outbox) == 3


def test_a_chain_of_attempts_notifies_once_at_its_end(make_task):
    task = make_task("flaky", "print(1)", notify_emails="ops@example.com", retry_count=1)
    Task.objects.filter(pk=task.pk).update(retry_delay=0)
    first = finish(services.start_run(task), S.FAILED, "exit code 1")
    assert mail.outbox == []  # a retry follows
    second = finish(Run.objects.get(retry_of=first), S.FAILED, "exit code 1")
    assert len(mail.outbox) == 1
    assert f"run #{second.pk} failed after 2 attempts" in mail.outbox[0].subject


def test_recovery_counts_only_the_last_attempt_of_a_chain(make_task):
    task = make_task("flaky", "print(1)", notify_emails="ops@example.com", retry_count=1)
    Task.objects.filter(pk=task.pk).update(retry_delay=0)
    finish(services.start_run(task), S.SUCCEEDED)
    first = finish(services.start_run(task), S.FAILED, "exit code 1")
    finish(Run.objects.get(retry_of=first), S.SUCCEEDED)
    # The failed attempt was retried and never reported: no "recovered".
    assert mail.outbox == []


def test_webhook_subscriptions_pick_the_events(make_task):
    task = make_task("t", "print(1)")
    on_success = Webhook.objects.create(
        task=task, url="http://127.0.0.1:9/a", on_failure=False, on_success=True
    )
    Webhook.objects.create(task=task, url="http://127.0.0.1:9/b", enabled=False)
    finish(services.start_run(task), S.SUCCEEDED)
    finish(services.start_run(task), S.TIMED_OUT, "timed out after 1 s")
    from django_q.models import OrmQ

    jobs = [job.task for job in OrmQ.objects.all() if job.func() == "runs.notifications.deliver"]
    assert [(j["args"][0], j["args"][1]) for j in jobs] == [(on_success.pk, "success")]


# --- alerts ------------------------------------------------------------------------------


def test_not_succeeded_in_time_alerts_once_per_silence(make_task):
    task = make_task("nightly", "print(1)", alert_after=3600, notify_emails="ops@example.com")
    Task.objects.filter(pk=task.pk).update(created_at=timezone.now() - timedelta(hours=2))
    [alert] = notifications.check_alerts()
    assert alert.kind == Alert.Kind.NOT_SUCCEEDED
    assert alert.message == "Task 'nightly' has not succeeded in 2.0 h (alert after 60 min)."
    assert notifications.check_alerts() == []
    assert [m.subject for m in mail.outbox] == [f"[taskrun] {alert.message}"]

    ok = finish(services.start_run(task), S.SUCCEEDED)
    assert notifications.check_alerts() == []
    # Silent again for longer than allowed: a new alert.
    Run.objects.filter(pk=ok.pk).update(finished_at=timezone.now() - timedelta(hours=3))
    assert len(notifications.check_alerts()) == 1
    # A paused task is silent on purpose.
    Task.objects.filter(pk=task.pk).update(enabled=False)
    Alert.objects.all().delete()
    assert notifications.check_alerts() == []


def test_a_run_far_longer_than_usual_alerts_once(make_task, receiver, settings):
    hook = receiver(200)
    task = make_task("etl", "print(1)", slow_factor=3)
    webhook = Webhook.objects.create(task=task, url=hook.url, on_failure=False)
    now = timezone.now()
    for seconds in (10, 12, 11):
        Run.objects.create(
            task=task,
            status=S.SUCCEEDED,
            started_at=now - timedelta(hours=1),
            finished_at=now - timedelta(hours=1) + timedelta(seconds=seconds),
        )
    run = services.start_run(task)
    services.claim_run(run.pk, "w:1")
    Run.objects.filter(pk=run.pk).update(started_at=now - timedelta(seconds=30))
    assert notifications.check_alerts(now=now) == []  # 30 s is not above 3 × 11 s
    Run.objects.filter(pk=run.pk).update(started_at=now - timedelta(seconds=40))
    [alert] = notifications.check_alerts(now=now)
    assert alert.run_id == run.pk and alert.kind == Alert.Kind.SLOW
    assert alert.message == (
        f"Task 'etl': run #{run.pk} is taking 40 s, more than 3 times its usual 11 s."
    )
    assert notifications.check_alerts(now=now) == []
    # Sent to the webhook as an "alert" event.
    notifications.deliver(webhook.pk, "alert", run.pk, alert.message)
    assert json.loads(hook.requests[0][1])["event"] == "alert"


def test_too_few_runs_say_nothing_about_usual(make_task):
    task = make_task("new", "print(1)", slow_factor=2)
    now = timezone.now()
    Run.objects.create(
        task=task, status=S.SUCCEEDED, started_at=now, finished_at=now + timedelta(seconds=1)
    )
    assert notifications.usual_duration(task) is None
