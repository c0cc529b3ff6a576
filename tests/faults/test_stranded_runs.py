"""A queued run whose job a dead cluster took (the ORM broker locks a taken
job until its retry time, a day away) gets a new job from the housekeeper;
one whose job still waits in the broker does not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from runs import services
from runs.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]


def _age(run: Run) -> None:
    """As if the run had been handed to the broker two leases ago."""
    Run.objects.filter(pk=run.pk).update(
        dispatched_at=timezone.now() - timedelta(seconds=2 * settings.LEASE_SECONDS)
    )


def test_a_queued_run_whose_job_a_dead_cluster_took_gets_a_new_job(make_task):
    task = make_task("stranded", "print(1)")
    run = services.start_run(task)
    (old_job,) = OrmQ.objects.all()
    assert old_job.args() == (run.pk,)
    # A cluster took the job (locked until its retry time) and died.
    OrmQ.objects.update(lock=timezone.now() + timedelta(days=1))
    _age(run)

    assert services.rescue_stranded_runs() == [run.pk]
    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    (new_job,) = OrmQ.objects.filter(lock__lte=timezone.now())
    assert new_job.args() == (run.pk,) and new_job.task_id() != old_job.task_id()
    # Rescued once per lease, not at every pass.
    assert services.rescue_stranded_runs() == []


def test_a_queued_run_whose_job_still_waits_is_left_alone(make_task):
    task = make_task("waiting", "print(1)")
    run = services.start_run(task)
    _age(run)
    assert services.rescue_stranded_runs() == []
    assert OrmQ.objects.count() == 1


def test_a_run_the_broker_never_got_is_handed_over_again(make_task):
    task = make_task("unsent", "print(1)")
    run = services.start_run(task)
    OrmQ.objects.all().delete()  # as if the broker had been down at commit
    _age(run)
    assert services.rescue_stranded_runs() == [run.pk]
    assert OrmQ.objects.count() == 1
