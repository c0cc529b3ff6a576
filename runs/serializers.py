"""The `task` and `run` objects of the JSON API (CONTRACT), also used by the
live pages."""

from __future__ import annotations

from runs.models import Run, Task
from runs.parameters import read_parameters


def _iso(value):
    return value.isoformat() if value else None


def run_json(run: Run) -> dict:
    duration = run.duration
    return {
        "id": run.pk,
        "task": run.task.name,
        "status": run.status,
        "reason": run.reason or None,
        "trigger": run.trigger,
        "args": run.args,
        "attempt": run.attempt,
        "exit_code": run.exit_code,
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration": round(duration.total_seconds(), 3) if duration is not None else None,
        "progress": run.progress,
        "progress_message": run.progress_message,
        "result": run.result,
        "worker": run.worker or None,
        "log_url": f"/api/logs/{run.log_name}",
        # When it was meant to start (a schedule's slot, a delay's end), and
        # until when a delayed run still waits.
        "scheduled_for": _iso(run.scheduled_for),
        "not_before": _iso(run.not_before),
        "retry_of": run.retry_of_id,
        "upstream_run": run.upstream_id,
    }


def task_json(task: Task, *, with_code: bool = False, last_run: Run | None = None) -> dict:
    if last_run is None and getattr(task, "last_run_id", 0) is not None:
        # (A list of tasks annotates last_run_id: None there means no run.)
        last_run = task.runs.select_related("task").order_by("-id").first()
    data = {
        "name": task.name,
        "script": task.script,
        "description": task.description,
        "enabled": task.enabled,
        "timeout": task.timeout,
        "args": task.args,
        "env": task.env,
        "limits": {
            "memory_mb": task.memory_mb,
            "cpu_seconds": task.cpu_seconds,
            "output_mb": task.output_mb,
        },
        "parameters": read_parameters(task.read_code()).public(),
        "running": (
            task.is_running
            if hasattr(task, "is_running")
            else task.runs.filter(status=Run.Status.RUNNING).exists()
        ),
        "last_run": run_json(last_run) if last_run else None,
        **_automation_json(task),
    }
    if with_code:
        data["code"] = task.read_code()
    return data


def _automation_json(task: Task) -> dict:
    """Schedules, overlap policy, retries, downstream tasks, notifications."""
    from runs import automation, schedules

    return {
        **automation.notifications_json(task),
        "schedules": schedules.schedules_json(task),
        "next_run_at": _iso(schedules.next_run_at(task)),
        "overlap": task.overlap,
        "max_queued": task.max_queued,
        "retry": {
            "count": task.retry_count,
            "on": task.retry_on,
            "delay": task.retry_delay,
            "backoff": task.retry_backoff,
            "max_delay": task.retry_max_delay,
        },
        "downstream": [
            {"task": link.downstream.name, "on": link.on}
            for link in (
                task.downstream_links.all()  # prefetched with their tasks by a list
                if "downstream_links" in getattr(task, "_prefetched_objects_cache", {})
                else task.downstream_links.select_related("downstream")
            )
        ],
    }
