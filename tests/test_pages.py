"""The server-rendered pages and their JSON endpoints, through Django's test
client on the real database: who may see and do what, the run form, the run
list's filters and keyset pages, and the live log by byte offset."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import dateformat, timezone

from runs import schedules, scripts
from runs.models import LogChunk, Run, RunEvent, Task, TaskLink, TaskSchedule, Webhook
from runs.views import LOG_CATCH_UP_BYTES, LOG_LIVE_MAX_BYTES, LOG_TAIL_BYTES, RUNS_PAGE_SIZE

pytestmark = pytest.mark.django_db

S = Run.Status

HELLO = 'print("hello")\n'


@pytest.fixture
def user_in(django_user_model):
    def make(group: str | None, name: str | None = None):
        user = django_user_model.objects.create_user(
            name or (group or "nobody").lower(), password="pw"
        )
        if group:
            user.groups.add(Group.objects.get(name=group))
        return user

    return make


@pytest.fixture
def viewer_client(client, user_in):
    client.force_login(user_in("Viewers"))
    return client


@pytest.fixture
def operator(user_in):
    return user_in("Operators")


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def task(make_task) -> Task:
    return make_task("hello", HELLO, args=["--name", "world"])


def add_log(run: Run, *pieces: bytes) -> None:
    """Store output the way the executor's LogSink does: chunks at byte offsets,
    and the run's log_size."""
    start = run.log_size
    for data in pieces:
        LogChunk.objects.create(run=run, start=start, data=data)
        start += len(data)
    run.log_size = start
    run.save(update_fields=["log_size"])


def page_urls(task: Task, run: Run) -> list[str]:
    return [
        reverse("runs:dashboard"),
        reverse("runs:tasks"),
        reverse("runs:task", args=[task.name]),
        reverse("runs:runs"),
        reverse("runs:detail", args=[run.pk]),
        reverse("runs:live", args=[run.pk]),
        reverse("runs:log", args=[run.pk]) + "?before=0",
        reverse("runs:download_log", args=[run.pk]),
    ]


# --- login and permissions ----------------------------------------------------


def test_anonymous_users_are_sent_to_the_login_page(client, task):
    run = Run.objects.create(task=task, status=S.SUCCEEDED)
    for url in page_urls(task, run):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url


def test_login_page_renders_and_logs_in(client, user_in):
    user_in("Viewers", "vera")
    page = client.get("/accounts/login/?next=/runs/")
    assert page.status_code == 200
    assert b'name="username"' in page.content and b'value="/runs/"' in page.content
    wrong = client.post("/accounts/login/", {"username": "vera", "password": "nope"})
    assert wrong.status_code == 200 and b'class="errorlist"' in wrong.content
    response = client.post(
        "/accounts/login/", {"username": "vera", "password": "pw", "next": "/runs/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/runs/"
    assert client.get("/").status_code == 200


def test_a_user_without_view_permission_gets_403(client, user_in, task):
    client.force_login(user_in(None))
    run = Run.objects.create(task=task, status=S.SUCCEEDED)
    for url in page_urls(task, run):
        assert client.get(url).status_code == 403, url
    assert "Not allowed" in client.get(reverse("runs:tasks")).content.decode()


def test_every_page_renders_for_a_viewer(viewer_client, task):
    run = Run.objects.create(task=task, status=S.SUCCEEDED, exit_code=0)
    add_log(run, b"hello\n")
    for url in page_urls(task, run):
        response = viewer_client.get(url)
        assert response.status_code == 200, url
    page = viewer_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "hello\n</pre>" in page
    assert 'action="/accounts/logout/"' in page  # logout is a POST form


def test_viewer_sees_no_run_or_cancel_button_and_the_server_refuses(viewer_client, task):
    live = Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now())
    tasks_page = viewer_client.get(reverse("runs:tasks")).content.decode()
    task_page = viewer_client.get(reverse("runs:task", args=[task.name])).content.decode()
    run_page = viewer_client.get(reverse("runs:detail", args=[live.pk])).content.decode()
    assert "data-run-task" not in tasks_page + task_page
    assert "cancel-run" not in run_page and "rerun" not in run_page

    assert viewer_client.post(reverse("runs:run_task", args=[task.name])).status_code == 403
    assert viewer_client.post(reverse("runs:cancel", args=[live.pk])).status_code == 403
    assert viewer_client.post(reverse("runs:rerun", args=[live.pk])).status_code == 403
    live.refresh_from_db()
    assert live.status == S.RUNNING and not live.cancel_requested
    assert Run.objects.count() == 1


def test_run_and_cancel_need_post(operator_client, task):
    run = Run.objects.create(task=task)
    assert operator_client.get(reverse("runs:run_task", args=[task.name])).status_code == 405
    assert operator_client.get(reverse("runs:cancel", args=[run.pk])).status_code == 405
    assert Run.objects.count() == 1


def test_unknown_task_and_run_are_404(viewer_client):
    response = viewer_client.get(reverse("runs:task", args=["nope"]))
    assert response.status_code == 404
    assert "Not found" in response.content.decode()
    assert viewer_client.get(reverse("runs:detail", args=[999999])).status_code == 404
    assert viewer_client.get(reverse("runs:live", args=[999999])).status_code == 404


# --- starting, cancelling, running again ----------------------------------------


def test_run_button_starts_a_run_with_the_task_defaults(operator_client, operator, task):
    tasks_page = operator_client.get(reverse("runs:tasks")).content.decode()
    assert 'data-run-task="hello"' in tasks_page
    response = operator_client.post(reverse("runs:run_task", args=[task.name]))
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("runs:detail", args=[run.pk])
    assert run.status == S.QUEUED
    assert run.args == ["--name", "world"]
    assert run.trigger == Run.Trigger.MANUAL
    assert run.triggered_by == operator
    assert RunEvent.objects.get(run=run).actor == operator.username


def test_run_form_takes_arguments_environment_and_config(operator_client, task):
    url = reverse("runs:run_task", args=[task.name])
    operator_client.post(
        url,
        {
            "args": "first arg\n\n--flag\r\n",
            "args_style": "lines",
            "env": "# a comment\nGREETING=hi there\nEMPTY=\nURL=a=b",
            "config": '{"n": 3, "names": ["a"]}',
        },
    )
    run = Run.objects.get()
    assert run.args == ["first arg", "--flag"]
    assert run.env == {"GREETING": "hi there", "EMPTY": "", "URL": "a=b"}
    assert run.config == {"n": 3, "names": ["a"]}


def test_run_form_splits_arguments_like_a_shell(operator_client, task):
    operator_client.post(
        reverse("runs:run_task", args=[task.name]),
        {
            "args": """--name "big world" 'it''s' plain""",
            "args_style": "shell",
            "env": "",
            "config": "",
        },
    )
    run = Run.objects.get()
    assert run.args == ["--name", "big world", "its", "plain"]
    assert run.env == {} and run.config is None


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("args", '--name "unclosed', "Cannot split the arguments"),
        ("env", "NOEQUALS", "expected KEY=VALUE"),
        ("env", "1BAD=x", "is not a variable name"),
        ("env", "A=1\nA=2", "A is given twice"),
        ("env", "TASKRUN_RUN_ID=5", "set by taskrun"),
        ("config", "{not json", "Not valid JSON"),
        ("config", "[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_run_form_input_is_refused_and_changes_nothing(
    operator_client, task, field, value, message
):
    data = {"args": "", "args_style": "shell", "env": "", "config": ""}
    data[field] = value
    response = operator_client.post(reverse("runs:run_task", args=[task.name]), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Run.objects.count() == 0


def test_a_second_start_while_live_is_refused_with_a_message(operator_client, task):
    live = Run.objects.create(task=task, status=S.QUEUED)
    response = operator_client.post(reverse("runs:run_task", args=[task.name]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("runs:detail", args=[live.pk])
    assert f"already has run #{live.pk} queued" in response.content.decode()
    assert Run.objects.count() == 1


def test_cancel_ends_a_queued_run_and_says_so_for_a_finished_one(operator_client, operator, task):
    run = Run.objects.create(task=task, status=S.QUEUED)
    response = operator_client.post(reverse("runs:cancel", args=[run.pk]), follow=True)
    run.refresh_from_db()
    assert run.status == S.CANCELLED
    assert run.reason == f"cancelled by {operator.username}"
    assert "Cancel requested" in response.content.decode()

    response = operator_client.post(reverse("runs:cancel", args=[run.pk]), follow=True)
    assert "has already ended" in response.content.decode()
    run.refresh_from_db()
    assert run.status == S.CANCELLED


def test_cancel_of_a_running_run_sets_the_flag_for_its_supervisor(operator_client, task):
    run = Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now())
    operator_client.post(reverse("runs:cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.status == S.RUNNING and run.cancel_requested
    page = operator_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "cancel requested" in page


def test_run_again_repeats_arguments_environment_and_config(operator_client, task):
    old = Run.objects.create(
        task=task, status=S.FAILED, args=["x"], env={"K": "v"}, config={"a": 1}
    )
    page = operator_client.get(reverse("runs:detail", args=[old.pk])).content.decode()
    assert 'id="rerun"' in page and 'id="cancel-run"' not in page
    response = operator_client.post(reverse("runs:rerun", args=[old.pk]))
    new = Run.objects.exclude(pk=old.pk).get()
    assert response["Location"] == reverse("runs:detail", args=[new.pk])
    assert (new.args, new.env, new.config) == (["x"], {"K": "v"}, {"a": 1})


ARGPARSE_SCRIPT = """\
import argparse
parser = argparse.ArgumentParser()
parser.add_argument("source", help="where the data comes from")
parser.add_argument("--count", type=int, default=3)
parser.add_argument("--mode", choices=["fast", "slow"])
parser.add_argument("--verbose", action="store_true")
args = parser.parse_args()
"""


def param_post(**fields: str) -> dict[str, str]:
    data = {"args": "", "args_style": "lines", "env": "", "config": ""}
    data.update({k if k in data else f"p_{k}": v for k, v in fields.items()})
    return data


def test_task_page_offers_a_form_from_the_scripts_argparse(operator_client, make_task):
    make_task("etl", ARGPARSE_SCRIPT)
    page = operator_client.get(reverse("runs:task", args=["etl"])).content.decode()
    for name in ("p_source", "p_count", "p_mode", "p_verbose"):
        assert f'name="{name}"' in page
    assert "where the data comes from" in page
    assert '<code>source</code> <span class="tag">required</span>' in page
    assert "default: 3" in page
    assert '<option value="slow">' in page


def test_parameter_fields_become_the_scripts_arguments(operator_client, make_task):
    make_task("etl", ARGPARSE_SCRIPT)
    response = operator_client.post(
        reverse("runs:run_task", args=["etl"]),
        param_post(source="data dir", count="5", mode="slow", verbose="on"),
    )
    assert response.status_code == 302
    assert Run.objects.get().args == ["data dir", "--count", "5", "--mode", "slow", "--verbose"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"source": "x", "count": "many"}, "must be an integer"),
        ({"count": "2"}, "is required"),
        ({"source": "x", "args": "--other"}, "either the parameters or the free arguments"),
    ],
)
def test_bad_parameters_are_refused_and_change_nothing(operator_client, make_task, fields, message):
    make_task("etl", ARGPARSE_SCRIPT)
    response = operator_client.post(reverse("runs:run_task", args=["etl"]), param_post(**fields))
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Run.objects.count() == 0


def test_free_arguments_still_work_beside_a_parameter_form(operator_client, make_task):
    make_task("etl", ARGPARSE_SCRIPT, args=["default-source"])
    url = reverse("runs:run_task", args=["etl"])
    operator_client.post(url, param_post(args="one two", args_style="shell"))
    assert Run.objects.get().args == ["one", "two"]
    Run.objects.all().delete()
    # Nothing filled in: the task's default arguments.
    operator_client.post(url, param_post())
    assert Run.objects.get().args == ["default-source"]


# --- the run list ------------------------------------------------------------


def test_run_list_filters_by_task_state_trigger_and_time(viewer_client, make_task):
    a = make_task("alpha", HELLO)
    b = make_task("beta", HELLO)
    now = timezone.now()
    old = Run.objects.create(task=a, status=S.FAILED, queued_at=now - timedelta(days=3))
    ok = Run.objects.create(task=a, status=S.SUCCEEDED, trigger=Run.Trigger.API)
    other = Run.objects.create(task=b, status=S.SUCCEEDED, trigger=Run.Trigger.SCHEDULE)

    def shown(query: str) -> set[int]:
        response = viewer_client.get(reverse("runs:runs") + query)
        assert response.status_code == 200
        return {run.pk for run in response.context["runs"]}

    assert shown("") == {old.pk, ok.pk, other.pk}
    assert shown("?task=alpha") == {old.pk, ok.pk}
    assert shown("?status=succeeded") == {ok.pk, other.pk}
    assert shown("?trigger=schedule") == {other.pk}
    since = (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert shown(f"?since={since}") == {ok.pk, other.pk}
    until = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    assert shown(f"?until={until}") == {old.pk}
    assert shown("?task=alpha&status=succeeded&trigger=api") == {ok.pk}


def test_run_tables_show_each_runs_row(viewer_client, task, operator):
    """The rows of the run list and of the task page's history (written in
    Python, runs_pages.run_rows): link, task, state, trigger and who, attempt,
    queued time, duration, exit code."""
    queued_at = timezone.now() - timedelta(hours=3, minutes=5)
    done = Run.objects.create(
        task=task,
        status=S.FAILED,
        trigger=Run.Trigger.RETRY,
        triggered_by=operator,
        attempt=2,
        exit_code=3,
        queued_at=queued_at,
        started_at=queued_at,
        finished_at=queued_at + timedelta(seconds=12.4),
    )
    live = Run.objects.create(task=task, status=S.RUNNING, progress=40, started_at=queued_at)
    listed = viewer_client.get(reverse("runs:runs")).content.decode()
    history = viewer_client.get(reverse("runs:task", args=[task.name])).content.decode()
    for page, with_task in ((listed, True), (history, False)):
        row = page[page.index(f'<tr data-run="{done.pk}">') :].split("</tr>")[0]
        assert f'<a href="/runs/{done.pk}/">#{done.pk}</a>' in row
        assert ('<a href="/tasks/hello/">hello</a>' in row) is with_task
        assert '<span class="badge st-failed" data-status="failed">Failed</span>' in row
        assert 'Retry <span class="muted">by operators</span>' in row
        assert '<span class="tag">attempt 2</span>' in row
        local = timezone.localtime(queued_at)
        assert f'<td title="3\xa0hours, 5\xa0minutes ago">{local:%Y-%m-%d %H:%M:%S}</td>' in row
        assert "<td>12.4 s</td><td>3</td>" in row
        row = page[page.index(f'<tr data-run="{live.pk}">') :].split("</tr>")[0]
        assert 'data-status="running">Running</span>' in row
        assert '<span class="muted small">40%</span>' in row
        assert "<td>—</td></tr>" in row + "</tr>"


def test_run_list_shows_an_error_for_a_bad_filter(viewer_client, task):
    response = viewer_client.get(reverse("runs:runs") + "?task=nope&status=bogus")
    page = response.content.decode()
    assert response.status_code == 200
    assert 'class="errorlist"' in page
    assert "Select a valid choice" in page


def test_run_list_pages_by_id_without_counting_the_table(viewer_client, task):
    Run.objects.bulk_create(
        [Run(task=task, status=S.SUCCEEDED) for _ in range(RUNS_PAGE_SIZE * 2 + 5)]
    )
    ids = list(Run.objects.order_by("-id").values_list("id", flat=True))
    url = reverse("runs:runs")

    with CaptureQueriesContext(connection) as queries:
        first = viewer_client.get(url)
    run_queries = [q["sql"] for q in queries if "runs_run" in q["sql"]]
    assert run_queries and not any("COUNT(" in sql.upper() for sql in run_queries)
    assert [r.pk for r in first.context["runs"]] == ids[:RUNS_PAGE_SIZE]
    page = first.context["page"]
    assert page.newer is None and page.older == ids[RUNS_PAGE_SIZE - 1]
    assert f"?before={page.older}" in first.content.decode()

    second = viewer_client.get(f"{url}?before={page.older}")
    assert [r.pk for r in second.context["runs"]] == ids[RUNS_PAGE_SIZE : RUNS_PAGE_SIZE * 2]
    assert second.context["page"].newer == ids[RUNS_PAGE_SIZE]

    third = viewer_client.get(f"{url}?before={second.context['page'].older}")
    assert [r.pk for r in third.context["runs"]] == ids[RUNS_PAGE_SIZE * 2 :]
    assert third.context["page"].older is None

    back = viewer_client.get(f"{url}?after={second.context['page'].newer}")
    assert [r.pk for r in back.context["runs"]] == ids[:RUNS_PAGE_SIZE]
    assert back.context["page"].newer is None
    assert back.context["page"].older == ids[RUNS_PAGE_SIZE - 1]


def test_run_list_pages_keep_the_filters(viewer_client, make_task):
    a = make_task("alpha", HELLO)
    b = make_task("beta", HELLO)
    Run.objects.bulk_create(
        [Run(task=a if i % 2 else b, status=S.SUCCEEDED) for i in range(RUNS_PAGE_SIZE * 3)]
    )
    first = viewer_client.get(reverse("runs:runs") + "?task=alpha")
    assert all(r.task_id == a.pk for r in first.context["runs"])
    older = first.context["page"].older
    assert f"?task=alpha&amp;before={older}" in first.content.decode()
    second = viewer_client.get(reverse("runs:runs") + f"?task=alpha&before={older}")
    runs = second.context["runs"]
    assert len(runs) == RUNS_PAGE_SIZE // 2 and all(r.task_id == a.pk for r in runs)


def test_list_pages_answer_their_refresh_script_with_json(viewer_client, task):
    Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now(), progress=42)
    for name in ["runs:dashboard", "runs:tasks", "runs:runs"]:
        data = viewer_client.get(reverse(name) + "?partial=1").json()
        assert data["live"] is True, name
        assert "hello" in data["html"], name
    data = viewer_client.get(reverse("runs:task", args=[task.name]) + "?partial=1").json()
    assert data["live"] is True
    Run.objects.update(status=S.SUCCEEDED, finished_at=timezone.now())
    assert viewer_client.get(reverse("runs:dashboard") + "?partial=1").json()["live"] is False


def test_a_run_delayed_until_later_keeps_no_page_polling_fast(viewer_client, task):
    later = timezone.now() + timedelta(hours=2)
    run = Run.objects.create(task=task, status=S.QUEUED, not_before=later, scheduled_for=later)
    for name in ["runs:dashboard", "runs:tasks", "runs:runs"]:
        assert viewer_client.get(reverse(name) + "?partial=1").json()["live"] is False, name
    page = viewer_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert 'data-waiting="1"' in page and "waits until" in page
    data = viewer_client.get(reverse("runs:live", args=[run.pk])).json()
    assert data["active"] is True and data["waiting"] is True


# --- the dashboard and the task pages ------------------------------------------------


def test_dashboard_shows_running_queued_failures_counts_and_chart(viewer_client, make_task):
    busy = make_task("busy", HELLO)
    waiting = make_task("waiting", HELLO)
    broken = make_task("broken", HELLO)
    Run.objects.create(
        task=busy,
        status=S.RUNNING,
        started_at=timezone.now(),
        progress=37,
        progress_message="step 3",
    )
    Run.objects.create(task=waiting, status=S.QUEUED)
    Run.objects.create(task=broken, status=S.FAILED, exit_code=2, reason="exit code 2")
    Run.objects.create(
        task=broken, status=S.SUCCEEDED, queued_at=timezone.now() - timedelta(days=2)
    )
    response = viewer_client.get(reverse("runs:dashboard"))
    page = response.content.decode()
    assert 'aria-valuenow="37"' in page and "step 3" in page
    assert "waiting #" in page
    assert "broken #" in page and "exit code 2" in page
    counts = {value: n for value, _, n in response.context["counts"]}
    # The two-day-old success is outside the last 24 hours.
    assert counts == {**dict.fromkeys(S.values, 0), "running": 1, "queued": 1, "failed": 1}
    chart = response.context["chart"]
    assert chart["total"] == 3 and len(chart["bars"]) == 24
    assert chart["bars"][-1].total == 3
    # One bar: a failed segment and a live one (queued and running together).
    assert [seg["css"] for seg in chart["bars"][-1].segments] == ["bad", "live"]
    assert page.count('class="seg ') == 2
    assert 'data-live="1"' in page


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/St_Johns"])
def test_the_chart_counts_each_run_in_its_hour_in_any_time_zone(settings, task, zone):
    from runs.charts import hourly_chart

    settings.TIME_ZONE = zone
    now = timezone.now()
    Run.objects.create(task=task, status=S.SUCCEEDED, queued_at=now)
    Run.objects.create(task=task, status=S.FAILED, queued_at=now - timedelta(hours=3))
    chart = hourly_chart(now)
    assert [bar.total for bar in chart["bars"]][-4:] == [1, 0, 0, 1]
    assert chart["total"] == 2


def test_task_list_shows_last_run_and_a_spark_line_of_durations(viewer_client, task):
    now = timezone.now()
    for seconds in (1, 3, 2):
        Run.objects.create(
            task=task,
            status=S.SUCCEEDED,
            started_at=now,
            finished_at=now + timedelta(seconds=seconds),
        )
    response = viewer_client.get(reverse("runs:tasks"))
    row = response.context["rows"][0]
    assert row["last"].pk == Run.objects.order_by("-id").first().pk
    assert row["spark"]["count"] == 3 and row["spark"]["max"] == 3
    assert "<polyline" in response.content.decode()


def test_task_page_shows_code_history_form_and_revision_diffs(client, django_user_model, task):
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    scripts.save_code(task, 'print("one")\n', author=admin)
    scripts.save_code(task, 'print("one")\nprint("two")\n', author=admin)
    Run.objects.create(task=task, status=S.SUCCEEDED)
    page = client.get(reverse("runs:task", args=[task.name])).content.decode()
    assert '<span class="ln">print(&quot;two&quot;)</span>' in page
    assert reverse("admin:runs_task_change", args=[task.pk]) in page
    assert 'id="rev-2"' in page and 'id="rev-1"' in page
    assert '<span class="d-add">+print(&quot;two&quot;)</span>' in page
    assert "by root" in page
    assert 'name="args"' in page and 'name="env"' in page and 'name="config"' in page
    # The default arguments fill the form, one per line.
    assert "--name\nworld</textarea>" in page


def test_admin_task_page_shows_the_revision_history_with_diffs(client, django_user_model, task):
    admin = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    scripts.save_code(task, "x = 1\n", author=admin)
    scripts.save_code(task, "x = 2\n", author=admin)
    page = client.get(reverse("admin:runs_task_change", args=[task.pk])).content.decode()
    assert 'id="revision-history"' in page
    assert '<span class="d-del">-x = 1</span>' in page
    assert '<span class="d-add">+x = 2</span>' in page


# --- the run page ---------------------------------------------------------------


def test_run_page_shows_state_progress_result_history_and_who_started_it(
    operator_client, operator, task
):
    from runs import services

    run = services.start_run(task, user=operator, args=["a b"], env={"K": "v"}, config={"c": 1})
    Run.objects.filter(pk=run.pk).update(
        status=S.SUCCEEDED,
        exit_code=0,
        progress=100,
        progress_message="done",
        result={"rows": 12},
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    page = operator_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert 'data-status="succeeded"' in page
    assert "Manual by <strong>operators</strong>" in page
    assert 'aria-valuenow="100"' in page and "done" in page
    assert "&quot;rows&quot;: 12" in page
    assert f"started by {operator.username}" in page
    assert '<code class="arg">a b</code>' in page and "K=v" in page
    assert 'id="rerun"' in page


def test_run_page_shows_what_changed_since_the_last_successful_run(viewer_client, task):
    r1 = scripts.save_code(task, "print(1)\n")
    r2 = scripts.save_code(task, "print(2)\n")
    ok = Run.objects.create(task=task, status=S.SUCCEEDED, code_hash=r1.code_hash, revision=r1)
    Run.objects.create(task=task, status=S.FAILED, code_hash=r2.code_hash, revision=r2)
    run = Run.objects.create(task=task, status=S.FAILED, code_hash=r2.code_hash, revision=r2)
    page = viewer_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert f'Changes since <a href="/runs/{ok.pk}/">run #{ok.pk}</a>' in page
    assert '<span class="d-del">-print(1)</span>' in page
    assert '<span class="d-add">+print(2)</span>' in page
    assert f"#rev-{r2.number}" in page
    assert f"The code of r{r2.number}" in page and '<span class="ln">print(2)</span>' in page

    same = Run.objects.create(task=task, status=S.SUCCEEDED, code_hash=r1.code_hash, revision=r1)
    page = viewer_client.get(reverse("runs:detail", args=[same.pk])).content.decode()
    assert "Same code as" in page


def test_run_page_renders_only_the_tail_of_a_long_log(viewer_client, task):
    run = Run.objects.create(task=task, status=S.SUCCEEDED)
    head = b"FIRST LINE\n" + b"x" * (LOG_TAIL_BYTES * 3) + b"\n"
    add_log(run, head, b"LAST LINE\n")
    response = viewer_client.get(reverse("runs:detail", args=[run.pk]))
    page = response.content.decode()
    assert "LAST LINE" in page and "FIRST LINE" not in page
    assert len(response.context["log_text"].encode()) <= LOG_TAIL_BYTES
    assert f'data-log-start="{run.log_size - LOG_TAIL_BYTES}"' in page
    assert 'id="log-earlier">' in page  # the button is not hidden

    earlier = viewer_client.get(
        reverse("runs:log", args=[run.pk]) + f"?before={response.context['log_start']}"
    ).json()
    assert earlier["end"] == response.context["log_start"]
    assert earlier["start"] == response.context["log_start"] - LOG_TAIL_BYTES

    download = viewer_client.get(reverse("runs:download_log", args=[run.pk]))
    assert download["Content-Disposition"] == f'attachment; filename="hello_{run.pk}.log"'
    assert b"".join(download.streaming_content) == head + b"LAST LINE\n"


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner and statistics")
def test_run_page_finds_retries_and_next_runs_by_index_with_statistics(viewer_client, task):
    """Nearly every run has no retry and started nothing. Once ANALYZE has
    statistics on those (nearly all NULL) columns, SQLite judged their plain
    indexes useless and walked the whole table for the run page; the
    partial indexes of migration 0007 hold only the rows that have one."""
    Run.objects.bulk_create([Run(task=task, status=S.SUCCEEDED) for _ in range(3000)])
    first = Run.objects.create(task=task, status=S.FAILED)
    retry = Run.objects.create(task=task, status=S.SUCCEEDED, retry_of=first, attempt=2)
    after = Run.objects.create(task=task, status=S.SUCCEEDED, upstream=retry)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with CaptureQueriesContext(connection) as queries:
        page = viewer_client.get(reverse("runs:detail", args=[retry.pk])).content.decode()
    assert f'href="/runs/{first.pk}/"' in page and f'href="/runs/{after.pk}/"' in page
    plans = {}
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            where = query["sql"].partition(" WHERE ")[2]
            if '"runs_run"."retry_of_id" =' in where or '"runs_run"."upstream_id" =' in where:
                cursor.execute("EXPLAIN QUERY PLAN " + query["sql"])
                plans[query["sql"]] = " / ".join(row[3] for row in cursor.fetchall())
    assert len(plans) >= 2, plans
    for sql, plan in plans.items():
        assert "USING INDEX run_retry_of" in plan or "USING INDEX run_upstream" in plan, (sql, plan)
        assert "SCAN runs_run" not in plan, (sql, plan)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's planner")
def test_run_list_finds_a_rare_trigger_by_index(viewer_client, task):
    """Filtered by a trigger few runs have, the list walked the whole run
    table newest first looking for them (a second at 1,000,000 runs)."""
    Run.objects.bulk_create([Run(task=task, status=S.SUCCEEDED) for _ in range(200)])
    retry = Run.objects.create(task=task, status=S.SUCCEEDED, trigger=Run.Trigger.RETRY)
    with CaptureQueriesContext(connection) as queries:
        page = viewer_client.get(reverse("runs:runs") + "?trigger=retry").content.decode()
    assert f'<tr data-run="{retry.pk}">' in page and page.count("<tr data-run=") == 1
    listing = [q["sql"] for q in queries.captured_queries if '"runs_run"."trigger" =' in q["sql"]]
    assert listing
    with connection.cursor() as cursor:
        for sql in listing:
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            plan = " / ".join(row[3] for row in cursor.fetchall())
            assert "USING INDEX run_trigger_recent" in plan, plan


# --- the live endpoint ---------------------------------------------------------------


def test_live_endpoint_returns_the_log_after_the_offset(viewer_client, task):
    run = Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now(), progress=10)
    url = reverse("runs:live", args=[run.pk])
    add_log(run, b"one\n", b"two\n")

    data = viewer_client.get(url + "?offset=0").json()
    assert data["status"] == "running" and data["active"] is True and data["progress"] == 10
    assert data["log"] == {
        "start": 0,
        "text": "one\ntwo\n",
        "offset": 8,
        "size": 8,
        "reset": False,
        "more": False,
    }
    assert 'id="cancel-run"' not in data["html"]["summary"]
    assert "running" in data["html"]["events"] or data["html"]["events"]

    assert viewer_client.get(url + "?offset=8").json()["log"]["text"] == ""
    add_log(run, "drei ü\n".encode())
    data = viewer_client.get(url + "?offset=8").json()
    assert data["log"]["text"] == "drei ü\n" and data["log"]["offset"] == run.log_size
    assert data["log"]["start"] == 8

    Run.objects.filter(pk=run.pk).update(status=S.SUCCEEDED, exit_code=0)
    data = viewer_client.get(url + f"?offset={run.log_size}").json()
    assert data["active"] is False and data["exit_code"] == 0


def test_live_endpoint_caps_each_answer_and_keeps_characters_whole(viewer_client, task):
    run = Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now())
    # "é" is two bytes: an odd cap falls inside one.
    text = "é" * (LOG_LIVE_MAX_BYTES // 2 + 10)
    add_log(run, text.encode()[: LOG_LIVE_MAX_BYTES - 1], text.encode()[LOG_LIVE_MAX_BYTES - 1 :])
    url = reverse("runs:live", args=[run.pk])
    first = viewer_client.get(url + "?offset=0").json()["log"]
    assert first["more"] is True and first["reset"] is False
    assert first["offset"] <= LOG_LIVE_MAX_BYTES and first["offset"] % 2 == 0
    assert set(first["text"]) == {"é"}
    second = viewer_client.get(url + f"?offset={first['offset']}").json()["log"]
    assert first["text"] + second["text"] == text
    assert second["more"] is False


def test_live_endpoint_jumps_to_the_tail_when_far_behind(viewer_client, task):
    run = Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now())
    add_log(run, b"a" * LOG_CATCH_UP_BYTES, b"END\n")
    data = viewer_client.get(reverse("runs:live", args=[run.pk]) + "?offset=0").json()["log"]
    assert data["reset"] is True
    assert data["start"] == run.log_size - LOG_TAIL_BYTES
    assert data["text"].endswith("END\n") and data["offset"] == run.log_size


def test_live_endpoint_refuses_a_bad_offset(viewer_client, task):
    run = Run.objects.create(task=task)
    url = reverse("runs:live", args=[run.pk])
    assert viewer_client.get(url + "?offset=abc").status_code == 400
    assert viewer_client.get(url + "?offset=-5").status_code == 400


def _tables(queries) -> list[str]:
    """The tables a list of captured queries read, in order."""
    found = []
    for query in queries:
        sql = query["sql"]
        found.append(sql.split(" FROM ")[1].split()[0].strip('"') if " FROM " in sql else sql)
    return found


def test_live_endpoint_renders_the_parts_only_when_they_change(viewer_client, task):
    """The run page polls several times a second: a poll that finds nothing
    new reads the run and its last state change, and renders nothing."""
    started = timezone.now() - timedelta(seconds=3)
    run = Run.objects.create(task=task, status=S.RUNNING, started_at=started, progress=10)
    RunEvent.objects.create(run=run, from_status="queued", to_status="running")
    page = viewer_client.get(reverse("runs:detail", args=[run.pk]))
    version = page.context["version"]
    assert f'data-version="{version}"' in page.content.decode()
    assert 'id="run-duration"' in page.content.decode()
    url = reverse("runs:live", args=[run.pk])

    def poll(offset: int = 0, version: str | None = version) -> tuple[dict, list[str]]:
        query = f"?offset={offset}" + (f"&version={version}" if version is not None else "")
        with CaptureQueriesContext(connection) as queries:
            data = viewer_client.get(url + query).json()
        return data, _tables(queries.captured_queries)

    data, tables = poll()
    assert "html" not in data and data["version"] == version
    assert data["log"]["text"] == "" and data["duration"].endswith(" s")
    # The session, the user and their permissions, the run, its last event.
    assert [t for t in tables if t.startswith("runs_")] == ["runs_run", "runs_runevent"]
    assert len(tables) <= 6, tables

    add_log(run, b"one\n")
    data, tables = poll()
    assert data["log"]["text"] == "one\n" and "html" not in data
    assert [t for t in tables if t.startswith("runs_")] == [
        "runs_run",
        "runs_runevent",
        "runs_logchunk",
        "runs_logchunk",
    ]

    # What the parts show changed: they come again, with the new version.
    Run.objects.filter(pk=run.pk).update(progress=50, progress_message="half way")
    data, _ = poll(offset=4)
    assert "half way" in data["html"]["summary"] and data["version"] != version
    version = data["version"]
    assert "html" not in poll(offset=4, version=version)[0]
    RunEvent.objects.create(run=run, from_status="running", to_status="running", reason="moved")
    data, _ = poll(offset=4, version=version)
    assert "moved" in data["html"]["events"]
    # Without a version (an older page), or once the run ended, always.
    assert "html" in poll(offset=4, version=None)[0]
    version = data["version"]
    Run.objects.filter(pk=run.pk).update(status=S.SUCCEEDED, finished_at=timezone.now())
    data, _ = poll(offset=4, version=version)
    assert data["active"] is False and 'data-status="succeeded"' in data["html"]["summary"]
    assert "html" in poll(offset=4, version=data["version"])[0]


def test_live_endpoint_sends_the_ticking_times(viewer_client, task):
    later = timezone.now() + timedelta(minutes=10)
    run = Run.objects.create(task=task, status=S.QUEUED, not_before=later)
    data = viewer_client.get(reverse("runs:live", args=[run.pk])).json()
    assert data["wait_left"].startswith("in 9 m") and data["duration"] == "—"
    assert f'id="wait-left">{data["wait_left"]}<' in data["html"]["summary"]
    Run.objects.filter(pk=run.pk).update(not_before=timezone.now() - timedelta(seconds=1))
    data = viewer_client.get(reverse("runs:live", args=[run.pk])).json()
    assert data["wait_left"] == "due now"


def test_live_summary_has_the_buttons_for_an_operator(operator_client, task):
    run = Run.objects.create(task=task, status=S.RUNNING, started_at=timezone.now())
    data = operator_client.get(reverse("runs:live", args=[run.pk])).json()
    assert 'id="cancel-run"' in data["html"]["actions"]
    assert json.loads(json.dumps(data))["cancel_requested"] is False


# --- delayed starts, schedules, retries and chains ---------------------------------


def _local(moment: datetime, format: str = "Y-m-d H:i T") -> str:
    """A time as the pages show it: in TIME_ZONE."""
    return dateformat.format(timezone.localtime(moment), format)


def start_post(**fields: str) -> dict[str, str]:
    data = {"args": "", "args_style": "lines", "env": "", "config": "", "start": "now"}
    data.update(fields)
    return data


def test_run_form_starts_a_run_after_a_delay(operator_client, task):
    before = timezone.now()
    response = operator_client.post(
        reverse("runs:run_task", args=[task.name]),
        start_post(start="delay", delay="90"),
        follow=True,
    )
    after = timezone.now()
    run = Run.objects.get()
    assert run.status == S.QUEUED and run.dispatched_at is None
    assert before + timedelta(seconds=90) <= run.not_before <= after + timedelta(seconds=90)
    assert run.scheduled_for == run.not_before
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("runs:detail", args=[run.pk])
    assert f"Run #{run.pk} of hello waits until" in page
    assert 'id="waits-until"' in page
    assert "waits until " + _local(run.not_before, "Y-m-d H:i:s T") in page


def test_a_delay_of_zero_starts_now(operator_client, task):
    operator_client.post(
        reverse("runs:run_task", args=[task.name]), start_post(start="delay", delay="0")
    )
    run = Run.objects.get()
    assert run.not_before is None and run.dispatched_at is not None


def test_run_form_starts_a_run_at_a_time_read_in_the_server_zone(settings, operator_client, task):
    settings.TIME_ZONE = "Asia/Kolkata"  # UTC+05:30, no daylight saving
    page = operator_client.get(reverse("runs:task", args=[task.name])).content.decode()
    assert 'type="datetime-local"' in page and "Asia/Kolkata" in page
    local = timezone.localtime(timezone.now() + timedelta(days=2)).replace(second=0, microsecond=0)
    operator_client.post(
        reverse("runs:run_task", args=[task.name]),
        start_post(start="at", at=local.strftime("%Y-%m-%dT%H:%M")),
    )
    run = Run.objects.get()
    # Read in UTC, it would be 5 h 30 m off.
    assert run.not_before == local
    # What the page shows is in that zone too.
    page = operator_client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert f"waits until {local:%Y-%m-%d %H:%M:00} IST" in page


def _past() -> str:
    return timezone.localtime(timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")


@pytest.mark.parametrize(
    "fields, field, message",
    [
        ({"start": "delay", "delay": "soon"}, "delay", "delay must be a number of seconds"),
        ({"start": "delay", "delay": "-5"}, "delay", "delay must be between 0 and"),
        ({"start": "delay", "delay": "99999999"}, "delay", "delay must be between 0 and"),
        ({"start": "delay", "delay": ""}, "delay", "Give the delay in seconds."),
        ({"start": "at", "at": ""}, "at", "Give the time."),
        ({"start": "at", "at": "tomorrow"}, "at", "at must be an ISO 8601 time"),
        ({"start": "at", "at": "2030-02-31T08:00"}, "at", "at must be an ISO 8601 time"),
        ({"start": "at", "at": _past}, "at", "is in the past"),
        ({"start": "later"}, "start", "Select a valid choice"),
    ],
)
def test_a_bad_delay_or_time_is_refused_on_its_field_and_queues_nothing(
    operator_client, task, fields, field, message
):
    fields = {k: v() if callable(v) else v for k, v in fields.items()}
    response = operator_client.post(
        reverse("runs:run_task", args=[task.name]), start_post(**fields)
    )
    assert response.status_code == 400
    assert any(message in error for error in response.context["form"].errors[field])
    page = response.content.decode()
    assert message in page and "The run was not started" in page
    # What was typed stays in the form.
    if field != "start" and fields[field]:
        assert f'value="{fields[field]}"' in page
    assert Run.objects.count() == 0


def test_the_lists_show_when_a_delayed_run_waits_until(viewer_client, task):
    later = timezone.now() + timedelta(hours=3)
    run = Run.objects.create(task=task, status=S.QUEUED, not_before=later, scheduled_for=later)
    shown = "waits until " + dateformat.format(timezone.localtime(later), "Y-m-d H:i")
    for name in ["runs:dashboard", "runs:tasks", "runs:runs"]:
        assert shown in viewer_client.get(reverse(name)).content.decode(), name
    assert shown in viewer_client.get(reverse("runs:task", args=[task.name])).content.decode()
    # Once the clock admitted it, it no longer waits.
    Run.objects.filter(pk=run.pk).update(not_before=None, dispatched_at=timezone.now())
    assert "waits until" not in viewer_client.get(reverse("runs:runs")).content.decode()


def test_task_page_shows_schedules_overlap_retries_links_and_webhooks(
    client, viewer_client, django_user_model, make_task, task
):
    daily = TaskSchedule.objects.create(task=task, cron="30 6 * * *", timezone="Europe/Paris")
    TaskSchedule.objects.create(task=task, cron="*/5 * * * *", enabled=False)
    Task.objects.filter(pk=task.pk).update(
        overlap=Task.Overlap.QUEUE,
        max_queued=3,
        retry_count=2,
        retry_on=["failed", "timed_out"],
        retry_delay=30,
        retry_backoff=2,
        retry_max_delay=600,
    )
    report = make_task("report", HELLO)
    fetch = make_task("fetch", HELLO)
    TaskLink.objects.create(upstream=task, downstream=report, on=TaskLink.On.SUCCESS)
    TaskLink.objects.create(upstream=fetch, downstream=task, on=TaskLink.On.ANY)
    hook = Webhook.objects.create(
        task=task, url="https://hooks.example.com/taskrun", on_success=True
    )

    daily.refresh_from_db()
    assert daily.next_run_at is not None  # its django-q2 row exists
    page = viewer_client.get(reverse("runs:task", args=[task.name])).content.decode()
    assert "<code>30 6 * * *</code>" in page and "Europe/Paris" in page
    assert "<code>*/5 * * * *</code>" in page and '<span class="tag">off</span>' in page
    assert _local(daily.next_run_at) in page
    assert "(06:30 there)" in page  # and in the schedule's own zone
    assert "queue: the new run waits for the running one, at most 3 waiting" in page
    assert "up to <strong>2</strong> on failed, timed out; the first after 30.0 s" in page
    assert "×2, at most 10 m 00 s" in page
    assert f'href="{reverse("runs:task", args=["report"])}">report</a>' in page
    assert f'href="{reverse("runs:task", args=["fetch"])}">fetch</a>' in page
    # A viewer sees where it goes, not the path that may carry its token.
    assert "https://hooks.example.com/…" in page and "hooks.example.com/taskrun" not in page
    assert hook.secret not in page
    # The next run is the earliest of the enabled schedules.
    assert '<div id="next-run"><dt>Next run</dt><dd><span title="' in page
    assert _local(schedules.next_run_at(task)) in page
    # A viewer may not edit: no admin links.
    assert "/admin/" not in page

    admin = django_user_model.objects.create_superuser("root", password="pw")
    client.force_login(admin)
    page = client.get(reverse("runs:task", args=[task.name])).content.decode()
    change = reverse("admin:runs_task_change", args=[task.pk])
    admin_page = client.get(change).content.decode()
    assert "https://hooks.example.com/taskrun" in page  # editors see it whole
    for group in ("schedules-group", "downstream_links-group", "webhooks-group"):
        assert f'href="{change}#{group}"' in page
        assert f'id="{group}"' in admin_page  # the anchor leads somewhere


def test_a_paused_task_has_no_next_run(viewer_client, task):
    TaskSchedule.objects.create(task=task, cron="0 * * * *")
    task.enabled = False
    task.save()
    page = viewer_client.get(reverse("runs:task", args=[task.name])).content.decode()
    assert "none while paused" in page and "its schedules do not fire" in page
    assert viewer_client.get(reverse("runs:tasks")).context["rows"][0]["next_run_at"] is None


def test_task_list_shows_each_tasks_next_run_without_a_query_per_task(viewer_client, make_task):
    soon = timezone.now() + timedelta(minutes=3)
    hourly = make_task("hourly", HELLO)
    TaskSchedule.objects.create(task=hourly, cron="0 * * * *")
    delayed = make_task("delayed", HELLO)
    TaskSchedule.objects.create(task=delayed, cron="0 0 1 1 *")
    Run.objects.create(task=delayed, status=S.QUEUED, not_before=soon)
    make_task("manual", HELLO)
    url = reverse("runs:tasks")
    response = viewer_client.get(url)
    rows = {row["task"].name: row["next_run_at"] for row in response.context["rows"]}
    assert rows == {
        "delayed": soon,
        "hourly": schedules.next_run_at(hourly),
        "manual": None,
    }
    page = response.content.decode()
    assert dateformat.format(timezone.localtime(soon), "Y-m-d H:i") in page

    # Two more tasks cost only their recent runs (the spark line): the next
    # run times come from queries for the whole list.
    with CaptureQueriesContext(connection) as three:
        viewer_client.get(url)
    for name in ("more1", "more2"):
        TaskSchedule.objects.create(task=make_task(name, HELLO), cron="0 * * * *")
    with CaptureQueriesContext(connection) as five:
        viewer_client.get(url)
    assert len(five) == len(three) + 2


def test_run_page_shows_the_attempt_chain(viewer_client, task):
    later = timezone.now() + timedelta(minutes=10)
    first = Run.objects.create(task=task, status=S.FAILED, attempt=1)
    second = Run.objects.create(task=task, status=S.TIMED_OUT, attempt=2, retry_of=first)
    third = Run.objects.create(
        task=task, status=S.QUEUED, attempt=3, retry_of=second, not_before=later
    )
    response = viewer_client.get(reverse("runs:detail", args=[second.pk]))
    assert [run.pk for run in response.context["attempts"]] == [first.pk, second.pk, third.pk]
    page = response.content.decode()
    chain = page[page.index('id="attempts"') : page.index("</ol>", page.index('id="attempts"'))]
    links = [f'href="/runs/{run.pk}/"' for run in (first, second, third)]
    assert chain.index(links[0]) < chain.index(links[1]) < chain.index(links[2])
    for status in ("failed", "timed_out", "queued"):
        assert f'data-status="{status}"' in chain
    assert chain.count('aria-current="page"') == 1
    assert chain.index('aria-current="page"') < chain.index(links[1]) < chain.index(links[2])
    assert "waits until" in chain
    # The live endpoint's summary carries it too, so a new attempt appears.
    data = viewer_client.get(reverse("runs:live", args=[first.pk])).json()
    assert 'id="attempts"' in data["html"]["summary"] and links[2] in data["html"]["summary"]

    alone = Run.objects.create(task=task, status=S.FAILED)
    assert (
        'id="attempts"'
        not in viewer_client.get(reverse("runs:detail", args=[alone.pk])).content.decode()
    )


def test_run_page_shows_the_upstream_run_and_the_downstream_runs(viewer_client, make_task, task):
    report = make_task("report", HELLO)
    up = Run.objects.create(task=task, status=S.SUCCEEDED, exit_code=0)
    down = Run.objects.create(
        task=report, status=S.RUNNING, trigger=Run.Trigger.UPSTREAM, upstream=up
    )
    page = viewer_client.get(reverse("runs:detail", args=[up.pk])).content.decode()
    block = page[page.index('id="downstream-runs"') :]
    assert f'<a href="/runs/{down.pk}/">report #{down.pk}</a>' in block
    assert 'data-status="running"' in block[: block.index("</div>")]
    assert 'id="upstream-run"' not in page

    page = viewer_client.get(reverse("runs:detail", args=[down.pk])).content.decode()
    block = page[page.index('id="upstream-run"') :]
    assert f'<a href="/runs/{up.pk}/">hello #{up.pk}</a>' in block
    assert 'data-status="succeeded"' in block[: block.index("</div>")]
    assert 'id="downstream-runs"' not in page
