"""One worker cluster (the Docker image's `worker`): wait until the web side
has migrated the database, then become `manage.py qcluster`."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from runs import startup


class Command(BaseCommand):
    help = (
        "Wait until the database is migrated, then run a worker cluster (qcluster, "
        "which drains on SIGTERM)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wait",
            type=float,
            default=300,
            help="Seconds to wait for the database and its migrations (default %(default)s).",
        )

    def handle(self, *args: Any, wait: float, **options: Any) -> None:
        startup.wait_for_migrations(wait)
        connections.close_all()
        sys.stdout.flush()
        sys.stderr.flush()
        # exec keeps this pid: SIGTERM from `docker stop` reaches the cluster's
        # main process, and only it, which is what django-q2 needs to drain.
        os.execv(sys.executable, [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster"])
