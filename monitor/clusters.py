"""The worker clusters, as django-q2 itself reports them: every cluster saves
its `Stat` into the shared cache every few seconds, with a short expiry, so
what is in the cache is what is alive."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from runs.models import Run


def cluster_stats() -> list[Any]:
    from django_q.brokers import Broker, get_broker
    from django_q.conf import Conf
    from django_q.signing import BadSignature, SignedPackage
    from django_q.status import Stat

    if not Conf.ORM:
        return list(Stat.get_all(broker=get_broker()))
    # The ORM broker keeps the stats in the Django cache: a list of keys and
    # one short-lived entry per cluster. django-q2's reader writes the list
    # back after dropping expired keys; a read-modify-write that, racing a
    # cluster adding itself, can drop a live cluster from the list for a
    # moment (a health check then sees 0 alive). This reader only reads, and
    # needs no database connection, so the count answers while it is down.
    cache = Broker.get_cache()
    if cache is None:
        return []
    keys = cache.get(Conf.Q_STAT) or []
    stats = []
    for pack in cache.get_many(keys).values():
        try:
            stats.append(SignedPackage.loads(pack))
        except BadSignature:
            continue
    return stats


def clusters() -> list[dict[str, Any]]:
    """The live clusters with host, workers, how many are busy and when they
    last reported. Busy comes from the runs table: running runs whose worker
    (``<host>:<pid>``) is one of this cluster's worker processes."""
    stats = cluster_stats()
    identities = {
        f"{stat.host}:{pid}": str(stat.cluster_id) for stat in stats for pid in stat.workers
    }
    busy: dict[str, int] = {}
    for worker in Run.objects.filter(
        status=Run.Status.RUNNING, worker__in=list(identities)
    ).values_list("worker", flat=True):
        cluster_id = identities[worker]
        busy[cluster_id] = busy.get(cluster_id, 0) + 1
    now = timezone.now()
    out = []
    for stat in sorted(stats, key=lambda s: (s.host, str(s.cluster_id))):
        out.append(
            {
                "id": str(stat.cluster_id),
                "host": stat.host,
                "pid": stat.pid,
                "status": str(stat.status),
                "workers": len(stat.workers),
                "worker_pids": list(stat.workers),
                "busy": busy.get(str(stat.cluster_id), 0),
                "reincarnations": stat.reincarnations,
                "started_at": stat.tob.isoformat() if stat.tob else None,
                "uptime": (now - stat.tob).total_seconds() if stat.tob else None,
                "last_heartbeat": stat.timestamp.isoformat(),
                "seconds_since_heartbeat": max(0.0, (now - stat.timestamp).total_seconds()),
            }
        )
    return out


def queue_depth() -> dict[str, int | None]:
    """Runs waiting for a worker (the runs table) and jobs waiting in the
    broker (None when the broker cannot say)."""
    queued = Run.objects.filter(status=Run.Status.QUEUED).count()
    try:
        from django_q.brokers import get_broker

        jobs = get_broker().queue_size()
    except Exception:
        jobs = None
    return {"runs": queued, "jobs": jobs}
