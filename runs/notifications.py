"""Telling people about runs: webhooks, email, and the alerts a run log cannot
give (filled in below)."""

from __future__ import annotations

from runs.models import Run


def run_ended(run: Run, *, final: bool) -> None:
    """Called after every run's end (not skipped or cancelled ones)."""
