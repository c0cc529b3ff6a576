"""Health checks shared by /health, the API and the `health` command."""

from __future__ import annotations

from django.db import connection


def check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return "ok"


def check_broker() -> str:
    try:
        from django_q.brokers import get_broker

        if not get_broker().ping():
            return "error: no answer"
    except Exception as exc:
        return f"error: {exc.__class__.__name__}"
    return "ok"


def alive_clusters() -> int:
    try:
        from django_q.status import Stat

        return len(Stat.get_all())
    except Exception:
        return 0


def run_checks() -> tuple[bool, dict]:
    checks = {"database": check_database(), "broker": check_broker()}
    checks["workers"] = alive_clusters()
    healthy = checks["database"] == "ok" and checks["broker"] == "ok" and checks["workers"] > 0
    return healthy, checks
