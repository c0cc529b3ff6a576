"""Per-run resources: the executor samples the script's whole process tree."""

import pytest

from runs import services
from runs.models import Run
from runs.usage import RunUsage

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1 << 20


def test_a_run_allocating_100_mb_records_its_peak_memory(make_task, execute):
    task = make_task(
        "hog",
        """
        import time
        block = bytearray(100 * 1024 * 1024)
        for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
            block[i] = 1
        time.sleep(1.5)
        """,
    )
    run = execute(services.start_run(task))
    assert run.status == Run.Status.SUCCEEDED
    assert run.peak_rss >= 100 * MB
    assert run.peak_rss < 1024 * MB
    assert run.cpu_seconds is not None and run.cpu_seconds > 0
    assert run.usage, "the run keeps a series"
    # Every point is of a running tree: an ended (zombie) script counts nothing.
    assert all(procs >= 1 and rss > 0 and cpu >= 0 for _, cpu, rss, procs in run.usage)


def test_children_and_their_cpu_count_towards_the_run(make_task, execute):
    # The script starts two busy children: the series sees three processes
    # and the CPU seconds include the children's work.
    task = make_task(
        "family",
        """
        import subprocess, sys, time
        busy = (
            "import time\\nt = time.process_time()\\n"
            "while time.process_time() - t < 0.6: pass\\ntime.sleep(1)"
        )
        children = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]
        for child in children:
            child.wait()
        """,
    )
    run = execute(services.start_run(task))
    assert run.status == Run.Status.SUCCEEDED
    assert max(point[3] for point in run.usage) >= 3
    assert run.cpu_seconds >= 1.1


def test_the_series_stays_bounded_and_keeps_the_peak():
    usage = RunUsage(1, every=0.0, max_points=10)
    usage.root = None  # feed points by hand: no process is measured
    usage.measured = True
    for second in range(1000):
        rss = 500 if second == 777 else 100
        usage._add_point(float(second), 50.0, rss, 1)
    usage._flush_bucket()
    series = usage.fields()["usage"]
    assert 5 <= len(series) <= 10
    assert max(point[2] for point in series) == 500
    assert [point[0] for point in series] == sorted(point[0] for point in series)
    assert all(point[1] == 50.0 for point in series)


def test_a_script_gone_before_its_first_sample_is_unmeasured_not_zero(make_task, execute):
    run = execute(services.start_run(make_task("blink", "pass")))
    assert run.status == Run.Status.SUCCEEDED
    if run.usage is None:
        assert run.peak_rss is None and run.cpu_seconds is None
    else:  # a slow machine let the sampler see it after all
        assert run.peak_rss > 0


def test_a_failing_measure_never_fails_the_run(make_task, execute, monkeypatch):
    def broken(self, now):
        raise RuntimeError("psutil exploded")

    monkeypatch.setattr(RunUsage, "_measure", broken)
    run = execute(services.start_run(make_task("fine", "import time; time.sleep(1.2)")))
    assert run.status == Run.Status.SUCCEEDED
    assert run.peak_rss is None and run.usage is None
