"""The web side alone (the Docker image's `web`): migrate under a lock, create
the admin user, import the tasks, then become gunicorn. Workers run apart."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import connections

from runs import startup


class Command(BaseCommand):
    help = (
        "Migrate (safe when several start together), create the admin user, import "
        "the tasks, then serve the web app with gunicorn (taskrun/gunicorn.conf.py)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", help="HOST:PORT to listen on (default: HOST and PORT)")
        parser.add_argument(
            "--wait",
            type=float,
            default=60,
            help="Seconds to wait for the database to answer (default %(default)s).",
        )
        parser.add_argument(
            "--no-setup", action="store_true", help="Skip migrate, admin user and sync_tasks."
        )

    def handle(
        self, *args: Any, bind: str | None, wait: float, no_setup: bool, **options: Any
    ) -> None:
        if not no_setup:
            startup.wait_for_database(wait)
            startup.migrate()
            call_command("ensure_admin")
            call_command("sync_tasks", verbosity=0)
        connections.close_all()
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(settings.BASE_DIR / "taskrun" / "gunicorn.conf.py"),
        ]
        if bind:
            argv += ["--bind", bind]
        sys.stdout.flush()
        sys.stderr.flush()
        # exec, not a child: gunicorn keeps this pid (pid 1's child in the
        # container), so `docker stop` signals it directly.
        os.execv(sys.executable, argv)
