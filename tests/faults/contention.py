"""One of the processes of the SQLite contention scenario: for ``seconds``,
start runs, claim them, write heartbeats, finish them, reap and rescue, as
fast as it can, on the default SQLite settings. Prints its counts as JSON.

    python -m tests.faults.contention <seconds> <index>"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import django


def main() -> None:
    seconds, index = float(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    from django.db import OperationalError, connection

    from runs import services
    from runs.models import Run, Task

    S = Run.Status
    worker = f"contention-{index}:{os.getpid()}"
    rng = random.Random(index)
    tasks = list(Task.objects.values_list("pk", flat=True))
    counts = {"start": 0, "refused": 0, "claim": 0, "heartbeat": 0, "finish": 0, "reap": 0}
    locked, errors, slowest = [], [], 0.0

    def attempt(name, fn):
        nonlocal slowest
        began = time.monotonic()
        try:
            result = fn()
        except services.RunRefused:
            counts["refused"] += 1
            return None
        except OperationalError as exc:
            (locked if "locked" in str(exc) else errors).append(f"{name}: {exc}")
            connection.close()
            return None
        except Exception as exc:
            errors.append(f"{name}: {exc.__class__.__name__}: {exc}")
            return None
        finally:
            slowest = max(slowest, time.monotonic() - began)
        counts[name] += 1
        return result

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        task = Task.objects.get(pk=rng.choice(tasks))
        attempt("start", lambda task=task: services.start_run(task, args=["0"]))
        queued = Run.objects.filter(status=S.QUEUED).order_by("?").values_list("pk", flat=True)
        run_id = queued.first()
        if run_id is not None:
            run = attempt("claim", lambda run_id=run_id: services.claim_run(run_id, worker))
            if run is not None:
                for _ in range(rng.randint(1, 3)):
                    attempt("heartbeat", lambda r=run: services.record_progress(r.pk, worker))
                end = rng.choice([S.SUCCEEDED, S.FAILED])
                attempt("finish", lambda r=run, e=end: services.finish_run(r.pk, worker, status=e))
        if rng.random() < 0.2:
            attempt("reap", lambda: (services.reap_lost_runs(), services.release_due_runs()))
    print(
        json.dumps({"counts": counts, "locked": locked, "errors": errors[:20], "slowest": slowest})
    )


if __name__ == "__main__":
    main()
