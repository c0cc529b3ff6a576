"""Web server and one worker cluster together, for a single machine."""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from runs import startup


class Command(BaseCommand):
    help = "Serve the web app (gunicorn) and one worker cluster until Ctrl-C or SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument(
            "--no-setup",
            action="store_true",
            help="Skip migrate, admin user, sync_tasks and collectstatic.",
        )
        parser.add_argument(
            "--no-collectstatic",
            action="store_true",
            help="Static files are already collected (the Docker image does it at build).",
        )

    def handle(self, host, port, no_setup, no_collectstatic, **options):
        if not no_setup:
            # One readable line, not a traceback, when PostgreSQL is down.
            startup.wait_for_database(timeout=30)
            # Under a lock: several `serve`/`web` processes may start together.
            startup.migrate()
            call_command("ensure_admin")
            call_command("sync_tasks", verbosity=0)
            if not no_collectstatic:
                call_command("collectstatic", interactive=False, verbosity=0)
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        # Own sessions: a Ctrl-C in the terminal reaches only this process,
        # which then signals each child's main process (never its group, which
        # would kill the cluster's running jobs).
        cluster = subprocess.Popen([*manage, "qcluster"], start_new_session=True)
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "taskrun.wsgi:application",
                "--config",
                str(settings.BASE_DIR / "taskrun" / "gunicorn.conf.py"),
                "--bind",
                f"{host}:{port}",
            ],
            start_new_session=True,
        )
        children = {"web": web, "cluster": cluster}
        stopping = []

        def stop(signum, frame):
            stopping.append(signum)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(f"taskrun is serving on http://{host}:{port}/ (Ctrl-C stops it)")
        status = 0
        while not stopping:
            dead = [name for name, proc in children.items() if proc.poll() is not None]
            if dead:
                self.stderr.write(f"{', '.join(dead)} stopped unexpectedly; shutting down")
                status = 1
                break
            time.sleep(0.2)
        self.stdout.write(f"stopping: running runs get {settings.DRAIN_SECONDS} s to finish")
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.DRAIN_SECONDS + 30
        for name, proc in children.items():
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                proc.kill()
                proc.wait()
        sys.exit(status)
