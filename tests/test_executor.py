"""The executor, called in this process as a django-q2 worker calls it, with
real scripts in real subprocesses."""

import json
import threading

import psutil
import pytest

from runs import services
from runs.models import Run, RunEvent
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


def test_exit_zero_succeeds_and_keeps_output(make_task, execute):
    task = make_task("ok", "print('hello there')")
    run = execute(services.start_run(task))
    assert run.status == S.SUCCEEDED
    assert run.exit_code == 0
    assert run.read_log() == b"hello there\n"
    assert run.log_size == len(b"hello there\n")
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at
    assert [e.to_status for e in run.events.all()] == ["queued", "running", "succeeded"]


def test_an_end_that_could_not_be_stored_at_first_is_stored_whole_on_retry(
    make_task, execute, monkeypatch
):
    """The end and the last of the output are one write: a failed attempt
    stores neither, and the retry stores both."""
    from django.db import OperationalError

    task = make_task("retried", "print('the last words')")
    real = services.finish_run
    calls = []

    def flaky(*args, **kwargs):
        calls.append(kwargs.get("log_chunk"))
        if len(calls) == 1:
            raise OperationalError("the database went away for a moment")
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "finish_run", flaky)
    run = execute(services.start_run(task))
    assert len(calls) == 2 and calls[0] == calls[1] == (0, b"the last words\n")
    assert run.status == S.SUCCEEDED
    assert run.read_log() == b"the last words\n"
    assert run.log_size == len(b"the last words\n")


def test_an_end_stored_whose_answer_was_lost_is_not_fenced_and_what_follows_runs(
    make_task, execute, monkeypatch
):
    """The end committed but its answer never came back (a connection cut
    after COMMIT): the retry must not find itself fenced out, and the run's
    follow-up (retries, downstream tasks, notifications) still happens."""
    from django.db import OperationalError

    from runs import rows

    task = make_task("answered", "print('done')")
    real_update, lost = rows.update_run, []

    def answer_lost(run_id, fields, **kwargs):
        changed = real_update(run_id, fields, **kwargs)
        if fields.get("status") == S.SUCCEEDED and not lost:
            lost.append(run_id)
            raise OperationalError("server closed the connection unexpectedly")
        return changed

    followed = []
    monkeypatch.setattr(rows, "update_run", answer_lost)
    monkeypatch.setattr(services, "after_run_end", lambda run_id, run=None: followed.append(run_id))
    from runs.executor import execute_run

    run = services.start_run(task)
    assert execute_run(run.pk) == S.SUCCEEDED
    run.refresh_from_db()
    assert lost == [run.pk] and followed == [run.pk]
    assert run.status == S.SUCCEEDED and run.read_log() == b"done\n"


def test_non_zero_exit_fails_with_the_code(make_task, execute):
    task = make_task("bad", "import sys; print('oops', file=sys.stderr); sys.exit(3)")
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert run.exit_code == 3
    assert run.reason == "exit code 3"
    assert b"oops" in run.read_log()


def test_arguments_and_environment_reach_the_script(make_task, execute, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "service-secret")
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2")
    task = make_task(
        "show",
        """
        import json, os, sys
        print(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}))
        """,
        env={"FROM_TASK": "t", "SHARED": "task"},
    )
    run = services.start_run(task, args=["a b", "--flag"], env={"SHARED": "run"}, config={"k": 1})
    run = execute(run)
    seen = json.loads(run.read_log())
    assert seen["argv"] == ["a b", "--flag"]
    env = seen["env"]
    assert env["FROM_TASK"] == "t"
    assert env["SHARED"] == "run"
    assert env["TASKRUN_RUN_ID"] == str(run.pk)
    assert env["TASKRUN_TASK"] == "show"
    assert env["TASKRUN_ATTEMPT"] == "1"
    assert "SECRET_KEY" not in env and "DATABASE_PASSWORD" not in env
    assert "DJANGO_SETTINGS_MODULE" not in env and "DATABASE_URL" not in env
    assert seen["cwd"] == str(task.script_path.parent)


def test_config_is_a_json_file_removed_after_the_run(make_task, execute):
    task = make_task(
        "conf",
        """
        import json, os
        path = os.environ["TASKRUN_CONFIG"]
        print(path)
        print(json.load(open(path))["depth"])
        """,
    )
    run = execute(services.start_run(task, config={"depth": 7}))
    path, depth = run.read_log().decode().split()
    assert depth == "7"
    import os

    assert not os.path.exists(path)


def test_progress_and_result_markers_are_stored_and_kept_in_the_log(make_task, execute):
    task = make_task(
        "marks",
        """
        print("::progress::10 starting")
        print("::progress::not-a-number")
        print("::progress::150")
        print("::progress::55.5 half way")
        print('::result::{"rows": 3}')
        print('::result::[1, 2]')
        print('text ::progress::99 not at line start')
        """,
    )
    run = execute(services.start_run(task))
    assert run.progress == 55
    assert run.progress_message == "half way"
    assert run.result == {"rows": 3}
    assert b"::progress::10 starting\n" in run.read_log()


def test_redelivered_job_runs_the_script_once(make_task, execute, tmp_path):
    marker = tmp_path / "count"
    task = make_task("once", f"open({str(marker)!r}, 'a').write('x')")
    run = services.start_run(task)
    # Two deliveries at the same time, then a late third one.
    threads = [threading.Thread(target=execute, args=(run,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    execute(run)
    run.refresh_from_db()
    assert run.status == S.SUCCEEDED
    assert marker.read_text() == "x"


def test_timeout_kills_the_script_and_its_grandchildren(make_task, execute, tmp_path):
    pids = tmp_path / "pids"
    task = make_task(
        "slow",
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("started", flush=True)
        time.sleep(60)
        """,
        timeout=1,
    )
    run = execute(services.start_run(task))
    assert run.status == S.TIMED_OUT
    assert run.reason == "timed out after 1 s"
    assert b"started" in run.read_log()
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), f"process {pid} survived the timeout"


def test_sigterm_is_sent_first_and_the_script_may_clean_up(make_task, execute, tmp_path):
    flag = tmp_path / "cleaned"
    task = make_task(
        "polite",
        f"""
        import signal, sys, time
        def bye(*_):
            open({str(flag)!r}, "w").write("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(60)
        """,
        timeout=1,
    )
    run = execute(services.start_run(task))
    assert run.status == S.TIMED_OUT
    assert flag.read_text() == "yes"


def test_cancel_stops_a_running_run(make_task, execute):
    task = make_task("long", "import time\nprint('go', flush=True)\ntime.sleep(60)")
    run = services.start_run(task)
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    wait_for(lambda: Run.objects.get(pk=run.pk).status == S.RUNNING)
    services.request_cancel(Run.objects.get(pk=run.pk), actor="tester")
    worker.join(timeout=10)
    assert not worker.is_alive()
    run.refresh_from_db()
    assert run.status == S.CANCELLED
    assert run.reason == "cancelled by tester"
    assert run.pid and not _alive(run.pid)


def test_a_supervisor_whose_run_was_taken_stops_its_script_at_its_next_write(
    make_task, execute, settings
):
    """The fence: once the run is not this worker's any more (the reaper
    marked it lost, a retry runs), the next periodic write fails its
    compare-and-set and the script is stopped then, not at the watchdog
    (with this lease, 15 s after its last heartbeat)."""
    settings.LEASE_SECONDS = 30
    task = make_task(
        "taken",
        "import time\nfor i in range(600):\n    print(i, flush=True)\n    time.sleep(0.1)",
    )
    run = services.start_run(task)
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    running = wait_for(lambda: Run.objects.filter(pk=run.pk, status=S.RUNNING, pid__gt=0).first())
    Run.objects.filter(pk=run.pk).update(status=S.LOST, reason="reaped elsewhere")
    worker.join(timeout=5)
    assert not worker.is_alive()
    run.refresh_from_db()
    # Its end is fenced: what the reaper decided stands.
    assert (run.status, run.reason) == (S.LOST, "reaped elsewhere")
    assert not _alive(running.pid)


def test_cancel_of_a_queued_run_ends_it_at_once(make_task, execute):
    task = make_task("q", "print('never')")
    run = services.start_run(task)
    services.request_cancel(run, actor="tester")
    run = execute(run)
    assert run.status == S.CANCELLED
    assert run.read_log() == b""
    with pytest.raises(services.RunNotActive):
        services.request_cancel(run)


def test_a_long_output_is_kept_whole_and_in_order(make_task, execute):
    task = make_task("chatty", "for i in range(200_000):\n    print(i)")
    run = execute(services.start_run(task))
    assert run.status == S.SUCCEEDED
    lines = run.read_log().decode().splitlines()
    assert lines == [str(i) for i in range(200_000)]
    assert run.chunks.count() >= 1
    assert run.read_log(offset=run.log_size - 7) == b"199999\n"


def test_invalid_utf8_is_replaced_not_fatal(make_task, execute):
    task = make_task(
        "binary",
        r"""
        import sys
        sys.stdout.buffer.write(b"ok \xff\xfe bytes\n")
        sys.stdout.buffer.write("caf\u00e9\n".encode())
        """,
    )
    run = execute(services.start_run(task))
    assert run.status == S.SUCCEEDED
    assert run.read_log().decode("utf-8") == "ok \ufffd\ufffd bytes\ncafé\n"


def test_missing_script_fails_with_a_readable_reason(make_task, execute):
    task = make_task("gone", "print(1)")
    task.script_path.unlink()
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert "script not found" in run.reason
    assert b"[taskrun] script not found: gone.py" in run.read_log()


def test_a_script_that_cannot_compile_fails_with_its_error_in_the_log(make_task, execute):
    task = make_task("broken", "def f(:\n")
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert b"SyntaxError" in run.read_log()


def test_output_cap_cuts_the_log_and_stops_the_run(make_task, execute, settings):
    settings.RUN_OUTPUT_MB = 0.01  # about 10 KB
    task = make_task("flood", "import time\nwhile True:\n    print('x' * 99)")
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert run.log_truncated
    assert run.reason == "output limit 0.01 MB reached"
    log = run.read_log()
    assert b"output cut" in log
    assert len(log) < 11_000


def test_lost_lease_stops_the_script_and_the_late_finish_is_refused(make_task, execute):
    task = make_task("fenced", "import time\nprint('go', flush=True)\ntime.sleep(60)")
    run = services.start_run(task)
    worker = threading.Thread(target=execute, args=(run,))
    worker.start()
    # Running, and the script started (its pid stored).
    wait_for(lambda: Run.objects.get(pk=run.pk).pid)
    # Another party (a reaper elsewhere) decided the run was lost.
    assert services.transition(run.pk, to=S.LOST, allowed_from=[S.RUNNING], reason="lease expired")
    worker.join(timeout=10)
    assert not worker.is_alive()
    run.refresh_from_db()
    assert run.status == S.LOST
    assert run.reason == "lease expired"
    assert not _alive(run.pid)
    assert RunEvent.objects.filter(run=run, to_status=S.LOST).count() == 1


def test_reaper_marks_a_silent_run_lost_and_frees_the_task(make_task, settings):
    from django.utils import timezone

    task = make_task("stale", "print(1)")
    run = services.start_run(task)
    assert services.claim_run(run.pk, "elsewhere:1") is not None
    Run.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timezone.timedelta(seconds=settings.LEASE_SECONDS + 1)
    )
    assert services.reap_lost_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == S.LOST and run.reason == "lease expired"
    assert services.reap_lost_runs() == []
    assert services.start_run(task).status == S.QUEUED


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_run_duration_is_measured(make_task, execute):
    task = make_task("nap", "import time; time.sleep(0.3)")
    run = execute(services.start_run(task))
    assert run.duration.total_seconds() >= 0.3


def test_waiting_for_a_script_to_exit_wakes_when_it_does_and_gives_up_on_time():
    import subprocess
    import sys
    import time

    from runs.process import wait_exit

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = time.monotonic()
    assert wait_exit(proc, 0.05) is False
    assert wait_exit(proc, 5) is True
    assert time.monotonic() - started < 2 and proc.returncode == 0
    assert wait_exit(proc, 5) is True  # already reaped
