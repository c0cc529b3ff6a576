"""Real `manage.py qcluster` processes running real scripts."""

import os
import signal

import psutil
import pytest

from runs import process, services
from runs.models import Run
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
S = Run.Status


def finished(run: Run):
    run.refresh_from_db()
    return not run.is_active and run


def test_a_cluster_runs_a_script_end_to_end_and_stops_gracefully(make_task, cluster):
    task = make_task("e2e", "print('from the cluster')\nprint('::progress::100 done')")
    q = cluster()
    run = services.start_run(task)
    run = wait_for(lambda: finished(run), timeout=30)
    assert run.status == S.SUCCEEDED
    assert run.read_log() == b"from the cluster\n::progress::100 done\n"
    assert run.progress == 100
    host, pid = run.worker.rsplit(":", 1)
    assert psutil.Process(int(pid)).ppid() != os.getpid()  # a cluster worker, not us
    assert q.stop() == 0
    assert b"has stopped" in q.log_path.read_bytes()


def test_a_killed_worker_leaves_a_lost_run_and_no_process(make_task, cluster, tmp_path):
    pids = tmp_path / "pids"
    task = make_task(
        "victim",
        f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
        print("working", flush=True)
        time.sleep(120)
        """,
    )
    cluster()
    run = services.start_run(task)
    wait_for(lambda: pids.exists() and Run.objects.get(pk=run.pk).status == S.RUNNING)
    run.refresh_from_db()
    worker_pid = int(run.worker.rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)

    run = wait_for(lambda: finished(run), timeout=30, message="run was not reaped")
    assert run.status == S.LOST
    assert run.reason == "lease expired"
    wait_for(
        lambda: not process.run_processes(run.pk, run.worker),
        timeout=10,
        message="processes survived",
    )
    for pid in map(int, pids.read_text().split()):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    # The task is free again, and the reincarnated cluster runs it.
    pids.unlink()
    task.refresh_from_db()
    again = services.start_run(task)
    wait_for(lambda: Run.objects.get(pk=again.pk).status == S.RUNNING, timeout=30)
    services.request_cancel(again, actor="test")
    assert wait_for(lambda: finished(again), timeout=30).status == S.CANCELLED


def test_a_cluster_whose_group_is_killed_mid_drain_leaves_no_script(make_task, cluster):
    task = make_task("draining", "import time\nprint('go', flush=True)\ntime.sleep(60)")
    q = cluster()
    run = services.start_run(task)
    wait_for(lambda: Run.objects.get(pk=run.pk).pid)
    # As `timeout(1)` does: the main process, then its whole group.
    q.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: b"stopping: running runs get" in q.log_path.read_bytes())
    os.killpg(q.pid, signal.SIGTERM)
    q.proc.wait(timeout=30)
    # The workers died with the group; the watchdog stopped the script.
    run.refresh_from_db()
    wait_for(lambda: not process.run_processes(run.pk, run.worker), timeout=10)


@pytest.mark.parametrize("attempt", range(3))
def test_sigterm_to_every_process_of_a_cluster_at_once_does_not_hang_it(cluster, attempt):
    """pkill or a group kill reaches the sentinel too; django-q2's stop() would
    then wait forever on an Event whose waiter died (it did, 5 times in 6)."""
    q = cluster()
    os.killpg(q.pid, signal.SIGTERM)
    q.proc.wait(timeout=20)


def test_a_worker_that_ends_a_run_takes_the_next_job_itself_with_its_pusher_frozen(
    make_task, cluster
):
    """The chain (runs.executor._run_waiting_jobs) in a real cluster: with
    django-q2's pusher stopped, a job enqueued while the worker's run is
    still running is taken and run by that worker as soon as its run ends."""
    from runs.broker import wake_dir

    first = make_task("chain_first", "import time; time.sleep(0.3)")
    second = make_task("chain_second", "print('taken by the worker itself')")
    # One worker; a pusher that, once it has handed the first job over,
    # sleeps in its wait (not between statements) when it is stopped.
    q = cluster(MAX_TASK_WORKERS="1", Q_POLL="5")
    ours = {p.pid for p in psutil.Process(q.pid).children(recursive=True)}

    def pusher() -> int | None:
        # The ORM broker's pusher waits on DATA_DIR/wake/<host>-<pid>.sock.
        for path in wake_dir().glob("*.sock"):
            pid = int(path.stem.rsplit("-", 1)[1])
            if pid in ours:
                return pid
        return None

    pusher_pid = wait_for(pusher, timeout=10, message="no wake-up socket of this cluster")
    run = services.start_run(first)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == S.RUNNING, timeout=20)
    os.kill(pusher_pid, signal.SIGSTOP)
    try:
        later = services.start_run(second)
        run = wait_for(lambda: finished(run), timeout=20)
        later = wait_for(lambda: finished(later), timeout=20, message="the job was not taken")
    finally:
        os.kill(pusher_pid, signal.SIGCONT)
    assert (run.status, later.status) == (S.SUCCEEDED, S.SUCCEEDED), later.reason
    assert later.worker == run.worker
    assert later.read_log() == b"taken by the worker itself\n"
    # Both jobs were acknowledged: nothing is left in the broker.
    from django_q.models import OrmQ

    wait_for(lambda: not OrmQ.objects.exists(), timeout=10, message="a job was not acknowledged")
