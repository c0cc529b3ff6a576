from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

# How much history the monitor keeps; older samples are deleted.
HISTORY = timedelta(hours=1)


class HostSample(models.Model):
    """One reading of a worker host's CPU and memory, every
    PROCESS_CHECK_INTERVAL, written by one worker process of that host."""

    host = models.CharField(max_length=200)
    at = models.DateTimeField(default=timezone.now)
    cpu_percent = models.FloatField()
    memory_percent = models.FloatField()
    memory_used = models.BigIntegerField(help_text="bytes")
    swap_percent = models.FloatField(default=0)
    load1 = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["host", "at"]
        indexes = [models.Index(fields=["host", "at"], name="host_sample_at")]

    def __str__(self) -> str:
        return f"{self.host} @ {self.at:%H:%M:%S}"

    @classmethod
    def prune(cls, now=None) -> int:
        cutoff = (now or timezone.now()) - HISTORY
        deleted, _ = cls.objects.filter(at__lt=cutoff).delete()
        return deleted
