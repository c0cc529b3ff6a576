"""Cron schedules (django-q2's Schedule under the clock) and delayed runs."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from django_q.models import Schedule

from runs import cron, schedules, services
from runs.models import Run, Task, TaskSchedule
from runs.serializers import task_json
from tests.conftest import wait_for

S = Run.Status


@pytest.fixture
def quick(make_task):
    return make_task("quick", "print('tick')")


# --- the rows behind a schedule ----------------------------------------------------


@pytest.mark.django_db
def test_a_schedule_gets_a_django_q_schedule_at_its_next_slot(quick):
    ts = TaskSchedule.objects.create(task=quick, cron="30 4 * * *", timezone="Europe/Paris")
    job = Schedule.objects.get(pk=TaskSchedule.objects.get(pk=ts.pk).job_id)
    assert job.func == "runs.schedules.fire"
    assert job.schedule_type == Schedule.CRON
    paris = job.next_run.astimezone(ZoneInfo("Europe/Paris"))
    assert (paris.hour, paris.minute, paris.second) == (4, 30, 0)
    assert job.next_run > timezone.now()

    data = task_json(Task.objects.get(pk=quick.pk))
    assert data["schedules"] == [
        {
            "cron": "30 4 * * *",
            "timezone": "Europe/Paris",
            "enabled": True,
            "next_run_at": job.next_run.isoformat(),
        }
    ]
    assert data["next_run_at"] == job.next_run.isoformat()


@pytest.mark.django_db
def test_pausing_a_task_stops_its_schedules_and_resuming_restarts_them(quick):
    TaskSchedule.objects.create(task=quick, cron="*/5 * * * *")
    TaskSchedule.objects.create(task=quick, cron="0 * * * *", enabled=False)
    assert Schedule.objects.count() == 1

    quick.enabled = False
    quick.save()
    assert Schedule.objects.count() == 0
    assert task_json(quick)["next_run_at"] is None
    with pytest.raises(services.RunRefused, match="paused"):
        services.start_run(quick)

    quick.enabled = True
    quick.save()
    assert Schedule.objects.count() == 1
    assert task_json(quick)["next_run_at"] is not None


@pytest.mark.django_db
def test_switching_a_schedule_off_and_deleting_it_removes_its_job(quick):
    ts = TaskSchedule.objects.create(task=quick, cron="*/5 * * * *")
    ts.enabled = False
    ts.save()
    assert Schedule.objects.count() == 0
    ts.enabled = True
    ts.save()
    assert Schedule.objects.count() == 1
    ts.delete()
    assert Schedule.objects.count() == 0
    TaskSchedule.objects.create(task=quick, cron="*/5 * * * *")
    quick.delete()
    assert Schedule.objects.count() == 0


@pytest.mark.django_db
def test_replacing_the_list_keeps_unchanged_rows_and_drops_the_rest(quick):
    schedules.replace_schedules(quick, schedules.parse_schedules([{"cron": "0 * * * *"}]))
    first = quick.schedules.get()
    specs = schedules.parse_schedules(
        [{"cron": "0 * * * *"}, {"cron": "15 3 * * 1", "timezone": "Asia/Tokyo", "enabled": False}]
    )
    schedules.replace_schedules(quick, specs)
    assert list(quick.schedules.values_list("pk", "cron", "timezone", "enabled")) == [
        (first.pk, "0 * * * *", "UTC", True),
        (first.pk + 1, "15 3 * * 1", "Asia/Tokyo", False),
    ]
    schedules.replace_schedules(quick, [])
    assert not quick.schedules.exists()
    assert Schedule.objects.count() == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not a list", "schedules must be a list"),
        ([{"cron": "61 * * * *"}], "schedules[0].cron: Invalid cron expression '61 * * * *'"),
        ([{"cron": "* * *"}], "schedules[0].cron: Invalid cron expression"),
        ([{"cron": ""}], "schedules[0].cron: A cron expression is required"),
        ([{"cron": "0 * * * *", "timezone": "Mars/Olympus"}], "schedules[0].timezone: Unknown"),
        ([{"cron": "0 * * * *", "timezone": "../../etc/passwd"}], "Unknown time zone"),
        ([{"cron": "0 * * * *", "enabled": "yes"}], "schedules[0].enabled must be true"),
        ([{"cron": "0 * * * *", "every": 5}], "unknown field(s) every"),
    ],
)
def test_bad_schedules_are_refused_with_what_is_wrong(value, message):
    with pytest.raises(ValidationError) as info:
        schedules.parse_schedules(value)
    assert message in " ".join(info.value.messages)


@pytest.mark.django_db
def test_model_validation_refuses_a_bad_cron_and_zone(quick):
    ts = TaskSchedule(task=quick, cron="99 * * * *", timezone="Nowhere/Land")
    with pytest.raises(ValidationError) as info:
        ts.full_clean()
    assert set(info.value.message_dict) == {"cron", "timezone"}


# --- firing ---------------------------------------------------------------------------


def _slot(ts: TaskSchedule) -> datetime:
    return cron.next_slot(ts.cron, ts.timezone, timezone.now() - timedelta(minutes=2))


@pytest.mark.django_db(transaction=True)
def test_a_slot_starts_one_run_however_often_it_fires(quick):
    ts = TaskSchedule.objects.create(task=quick, cron="* * * * *")
    slot = _slot(ts)
    assert schedules.fire(ts.pk, slot=slot.isoformat()).startswith("run #")
    assert schedules.fire(ts.pk, slot=slot.isoformat()) == "slot already fired"
    run = Run.objects.get()
    assert (run.trigger, run.schedule_id, run.scheduled_for) == (
        Run.Trigger.SCHEDULE,
        ts.pk,
        slot,
    )
    assert run.dispatched_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_slot_while_a_run_is_live_is_recorded_as_skipped(quick):
    ts = TaskSchedule.objects.create(task=quick, cron="* * * * *")
    live = services.start_run(quick)
    slot = _slot(ts)
    assert schedules.fire(ts.pk, slot=slot.isoformat()).startswith("skipped")
    skipped = Run.objects.exclude(pk=live.pk).get()
    assert skipped.status == S.SKIPPED
    assert skipped.trigger == Run.Trigger.SCHEDULE
    assert skipped.reason == f"Task 'quick' already has run #{live.pk} queued."
    assert skipped.scheduled_for == slot
    assert skipped.events.get().to_status == S.SKIPPED


@pytest.mark.django_db(transaction=True)
def test_a_schedule_in_another_zone_keeps_its_own_slots(quick):
    # The cluster computes cron times in UTC; 09:00 in Tokyo is 00:00 UTC.
    ts = TaskSchedule.objects.create(task=quick, cron="0 9 * * *", timezone="Asia/Tokyo")
    tokyo = ZoneInfo("Asia/Tokyo")
    utc_nine = datetime.now(ZoneInfo("UTC")).replace(hour=9, minute=0, second=0, microsecond=0)
    assert "not a slot in Asia/Tokyo" in schedules.fire(ts.pk, slot=utc_nine.isoformat())
    assert not Run.objects.exists()
    job = Schedule.objects.get(pk=ts.job_id)
    assert job.next_run.astimezone(tokyo).hour == 9

    tokyo_nine = datetime.now(tokyo).replace(hour=9, minute=0, second=0, microsecond=0)
    assert schedules.fire(ts.pk, slot=tokyo_nine.isoformat()).startswith("run #")


@pytest.mark.django_db(transaction=True)
def test_a_paused_task_fires_nothing(quick):
    ts = TaskSchedule.objects.create(task=quick, cron="* * * * *")
    Task.objects.filter(pk=quick.pk).update(enabled=False)
    assert schedules.fire(ts.pk, slot=_slot(ts).isoformat()) == "paused"
    assert not Run.objects.exists()


# --- delayed runs -----------------------------------------------------------------------


def test_start_times_from_delay_and_at():
    now = timezone.now()
    assert schedules.parse_start_time() is None
    assert schedules.parse_start_time(delay=0) is None
    later = schedules.parse_start_time(delay=90)
    assert timedelta(seconds=89) < later - now < timedelta(seconds=95)
    year = now.year + 1
    at = schedules.parse_start_time(at=f"{year}-01-02T03:04:05+02:00")
    assert at == datetime(year, 1, 2, 1, 4, 5, tzinfo=ZoneInfo("UTC"))
    # Without an offset the time is read in TIME_ZONE (UTC in tests).
    assert schedules.parse_start_time(at=f"{year}-01-02T03:04:05").hour == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay": 5, "at": "2099-01-01T00:00:00"}, "either delay or at"),
        ({"delay": "soon"}, "delay must be a number of seconds"),
        ({"delay": -1}, "delay must be between 0"),
        ({"delay": True}, "delay must be between 0"),
        ({"at": "tomorrow"}, "at must be an ISO 8601 time"),
        ({"at": 12}, "at must be an ISO 8601 time"),
        ({"at": "2001-01-01T00:00:00Z"}, "is in the past"),
        ({"at": "2999-01-01T00:00:00Z"}, "more than a year away"),
    ],
)
def test_bad_start_times_are_refused(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        schedules.parse_start_time(**kwargs)


@pytest.mark.django_db(transaction=True)
def test_a_delayed_run_waits_outside_the_overlap_policy(quick):
    later = services.start_run(quick, not_before=timezone.now() + timedelta(hours=1))
    assert (later.status, later.dispatched_at) == (S.QUEUED, None)
    assert later.scheduled_for == later.not_before
    # Not counted: a run now is still allowed.
    now = services.start_run(quick)
    assert now.dispatched_at is not None
    assert Task.objects.get(pk=quick.pk).active_run() == now
    assert task_json(quick)["next_run_at"] == later.not_before.isoformat()
    # Not due yet: the clock leaves it alone.
    services.release_due_runs()
    later.refresh_from_db()
    assert (later.status, later.not_before is not None) == (S.QUEUED, True)


@pytest.mark.django_db(transaction=True)
def test_a_due_delayed_run_is_skipped_when_a_run_is_live(quick):
    later = services.start_run(quick, not_before=timezone.now() + timedelta(seconds=0.3))
    live = services.start_run(quick)
    wait_for(lambda: timezone.now() > later.not_before, timeout=5)
    services.release_due_runs()
    later.refresh_from_db()
    assert later.status == S.SKIPPED
    assert later.reason == f"at its start time: Task 'quick' already has run #{live.pk} queued."


@pytest.mark.django_db(transaction=True)
def test_run_task_delay_and_at(quick, capsys):
    call_command("run_task", "quick", "--delay", "60", "arg1")
    run = Run.objects.get()
    assert run.args == ["arg1"]
    assert timedelta(seconds=55) < run.not_before - timezone.now() <= timedelta(seconds=60)
    at = (timezone.now() + timedelta(days=2)).replace(microsecond=0)
    call_command("run_task", "quick", f"--at={at.isoformat()}")
    assert Run.objects.get(trigger=Run.Trigger.CLI, pk__gt=run.pk).not_before == at
    with pytest.raises(CommandError, match="delay must be a number"):
        call_command("run_task", "quick", "--delay", "later")
    with pytest.raises(CommandError, match="--at needs a value"):
        call_command("run_task", "quick", "--at")
    assert Run.objects.count() == 2


# --- real clusters ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_delayed_run_starts_no_earlier_than_asked(quick, cluster):
    cluster(SCHEDULER_INTERVAL="0.2")
    asked = timezone.now() + timedelta(seconds=2)
    run = services.start_run(quick, not_before=asked)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == S.SUCCEEDED, timeout=20)
    run.refresh_from_db()
    assert run.started_at >= asked
    assert run.scheduled_for == asked
    assert run.not_before is None


@pytest.mark.django_db(transaction=True)
def test_two_clusters_fire_every_slot_once(quick, cluster):
    # Every second slot (6-field cron: seconds last), two clusters each
    # looking five times a second: no slot may start two runs.
    every = 2
    ts = TaskSchedule.objects.create(task=quick, cron=f"* * * * * */{every}")
    first, second = cluster(SCHEDULER_INTERVAL="0.2"), cluster(SCHEDULER_INTERVAL="0.2")
    wait_for(lambda: Run.objects.filter(schedule=ts).count() >= 5, timeout=25)
    # Stop the schedule, then let what was fired finish.
    ts.enabled = False
    ts.save()
    wait_for(lambda: not Run.objects.filter(status__in=S.active()).exists(), timeout=15)
    first.stop()
    second.stop()

    slots = list(Run.objects.filter(schedule=ts).values_list("scheduled_for", flat=True))
    assert len(slots) == len(set(slots)), "a slot fired twice"
    assert all(s.second % every == 0 and s.microsecond == 0 for s in slots)
    # Consecutive slots, apart from a rare pass that came late and merged
    # two into one (catch_up off): the count matches the time covered.
    span = (max(slots) - min(slots)).total_seconds() / every + 1
    assert span - 2 <= len(slots) <= span
    ran = Run.objects.filter(schedule=ts).exclude(status=S.SKIPPED)
    assert ran.exists() and all(r.status == S.SUCCEEDED for r in ran)


@pytest.mark.django_db
def test_the_task_admin_page_shows_schedules_and_downstream_tasks(admin_client, quick, make_task):
    TaskSchedule.objects.create(task=quick, cron="15 * * * *")
    after = make_task("after", "print(1)")
    quick.downstream_links.create(downstream=after, on="failure")
    page = admin_client.get(f"/admin/runs/task/{quick.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="15 * * * *"' in html
    assert "Downstream tasks" in html and 'value="failure" selected' in html


@pytest.mark.django_db
def test_a_schedule_added_in_the_admin_gets_its_job(admin_client, quick, tasks_dir):
    from tests.test_admin import add_task

    response = add_task(
        admin_client,
        "nightly",
        **{
            "schedules-TOTAL_FORMS": "1",
            "schedules-0-cron": "0 3 * * *",
            "schedules-0-timezone": "Europe/Berlin",
            "schedules-0-enabled": "on",
        },
    )
    assert response.status_code == 302, response.context["errors"]
    ts = TaskSchedule.objects.get(task__name="nightly")
    assert (
        Schedule.objects.get(pk=ts.job_id).next_run.astimezone(ZoneInfo("Europe/Berlin")).hour == 3
    )
    bad = add_task(
        admin_client,
        "broken",
        **{
            "schedules-TOTAL_FORMS": "1",
            "schedules-0-cron": "0 3 * *",
            "schedules-0-timezone": "UTC",
        },
    )
    assert bad.status_code == 200
    assert "Invalid cron expression" in bad.content.decode()
    assert not Task.objects.filter(name="broken").exists()


@pytest.mark.django_db(transaction=True)
def test_slots_missed_while_no_cluster_ran_fire_once_when_one_comes_back(quick, cluster):
    ts = TaskSchedule.objects.create(task=quick, cron="* * * * * */2")
    # As if every cluster had been down for a minute: thirty slots missed.
    missed = cron.next_slot(ts.cron, ts.timezone, timezone.now() - timedelta(seconds=61))
    Schedule.objects.filter(pk=ts.job_id).update(next_run=missed)
    cluster(SCHEDULER_INTERVAL="0.2")
    wait_for(lambda: Run.objects.filter(schedule=ts).count() >= 3, timeout=20)
    ts.enabled = False
    ts.save()
    slots = sorted(Run.objects.filter(schedule=ts).values_list("scheduled_for", flat=True))
    # The first missed slot once, then only slots from the restart on.
    assert slots[0] == missed
    assert all(s > missed + timedelta(seconds=50) for s in slots[1:])


def test_a_scheduler_interval_that_is_not_positive_is_refused_at_start(settings):
    from runs.checks import check_schedule_settings

    assert check_schedule_settings(None) == []
    settings.SCHEDULER_INTERVAL = 0
    settings.WEBHOOK_ATTEMPTS = 0
    assert [e.id for e in check_schedule_settings(None)] == ["runs.E020", "runs.E021"]


@pytest.mark.django_db
def test_the_task_list_shows_the_next_run(admin_client, quick):
    TaskSchedule.objects.create(task=quick, cron="0 0 1 1 *")
    page = admin_client.get("/admin/runs/task/").content.decode()
    assert "Next run" in page
    assert f"Jan. 1, {timezone.now().year + 1}" in page


@pytest.mark.django_db
def test_a_schedule_whose_job_was_deleted_gets_it_back(quick):
    ts = TaskSchedule.objects.create(task=quick, cron="*/5 * * * *")
    TaskSchedule.objects.create(task=quick, cron="0 * * * *", enabled=False)
    Schedule.objects.all().delete()  # say, by hand in django-q2's admin
    assert TaskSchedule.objects.get(pk=ts.pk).job_id is None
    assert schedules.repair() == 1
    assert Schedule.objects.get(pk=TaskSchedule.objects.get(pk=ts.pk).job_id).cron == ts.cron
    assert schedules.repair() == 0
