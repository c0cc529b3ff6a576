"""What the test suite needs beyond Python packages, installed when missing.

The browser tests drive Debian's Chromium (``/usr/bin/chromium``) through
Playwright; Playwright's own browser download is never used. When Chromium is
missing it is installed with apt-get. Under ``CI=true`` a failure stops the
run; elsewhere the browser tests skip themselves and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

CHROMIUM = "/usr/bin/chromium"


def _apt(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(
        ["apt-get", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )


def ensure_chromium() -> str | None:
    """Install Chromium when it is missing; return why it failed, or None."""
    if os.path.exists(CHROMIUM):
        return None
    if shutil.which("apt-get") is None:
        return "apt-get is not available"
    print(f"ci_prepare: {CHROMIUM} is missing; installing Debian's chromium with apt-get")
    for step in (["update", "-q"], ["install", "-y", "-q", "--no-install-recommends", "chromium"]):
        done = _apt(*step)
        if done.returncode != 0:
            tail = done.stdout.decode(errors="replace").strip().splitlines()[-3:]
            return f"apt-get {' '.join(step)} failed: {' | '.join(tail)}"
    if not os.path.exists(CHROMIUM):
        return f"apt-get installed chromium but {CHROMIUM} does not exist"
    return None


def main() -> int:
    problem = ensure_chromium()
    if problem is None:
        return 0
    if os.environ.get("CI") == "true":
        print(f"ci_prepare: cannot install Chromium for the browser tests: {problem}")
        return 1
    print(f"ci_prepare: {problem}; the browser tests will be skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
