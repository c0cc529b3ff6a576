"""The ORM broker's wake-up: an enqueue pokes the pushers of this host, which
wait on a socket instead of sleeping through their poll."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.db import connection, transaction

from runs import broker


@pytest.fixture
def data_dir(settings, tmp_path_factory):
    # Short: a UNIX socket path has at most 107 bytes.
    settings.DATA_DIR = tmp_path_factory.mktemp("w")
    return settings.DATA_DIR


@pytest.mark.django_db
def test_a_poke_ends_the_wait_at_once(data_dir):
    pusher = broker.WakingORM(list_key="test")
    assert pusher._listener() is not None
    threading.Timer(0.2, broker.poke).start()
    started = time.monotonic()
    pusher._wait(10)
    assert 0.15 < time.monotonic() - started < 2


@pytest.mark.django_db
def test_without_a_poke_the_wait_is_the_poll(data_dir):
    pusher = broker.WakingORM(list_key="test")
    started = time.monotonic()
    pusher._wait(0.3)
    assert time.monotonic() - started >= 0.29


def test_every_pusher_of_the_host_is_poked_and_dead_ones_are_swept(data_dir):
    folder = broker.wake_dir()
    folder.mkdir(parents=True, exist_ok=True)
    live = [socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    for n, sock in enumerate(live):
        sock.bind(str(folder / f"{broker._host_prefix()}{n}.sock"))
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(folder / f"{broker._host_prefix()}99.sock"))
    dead.close()  # its file stays behind, as after a kill -9
    other_host = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other_host.bind(str(folder / "elsewhere-1.sock"))
    other_host.close()

    assert broker.poke() == 2
    assert all(sock.recv(8) == b"!" for sock in live)
    assert not (folder / f"{broker._host_prefix()}99.sock").exists()
    # Another host's socket on a shared volume is not ours to remove.
    assert (folder / "elsewhere-1.sock").exists()


@pytest.mark.django_db(transaction=True)
def test_an_enqueue_inside_a_transaction_pokes_after_the_commit(data_dir, monkeypatch):
    pokes = []
    monkeypatch.setattr(broker, "poke", lambda: pokes.append(1))
    pusher = broker.WakingORM(list_key="test")
    with transaction.atomic():
        pusher.enqueue("payload")
        assert pokes == []
    assert pokes == [1]
    assert [payload for _, payload in pusher.dequeue()] == ["payload"]


@pytest.mark.django_db(transaction=True)
def test_dequeue_takes_the_oldest_waiting_job_once_and_locks_it_until_the_retry(data_dir):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.conf import Conf
    from django_q.models import OrmQ

    one, two = broker.WakingORM(list_key="test"), broker.WakingORM(list_key="test")
    first = one.enqueue("first")
    second = one.enqueue("second")
    OrmQ.objects.create(key="other", payload="not ours", lock=timezone.now())
    assert one._can_take_in_one()  # SQLite ≥ 3.35 here, and PostgreSQL

    assert one.dequeue() == [(first, "first")]
    assert two.dequeue() == [(second, "second")]  # the taken one is locked
    started = time.monotonic()
    assert one.dequeue() is None  # nothing left for "test": it waited a poll
    assert time.monotonic() - started >= Conf.POLL * 0.9
    locked = OrmQ.objects.get(pk=first).lock
    expected = timezone.now() + timedelta(seconds=Conf.RETRY)
    assert abs((expected - locked).total_seconds()) < 5
    # Once its lock has passed (a cluster died with it), it is delivered again.
    OrmQ.objects.filter(pk=first).update(lock=timezone.now() - timedelta(seconds=1))
    assert two.dequeue() == [(first, "first")]
    # The two-statement way (older SQLite) takes the same.
    OrmQ.objects.filter(pk=second).update(lock=timezone.now() - timedelta(seconds=1))
    assert one._take_in_two() == [(second, "second")]
    # A done job is acknowledged: its row goes, and only its row.
    one.acknowledge(first)
    assert sorted(OrmQ.objects.values_list("payload", flat=True)) == ["not ours", "second"]


@pytest.mark.django_db
def test_an_enqueued_job_is_the_row_django_q2s_orm_broker_would_store(data_dir):
    from django.utils import timezone
    from django_q.brokers.orm import ORM
    from django_q.models import OrmQ

    before = timezone.now()
    ours = OrmQ.objects.get(pk=broker.WakingORM(list_key="test").enqueue("signed job"))
    theirs = OrmQ.objects.get(pk=ORM(list_key="test").enqueue("signed job"))
    assert ours.pk != theirs.pk
    assert (ours.key, ours.payload) == (theirs.key, theirs.payload) == ("test", "signed job")
    assert before <= ours.lock <= theirs.lock and ours.lock.tzinfo is not None


@pytest.mark.django_db
def test_a_process_keeps_one_broker_and_makes_a_new_one_after_a_fork(monkeypatch):
    import os

    from runs import services

    first = services.job_broker()
    assert services.job_broker() is first
    monkeypatch.setattr(os, "getpid", lambda: -1)  # what a forked child sees
    child = services.job_broker()
    assert child is not first and services.job_broker() is child


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's synchronous_commit")
@pytest.mark.django_db(transaction=True)
def test_run_jobs_rows_are_committed_without_waiting_for_the_disk_and_only_they(
    data_dir, monkeypatch
):
    """Outside a transaction, a statement that writes only run jobs' rows
    turns synchronous_commit off for its own commit, and the session keeps
    its setting; any other job's rows, the pusher's and the monitor's
    statements (which touch any job) and a caller's transaction stay
    durable."""
    from django_q.models import OrmQ

    from runs import rows

    def setting() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    configured = setting()
    clause = broker._unhurried(connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT current_setting('synchronous_commit') WHERE true{clause}")
        assert cursor.fetchone()[0] == "off"  # for that statement's transaction…
    assert setting() == configured  # … and no longer

    sent: list[str] = []
    statement = rows.statement

    def recorded(db, sql, params):
        sent.append(sql)
        return statement(db, sql, params)

    monkeypatch.setattr(rows, "statement", recorded)

    def unhurried(action) -> bool:
        """Whether the one write ``action`` made carried the clause."""
        sent.clear()
        result = action()
        [write] = [sql for sql in sent if not sql.startswith("SELECT")]
        assert setting() == configured
        unhurried.result = result
        return clause in write

    pusher = broker.WakingORM(list_key="test")
    with broker.run_jobs():
        assert unhurried(lambda: pusher.enqueue("run job"))
        first = unhurried.result
        with transaction.atomic():
            assert broker._unhurried(connection) == ""
            assert not unhurried(lambda: pusher.enqueue("run job, in a transaction"))
            second = unhurried.result
    assert not unhurried(lambda: pusher.enqueue("webhook job"))
    third = unhurried.result
    # A chained worker's take and delete only ever touch run jobs.
    assert unhurried(lambda: pusher.take_one(lambda payload: payload))
    assert unhurried.result == (first, "run job")
    sent.clear()
    assert pusher.take_one(lambda payload: payload, done=first) == (
        second,
        "run job, in a transaction",
    )
    delete_and_read, take = sent
    assert clause in delete_and_read and clause in take
    assert unhurried(lambda: pusher.done_with(second))
    # The pusher's take and the monitor's delete touch any job: durable.
    assert not unhurried(lambda: pusher._take())
    assert unhurried.result == [(third, "webhook job")]
    assert not unhurried(lambda: pusher.delete(third))
    assert not OrmQ.objects.exists()
