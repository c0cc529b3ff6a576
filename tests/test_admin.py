"""Tasks are written in the admin: names are checked, code must compile, and
the script lands in TASKS_DIR atomically; runs are read-only there."""

import pytest
from django.contrib.auth.models import Group, User

from runs.models import CodeRevision, Run, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("boss", password="pw")
    client.force_login(user)
    return client


# Overlap, retries, and the schedule and downstream inlines (issue 5).
AUTOMATION_FORM = {
    "overlap": "skip",
    "max_queued": "1",
    "retry_count": "0",
    "retry_on": '["failed", "timed_out", "lost"]',
    "retry_delay": "10",
    "retry_backoff": "2",
    "retry_max_delay": "3600",
    "schedules-TOTAL_FORMS": "0",
    "schedules-INITIAL_FORMS": "0",
    "downstream_links-TOTAL_FORMS": "0",
    "downstream_links-INITIAL_FORMS": "0",
    "webhooks-TOTAL_FORMS": "0",
    "webhooks-INITIAL_FORMS": "0",
}


def add_task(client, name, code="print('hi')\n", **extra):
    data = {
        "name": name,
        "description": "",
        "code": code,
        "args": "[]",
        "env": "{}",
        "timeout": "60",
        "enabled": "on",
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
        **AUTOMATION_FORM,
        **extra,
    }
    return client.post("/admin/runs/task/add/", data)


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/b", "..", "evil.py/..", "UPPER", "-dash", "x" * 65, "runs", "", "a b", "é"],
)
def test_bad_names_are_refused_and_nothing_is_written(admin_client, tasks_dir, name):
    response = add_task(admin_client, name)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors.get("name")
    assert not Task.objects.exists()
    assert list(tasks_dir.iterdir()) == []
    assert list(tasks_dir.parent.glob("*.py")) == []


def test_code_that_does_not_compile_is_refused_with_its_line(admin_client, tasks_dir):
    response = add_task(admin_client, "broken", code="x = 1\ndef f(:\n")
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["code"]
    assert "Line 2" in errors[0]
    assert not Task.objects.exists()
    assert list(tasks_dir.iterdir()) == []


def test_saving_writes_the_script_and_keeps_a_revision(admin_client, tasks_dir):
    response = add_task(admin_client, "greet", code="print('v1')\r\n")
    assert response.status_code == 302
    task = Task.objects.get(name="greet")
    assert (tasks_dir / "greet.py").read_text() == "print('v1')\n"
    data = {
        "description": "says hi",
        "code": "print('v2')\n",
        "args": '["--x"]',
        "env": '{"A": "1"}',
        "timeout": "60",
        "enabled": "on",
        "runs-TOTAL_FORMS": "0",
        "runs-INITIAL_FORMS": "0",
        **AUTOMATION_FORM,
    }
    response = admin_client.post(f"/admin/runs/task/{task.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    assert (tasks_dir / "greet.py").read_text() == "print('v2')\n"
    assert [r.number for r in CodeRevision.objects.filter(task=task)] == [2, 1]
    # No temporary files are left beside the script.
    assert sorted(p.name for p in tasks_dir.iterdir()) == ["greet.py"]


def test_bad_args_and_env_are_form_errors(admin_client, tasks_dir):
    response = add_task(admin_client, "typed", args='{"a": 1}', env='["x"]')
    form = response.context["adminform"].form
    assert "args" in form.errors and "env" in form.errors
    assert not Task.objects.exists()


def test_run_now_action_queues_a_run_and_refuses_a_second(admin_client, make_task):
    task = make_task("act", "print(1)")
    data = {"action": "run_now", "_selected_action": [task.pk]}
    admin_client.post("/admin/runs/task/", data)
    assert Run.objects.filter(task=task, trigger="admin").count() == 1
    response = admin_client.post("/admin/runs/task/", data, follow=True)
    assert b"already has run" in response.content
    assert Run.objects.filter(task=task).count() == 1


def test_viewer_cannot_run_or_edit_code(client, make_task):
    task = make_task("look", "print(1)")
    viewer = User.objects.create_user("v", password="pw", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Viewers"))
    client.force_login(viewer)
    page = client.get(f"/admin/runs/task/{task.pk}/change/")
    assert page.status_code == 200
    assert b'name="code"' not in page.content
    client.post("/admin/runs/task/", {"action": "run_now", "_selected_action": [task.pk]})
    assert not Run.objects.exists()


def test_run_page_shows_the_log_and_the_cancel_action_works(admin_client, make_task, execute):
    from runs import services

    task = make_task("shown", "print('line one')")
    run = execute(services.start_run(task))
    page = admin_client.get(f"/admin/runs/run/{run.pk}/change/")
    assert page.status_code == 200
    assert b"line one" in page.content
    queued = services.start_run(task)
    admin_client.post("/admin/runs/run/", {"action": "cancel", "_selected_action": [queued.pk]})
    queued.refresh_from_db()
    assert queued.status == Run.Status.CANCELLED
