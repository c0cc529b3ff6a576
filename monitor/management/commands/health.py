"""The checks of /health, for cron and container health checks."""

from __future__ import annotations

import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from monitor.health import HEALTH_TIMEOUT, health_report


class Command(BaseCommand):
    help = (
        "Check the database, the broker and the worker clusters, as /health does; "
        "exit 1 when one fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the /health body."
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=HEALTH_TIMEOUT,
            help="Seconds each check may take (default %(default)s).",
        )

    def handle(
        self, *args: Any, as_json: bool = False, timeout: float = HEALTH_TIMEOUT, **options: Any
    ) -> None:
        healthy, body = health_report(timeout)
        if as_json:
            self.stdout.write(json.dumps(body, indent=2))
        else:
            checks = body["checks"]
            failing = set(body.get("failing", []))
            for name in ("database", "broker"):
                self._line(name, checks[name], name not in failing)
            workers = checks["workers"]
            self._line(
                "workers",
                f"{workers} cluster{'s' if workers != 1 else ''} alive",
                "workers" not in failing,
            )
            self.stdout.write("healthy" if healthy else "UNHEALTHY: " + ", ".join(sorted(failing)))
        if not healthy:
            sys.exit(1)

    def _line(self, name: str, value: Any, ok: bool) -> None:
        style = self.style.SUCCESS if ok else self.style.ERROR
        self.stdout.write(f"{name:<9} {style(str(value))}")
