"""The operator's management commands, run as real subprocesses where their
exit code and output are the contract."""

import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs import services
from runs.models import LogChunk, Run, Task
from tests.conftest import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


def manage(tasks_dir, *args, timeout=60):
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=subprocess_env(tasks_dir),
        capture_output=True,
        timeout=timeout,
    )


def test_sync_tasks_imports_scripts_idempotently_and_reports_missing(tasks_dir, capsys):
    (tasks_dir / "one.py").write_text("print(1)")
    (tasks_dir / "two.py").write_text("print(2)")
    (tasks_dir / "Bad Name.py").write_text("print(3)")
    call_command("sync_tasks")
    call_command("sync_tasks")
    assert sorted(Task.objects.values_list("name", flat=True)) == ["one", "two"]
    (tasks_dir / "two.py").unlink()
    call_command("sync_tasks")
    err = capsys.readouterr().err
    assert "skipped Bad Name.py" in err
    assert "missing two" in err
    assert Task.objects.get(name="two").missing
    with pytest.raises(services.RunRefused, match="missing"):
        services.start_run(Task.objects.get(name="two"))


def test_run_task_prints_the_run_id(make_task, tasks_dir):
    make_task("quick", "print(1)")
    result = manage(tasks_dir, "run_task", "quick", "--", "--flag", "x")
    assert result.returncode == 0, result.stderr
    run = Run.objects.get(pk=int(result.stdout.decode().strip()))
    assert run.args == ["--flag", "x"] and run.trigger == "cli"


def test_run_task_unknown_name_is_one_readable_line(tasks_dir):
    result = manage(tasks_dir, "run_task", "nope")
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "CommandError: No task named 'nope'. Run sync_tasks to import scripts."
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "code, timeout, expected",
    [
        ("print('fine')", 60, 0),
        ("import sys; print('bad'); sys.exit(7)", 60, 7),
        ("import time; print('slow', flush=True); time.sleep(30)", 1, 124),
    ],
)
def test_run_task_wait_streams_the_log_and_exits_with_the_scripts_code(
    make_task, tasks_dir, cluster, code, timeout, expected
):
    make_task("waited", code, timeout=timeout)
    cluster()
    result = manage(tasks_dir, "run_task", "waited", "--wait")
    assert result.returncode == expected, result.stderr
    first_word = code.split("print('")[1].split("'")[0]
    assert result.stdout.decode().startswith(first_word)


def test_cancel_run_command(make_task, tasks_dir):
    task = make_task("stop_me", "print(1)")
    run = services.start_run(task)
    result = manage(tasks_dir, "cancel_run", str(run.pk))
    assert result.returncode == 0
    run.refresh_from_db()
    assert run.status == S.CANCELLED and run.reason == "cancelled by cli"
    again = manage(tasks_dir, "cancel_run", str(run.pk))
    assert again.returncode == 1
    assert b"already ended" in again.stderr
    assert manage(tasks_dir, "cancel_run", "999999").returncode == 1


def test_prune_runs_deletes_only_old_finished_runs_and_their_logs(make_task, execute):
    task = make_task("old", "print('x')")
    old = execute(services.start_run(task))
    Run.objects.filter(pk=old.pk).update(queued_at=timezone.now() - timedelta(days=40))
    recent = execute(services.start_run(task))
    live_old = services.start_run(task)
    Run.objects.filter(pk=live_old.pk).update(queued_at=timezone.now() - timedelta(days=40))
    call_command("prune_runs", days=30)
    assert set(Run.objects.values_list("pk", flat=True)) == {recent.pk, live_old.pk}
    assert not LogChunk.objects.filter(run_id=old.pk).exists()


def test_prune_runs_refuses_negative_days(tasks_dir):
    result = manage(tasks_dir, "prune_runs", "--days", "-1")
    assert result.returncode == 1
    assert b"--days must be 0 or more" in result.stderr


def test_ensure_admin_creates_one_admin_once(tasks_dir, monkeypatch, capsys):
    from django.contrib.auth.models import User

    monkeypatch.setenv("TASKRUN_ADMIN_PASSWORD", "s3cret-pass")
    call_command("ensure_admin")
    call_command("ensure_admin")
    admin = User.objects.get(is_superuser=True)
    assert admin.username == "admin" and admin.check_password("s3cret-pass")
    assert "s3cret-pass" not in capsys.readouterr().out


def test_run_task_passes_everything_after_double_dash_to_the_script(make_task, tasks_dir):
    make_task("dashes", "print(1)")
    result = manage(tasks_dir, "run_task", "dashes", "a", "--", "--wait", "--param", "x=1", "--")
    assert result.returncode == 0, result.stderr
    run = Run.objects.get(pk=int(result.stdout.decode().strip()))
    assert run.args == ["a", "--wait", "--param", "x=1", "--"]
