"""System checks refuse a configuration that would break the invariants."""

import pytest
from django.core.checks import run_checks

from runs.models import Task


def ids(**kwargs):
    return {e.id for e in run_checks(**kwargs)}


def test_default_configuration_passes():
    assert not {i for i in ids() if i.startswith("runs.")}


def test_retry_not_above_the_longest_timeout_is_refused(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "retry": settings.TASK_TIMEOUT_MAX}
    assert "runs.E001" in ids()


def test_timeout_above_retry_is_refused(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": settings.Q_CLUSTER["retry"] + 1}
    assert "runs.E002" in ids()


def test_lease_shorter_than_the_heartbeat_is_refused(settings):
    settings.LEASE_SECONDS = settings.PROCESS_CHECK_INTERVAL
    assert "runs.E004" in ids()


@pytest.mark.django_db
def test_a_task_timeout_above_the_maximum_is_reported(settings):
    Task.objects.create(name="huge", timeout=settings.TASK_TIMEOUT_MAX + 1)
    assert "runs.E005" in ids(include_deployment_checks=False, databases=["default"])
