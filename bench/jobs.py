"""The job the peers run: the very subprocess taskrun runs, captured as
taskrun captures it, then a marker file that says it is done (the same
completion signal for every peer, no result backend in the way)."""

from __future__ import annotations

import subprocess
import sys


def run_script(script: str, args: list[str] | None = None, marker: str | None = None) -> int:
    done = subprocess.run(
        [sys.executable, "-u", script, *(args or [])], capture_output=True, check=False
    )
    if marker:
        open(marker, "w").close()
    return done.returncode
