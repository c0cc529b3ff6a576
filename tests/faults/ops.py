"""Small doors onto the services for scenarios whose database is not the
test's own (a private PostgreSQL): the test runs these in a subprocess with
that DATABASE_URL and reads their JSON answer.

    python -m tests.faults.ops tasks '[{"name": "t", "timeout": 5}, ...]'
    python -m tests.faults.ops start '[{"task": "t", "args": ["1"]}, ...]'
    python -m tests.faults.ops schedule t "* * * * * */2"
    python -m tests.faults.ops unschedule t
    python -m tests.faults.ops runs
"""

from __future__ import annotations

import json
import os
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from runs import services
    from runs.models import Run, Task

    command = sys.argv[1]
    if command == "tasks":
        for spec in json.loads(sys.argv[2]):
            name = spec.pop("name")
            Task.objects.update_or_create(name=name, defaults=spec)
        answer = {"tasks": list(Task.objects.values_list("name", flat=True))}
    elif command == "start":
        answer = {"runs": []}
        for spec in json.loads(sys.argv[2]):
            task = Task.objects.get(name=spec["task"])
            try:
                run = services.start_run(task, args=spec.get("args", []))
                answer["runs"].append(run.pk)
            except services.RunRefused as exc:
                answer["runs"].append(str(exc))
    elif command == "schedule":
        from runs.models import TaskSchedule

        task_name, cron = sys.argv[2], sys.argv[3]
        ts = TaskSchedule.objects.create(task=Task.objects.get(name=task_name), cron=cron)
        answer = {"schedule": ts.pk}
    elif command == "unschedule":
        from runs.models import TaskSchedule

        for ts in TaskSchedule.objects.filter(task__name=sys.argv[2]):
            ts.enabled = False
            ts.save()
        answer = {"unscheduled": sys.argv[2]}
    elif command == "runs":
        answer = {
            "runs": [
                {**row, "task": row.pop("task__name")}
                for row in Run.objects.order_by("id").values(
                    "id", "task__name", "status", "reason", "worker", "attempt", "trigger"
                )
            ]
        }
    else:
        raise SystemExit(f"unknown command {command}")
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
