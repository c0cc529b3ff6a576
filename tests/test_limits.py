"""Resource limits stop a run with a reason that names the limit, and leave
nothing running; RUN_AS_USER drops root."""

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from runs import process, services
from runs.checks import world_can_execute
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)
S = Run.Status


def assert_nothing_left(run: Run) -> None:
    assert process.run_processes(run.pk, run.worker) == []


def test_memory_past_the_limit_fails_the_run(make_task, execute):
    task = make_task(
        "hog",
        """
        import time
        block = bytearray(200 * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("allocated", flush=True)
        time.sleep(30)
        """,
        memory_mb=50,
    )
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert run.reason.startswith("memory limit 50 MB reached")
    assert run.peak_rss >= 50 * 1024 * 1024
    assert_nothing_left(run)


def test_cpu_past_the_limit_fails_the_run(make_task, execute):
    task = make_task("spin", "while True:\n    pass", cpu_seconds=1)
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert run.reason == "CPU limit 1 s reached"
    assert_nothing_left(run)


def test_forking_past_the_process_limit_fails_the_run(make_task, execute, settings):
    settings.RUN_MAX_PROCESSES = 5
    task = make_task(
        "forker",
        """
        import subprocess, sys, time
        children = [
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            for _ in range(10)
        ]
        print("forked", flush=True)
        time.sleep(60)
        """,
    )
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert run.reason.startswith("process limit 5 reached")
    assert_nothing_left(run)


def test_a_task_output_limit_wins_over_the_default(make_task, execute, settings):
    settings.RUN_OUTPUT_MB = None
    task = make_task("loud", "while True:\n    print('y' * 200)", output_mb=0.02)
    run = execute(services.start_run(task))
    assert run.status == S.FAILED
    assert run.reason == "output limit 0.02 MB reached"
    assert run.log_truncated
    assert_nothing_left(run)


def test_open_files_get_a_safe_default(make_task, execute, settings):
    settings.RUN_OPEN_FILES = 64
    task = make_task("files", "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))")
    run = execute(services.start_run(task))
    assert run.read_log() == b"(64, 64)\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="RUN_AS_USER needs a root worker")
def test_run_as_user_drops_root(execute, settings):
    from runs.models import Task

    user = pwd.getpwnam("nobody")
    # A folder the unprivileged user can read (pytest's tmp_path is root-only).
    folder = Path(tempfile.mkdtemp(prefix="taskrun-runas-"))
    try:
        folder.chmod(0o755)
        (folder / "whoami.py").write_text(
            "import json, os\n"
            "print(json.dumps([os.getuid(), os.getgid(), os.environ['HOME'],"
            " open(os.environ['TASKRUN_CONFIG']).read()]))\n"
        )
        (folder / "whoami.py").chmod(0o644)
        settings.TASKS_DIR = folder
        settings.RUN_AS_USER = "nobody"
        if not world_can_execute(settings.SCRIPT_PYTHON):
            # This interpreter lives in a private folder (a virtualenv under
            # /root, say); use one every user can run.
            settings.SCRIPT_PYTHON = next(
                p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if world_can_execute(p)
            )
        task = Task.objects.create(name="whoami")
        run = execute(services.start_run(task, config={"a": 1}))
        assert run.status == S.SUCCEEDED, run.read_log()
        import json

        uid, gid, home, config = json.loads(run.read_log())
        assert (uid, gid, home) == (user.pw_uid, user.pw_gid, user.pw_dir)
        assert json.loads(config) == {"a": 1}
    finally:
        shutil.rmtree(folder)


def test_an_unknown_run_as_user_is_refused_at_start(settings):
    from django.core.checks import run_checks

    settings.RUN_AS_USER = "no-such-user-here"
    assert "runs.E006" in {e.id for e in run_checks()}
