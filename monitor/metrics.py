"""/metrics for Prometheus, computed from the database at scrape time.

A custom collector reads the runs table on each scrape, so every web process
answers the same figures and there are no per-process counters to keep in
sync. The counters are counts of rows: pruning old runs (prune_runs) lowers
them, which Prometheus treats as a counter reset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, Sum
from django.utils import timezone
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from runs.models import Run

S = Run.Status

# Run duration buckets, seconds: from quick scripts to day-long jobs.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class RunCollector:
    def collect(self) -> Iterator[Metric]:
        yield from self._started_and_finished()
        yield from self._durations()
        yield from self._active()
        yield from self._last_success()
        yield from self._log_bytes()
        yield from self._clusters()

    def _started_and_finished(self) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "taskrun_runs_started", "Runs that started (were claimed by a worker).", labels=["task"]
        )
        for task, n in (
            Run.objects.filter(started_at__isnull=False)
            .values_list("task__name")
            .annotate(n=Count("id"))
            .order_by("task__name")
        ):
            started.add_metric([task], n)
        yield started
        finished = CounterMetricFamily(
            "taskrun_runs_finished",
            "Runs that ended, by final state.",
            labels=["task", "status"],
        )
        for task, status, n in (
            Run.objects.filter(status__in=S.final())
            .values_list("task__name", "status")
            .annotate(n=Count("id"))
            .order_by("task__name", "status")
        ):
            finished.add_metric([task, status], n)
        yield finished

    def _durations(self) -> Iterator[Metric]:
        histogram = HistogramMetricFamily(
            "taskrun_run_duration_seconds",
            "How long finished runs ran, from start to end.",
            labels=["task"],
        )
        duration = ExpressionWrapper(
            F("finished_at") - F("started_at"), output_field=DurationField()
        )
        buckets = {
            f"le_{i}": Count("id", filter=Q(duration__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        }
        rows = (
            Run.objects.filter(
                status__in=S.final(), started_at__isnull=False, finished_at__isnull=False
            )
            .annotate(duration=duration)
            .values("task__name")
            .annotate(count=Count("id"), total=Sum("duration"), **buckets)
            .order_by("task__name")
        )
        for row in rows:
            cumulative = [
                (str(float(bound)), row[f"le_{i}"]) for i, bound in enumerate(DURATION_BUCKETS)
            ]
            cumulative.append(("+Inf", row["count"]))
            total = row["total"]
            histogram.add_metric(
                [row["task__name"]],
                cumulative,
                sum_value=total.total_seconds() if total is not None else 0.0,
            )
        yield histogram

    def _active(self) -> Iterator[Metric]:
        counts = dict(
            Run.objects.filter(status__in=S.active())
            .values_list("status")
            .annotate(n=Count("id"))
            .order_by()
        )
        yield GaugeMetricFamily(
            "taskrun_runs_running", "Runs running now.", value=counts.get(S.RUNNING, 0)
        )
        yield GaugeMetricFamily(
            "taskrun_runs_queued", "Runs waiting for a worker.", value=counts.get(S.QUEUED, 0)
        )

    def _last_success(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "taskrun_task_seconds_since_last_success",
            "Seconds since the task's last successful run ended.",
            labels=["task"],
        )
        now = timezone.now()
        for task, last in (
            Run.objects.filter(status=S.SUCCEEDED, finished_at__isnull=False)
            .values_list("task__name")
            .annotate(last=Max("finished_at"))
            .order_by("task__name")
        ):
            gauge.add_metric([task], max(0.0, (now - last).total_seconds()))
        yield gauge

    def _log_bytes(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            "taskrun_log_bytes_written", "Bytes of script output stored.", labels=["task"]
        )
        for task, total in (
            Run.objects.values_list("task__name")
            .annotate(total=Sum("log_size"))
            .order_by("task__name")
        ):
            counter.add_metric([task], total or 0)
        yield counter

    def _clusters(self) -> Iterator[Metric]:
        from monitor.clusters import cluster_stats

        try:
            stats = cluster_stats()
        except Exception:
            stats = []
        yield GaugeMetricFamily(
            "taskrun_clusters_alive", "Worker clusters that reported recently.", value=len(stats)
        )
        yield GaugeMetricFamily(
            "taskrun_workers",
            "Worker processes in the live clusters.",
            value=sum(len(stat.workers) for stat in stats),
        )


registry = CollectorRegistry(auto_describe=False)
registry.register(RunCollector())


def render(accept: str = "") -> tuple[bytes, str]:
    """The metrics in the format the scraper asked for (Accept header):
    OpenMetrics or the Prometheus text format; (body, content type)."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
