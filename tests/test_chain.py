"""A cluster worker that ends a run takes the broker's next waiting run jobs
itself for a short while (runs.executor._run_waiting_jobs): every such run
is claimed, run and acknowledged once, and what is not a run job is left to
django-q2."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone
from django_q.models import OrmQ
from django_q.tasks import async_task

from runs import drain, executor, services
from runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(make_task):
    """Three runs, each with its job waiting in the broker."""

    def make(count: int = 3) -> list[Run]:
        before = OrmQ.objects.count()
        runs = [
            services.start_run(make_task(f"chained_{i}", f"print('run {i}')")) for i in range(count)
        ]
        assert OrmQ.objects.count() == before + count
        return runs

    return make


def test_a_worker_runs_the_waiting_run_jobs_and_acknowledges_each(queued):
    runs = queued()
    assert executor._run_waiting_jobs(time.monotonic()) == 3
    for run in runs:
        run.refresh_from_db()
        assert run.status == Run.Status.SUCCEEDED, run.reason
        assert run.events.filter(to_status=Run.Status.RUNNING).count() == 1
    assert not OrmQ.objects.exists()
    # Nothing left: the next chain takes nothing.
    assert executor._run_waiting_jobs(time.monotonic()) == 0


def test_a_job_the_pusher_takes_while_a_worker_looks_at_it_is_taken_once(queued):
    """The worker's take and the pusher's race for one job: exactly one of
    them gets it."""
    queued(1)
    jobs = services.job_broker()
    pushers = []

    def parse_while_the_pusher_takes(payload):
        pushers.append(jobs._take(1))
        return executor._run_of_job(payload)

    worker = jobs.take_one(parse_while_the_pusher_takes)
    (pusher,) = pushers
    assert (worker is None) != (pusher == []), (worker, pusher)
    assert OrmQ.objects.get().lock > timezone.now()  # taken, by one of them


def test_a_job_that_is_not_a_run_goes_back_to_the_broker_first_in_line(queued):
    async_task("math.floor", 1.5)
    runs = queued(1)
    assert executor._run_waiting_jobs(time.monotonic()) == 0
    # The other job is waiting again (not locked), ahead of the run's job,
    # and the run was left alone for django-q2's worker.
    jobs = list(OrmQ.objects.order_by("id"))
    assert [job.func() for job in jobs] == ["math.floor", "runs.executor.execute_run"]
    assert all(job.lock <= timezone.now() for job in jobs)
    runs[0].refresh_from_db()
    assert runs[0].status == Run.Status.QUEUED


def test_a_job_signed_with_another_key_is_left_to_django_q2s_pusher(queued, monkeypatch):
    from django_q.conf import Conf

    runs = queued(1)
    job = OrmQ.objects.get()
    before = (job.payload, job.lock)
    monkeypatch.setattr(Conf, "SECRET_KEY", "another key")
    assert executor._run_waiting_jobs(time.monotonic()) == 0
    job.refresh_from_db()
    assert (job.payload, job.lock) == before
    runs[0].refresh_from_db()
    assert runs[0].status == Run.Status.QUEUED


def test_the_chain_ends_when_its_time_is_up_or_the_worker_drains(queued, monkeypatch):
    runs = queued(2)
    # Its time counts from when the job in hand began.
    assert executor._run_waiting_jobs(time.monotonic() - executor.CHAIN_SECONDS) == 0
    monkeypatch.setattr(drain, "is_draining", lambda: True)
    assert executor._run_waiting_jobs(time.monotonic()) == 0
    assert OrmQ.objects.count() == 2
    assert all(
        r.status == Run.Status.QUEUED for r in Run.objects.filter(pk__in=[r.pk for r in runs])
    )


def test_a_run_job_with_its_run_gone_is_acknowledged_and_the_chain_goes_on(queued):
    first, second = queued(2)
    Run.objects.filter(pk=first.pk).delete()
    assert executor._run_waiting_jobs(time.monotonic()) == 2
    second.refresh_from_db()
    assert second.status == Run.Status.SUCCEEDED
    assert not OrmQ.objects.exists()


def test_a_take_that_fails_ends_the_chain_with_the_last_job_done_with(queued, monkeypatch):
    """The job just run goes with the next take (on PostgreSQL in its
    statement); when that take fails, it goes on its own."""
    first, second = queued(2)
    jobs = executor._broker_to_chain()
    real, calls = jobs.take_one, []

    def failing_second_time(parse, done=None):
        calls.append(done)
        if len(calls) == 2:
            raise OSError("the database went away")
        return real(parse, done=done)

    monkeypatch.setattr(jobs, "take_one", failing_second_time)
    assert executor._run_waiting_jobs(time.monotonic()) == 1
    assert calls[0] is None and calls[1] is not None  # the first job, done
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Run.Status.SUCCEEDED and second.status == Run.Status.QUEUED
    # The first run's job is gone; the second's waits for django-q2.
    (left,) = OrmQ.objects.all()
    assert left.task["args"] == (second.pk,)


def test_only_cluster_workers_chain(queued, execute):
    first, second = queued(2)
    assert executor.in_cluster_worker is False  # a test process, a command
    execute(first)
    second.refresh_from_db()
    assert second.status == Run.Status.QUEUED and OrmQ.objects.count() == 2


def _redis_up() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379")
def test_on_redis_a_job_is_taken_off_the_list_or_left_at_its_head():
    import uuid

    import redis
    from django_q.brokers.redis_broker import Redis

    from runs.broker import RedisJobs, jobs_to_take

    class LocalRedis(Redis):
        @staticmethod
        def get_connection(list_key=None):
            return redis.Redis.from_url("redis://127.0.0.1:6379/14")

    broker = LocalRedis(f"chain-{uuid.uuid4().hex}")
    try:
        jobs = jobs_to_take(broker)
        assert isinstance(jobs, RedisJobs)
        broker.enqueue("other")
        broker.enqueue("run 7")
        wanted = {b"run 7": 7}.get
        # Not one to take: it stays first in line.
        assert jobs.take_one(wanted) is None
        assert broker.queue_size() == 2
        assert broker.connection.lindex(broker.list_key, 0) == b"other"
        broker.connection.lpop(broker.list_key)
        assert jobs.take_one(wanted) == (None, 7)
        jobs.done_with(None)
        assert jobs.take_one(wanted) is None and broker.queue_size() == 0
    finally:
        broker.delete_queue()
