"""`make faults`: run every fault-injection scenario (tests/faults) at full
length and write docs/reliability.md from the figures they record.

The scenarios run on SQLite (and start their own PostgreSQL and Redis where
they need one); the crash soak, the stalled worker and the frozen
transaction run on PostgreSQL when TEST_DATABASE_URL answers. Exits non-zero when a scenario
fails, after writing what it saw."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"

# scenario -> (what is promised, how it is tested)
SCENARIOS = {
    "stalled_worker": (
        "A worker that freezes never runs its script beside the run's retry; "
        "the reaper's verdict stands and the frozen worker's late writes change nothing.",
        "Two clusters standing for two hosts. The worker running a 120 s script is "
        "SIGSTOPped; the other host's reaper marks the run lost and its retry runs "
        "there; then SIGCONT.",
    ),
    "crash_soak": (
        "Machines crash: every accepted run still ends in a final state, no two "
        "scripts of one task are ever alive together, no script is started twice, "
        "none is left behind, and the counts add up.",
        "Two clusters, many short runs over several tasks (failing, timing out, "
        "cancelled, queued, retried) while a random cluster's whole process group "
        "is SIGKILLed every few seconds and started again.",
    ),
    "sqlite_contention": (
        'SQLite with its default settings never says "database is locked".',
        "Eight processes start, claim, heartbeat, finish and reap runs as fast as "
        "they can on one SQLite file.",
    ),
    "db_restart": (
        "A database restart is survived without touching the workers.",
        "A private PostgreSQL restarted (immediate mode) under two clusters with "
        "runs in flight; then new runs.",
    ),
    "db_outage": (
        "Cut off from the database longer than a lease, workers stop their scripts "
        "before the lease runs out; once it is back they recover by themselves and "
        "every run ends final.",
        "A private PostgreSQL stopped for two leases under two clusters with runs "
        "in flight; then new runs.",
    ),
    "redis_outage": (
        "With the Redis broker, a broker outage loses no accepted run: each queued "
        "run starts once after recovery, or ends with a reason.",
        "Two clusters on a private redis-server without persistence; Redis killed "
        "with runs running and waiting, runs accepted while it is down, Redis back "
        "empty after two leases.",
    ),
    "partition": (
        "A worker cut off by the network stops its script by itself; the other "
        "cluster takes over; the healed worker's writes are fenced.",
        "One cluster in its own network namespace reaching a private PostgreSQL "
        "over a veth pair; the link is taken down mid-run for two leases.",
    ),
    "frozen_transaction": (
        "A worker frozen inside a transaction does not stall the reaper for longer "
        "than idle_in_transaction_session_timeout.",
        "A process holds the run's row lock idle in a transaction (as a frozen "
        "worker would); the reaper must still mark the stale run lost.",
    ),
    "scheduler": (
        "Several clusters fire a schedule exactly once per slot.",
        "Three clusters on a private PostgreSQL and an every-2-seconds schedule.",
    ),
}

COLUMNS = (
    ("runs", "runs"),
    ("kills", "kills"),
    ("freezes", "freezes"),
    ("overlaps", "overlaps"),
    ("started_twice", "started twice"),
    ("orphans", "orphans"),
    ("lost", "lost"),
)


def run_pytest(env: dict[str, str], *args: str) -> int:
    command = [sys.executable, "-m", "pytest", "tests/faults", "-p", "no:cacheprovider", *args]
    print("$", " ".join(command), flush=True)
    return subprocess.call(command, cwd=ROOT, env=env)


def pg_reachable(url: str) -> bool:
    return subprocess.call([sys.executable, "-m", "devtools.pg_reachable", url], cwd=ROOT) == 0


def main() -> int:
    figures_file = Path(tempfile.mkstemp(prefix="faults-", suffix=".jsonl")[1])
    base = dict(os.environ)
    base.update(
        FAULTS_SCALE=os.environ.get("FAULTS_SCALE", "full"), FAULTS_FIGURES=str(figures_file)
    )
    base.setdefault("DATA_DIR", str(ROOT / "var" / "faults"))
    base.pop("DATABASE_URL", None)
    codes = [run_pytest(base, "-q", "-rs", "--junitxml", str(ROOT / "test-output" / "faults.xml"))]
    url = os.environ.get("TEST_DATABASE_URL", "")
    if url and pg_reachable(url):
        codes.append(
            run_pytest({**base, "DATABASE_URL": url}, "-q", "-k", "crash_soak or stalled or frozen")
        )
    else:
        print("TEST_DATABASE_URL not reachable: the PostgreSQL pass of the soak is left out")
    rows = [json.loads(line) for line in figures_file.read_text().splitlines() if line.strip()]
    figures_file.unlink()
    write_doc(rows, failed=any(codes))
    print(f"wrote {DOC.relative_to(ROOT)} ({len(rows)} scenario runs)")
    return 1 if any(codes) else 0


def fmt(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def write_doc(rows: list[dict], failed: bool) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Reliability",
        "",
        "taskrun promises that a task never runs twice at once, that no run stays",
        "`running` forever, that no script outlives its run, and that nothing accepted",
        "is lost. These figures come from `make faults`, which runs every scenario in",
        "`tests/faults/` at full length against real `qcluster` processes, real",
        "databases, real signals and real network cuts (CI runs the same scenarios in",
        "a short form). Each probe script holds an `flock` on a per-task file while",
        "it lives and records its own start and end, so an overlap is seen by the",
        "kernel, not guessed from timestamps.",
        "",
        f"Last run: {now}, {platform.system()} {platform.machine()}, Python "
        f"{platform.python_version()}, lease {os.environ.get('LEASE_SECONDS', '3')} s "
        "(tests/settings.py: PROCESS_CHECK_INTERVAL 1 s, LEASE_SECONDS 3 s)."
        + (" **Some scenarios failed in this run.**" if failed else ""),
        "",
        "Kills: the faults injected. Overlaps: a probe found its task's lock taken. "
        "Orphans: script processes alive after the scenario. Lost: runs the reaper "
        "ended. Time to recover: from the fault to the run being reaped (a frozen or "
        "cut-off worker), from the service's return to new runs succeeding (database, "
        "broker), or from the end of the load to every run final (soak).",
        "",
        "| scenario | promise | how it is tested | runs | kills | overlaps | orphans "
        "| lost | time to recover | other figures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = list(SCENARIOS)
    rows.sort(key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else len(order))
    seen = set()
    for row in rows:
        name = row.pop("scenario")
        row.pop("scale", None)
        seen.add(name)
        promise, method = SCENARIOS.get(name, ("", ""))
        database = row.pop("database", "")
        title = name.replace("_", " ") + (f" ({database})" if database else "")
        kills = row.pop("kills", None)
        freezes = row.pop("freezes", None)
        cut = row.pop("cut_seconds", None)
        fault = (
            f"{kills} SIGKILL" if kills is not None
            else f"{freezes} SIGSTOP" if freezes is not None
            else f"cut {cut:g} s" if cut is not None
            else f"down {row.pop('outage_seconds'):g} s" if "outage_seconds" in row
            else "—"
        )  # fmt: skip
        recover = next(
            (f"{row.pop(k):g} s" for k in ("time_to_recover", "time_to_settle", "time_to_lost")
             if k in row),
            "—",
        )  # fmt: skip
        overlaps, orphans = row.pop("overlaps", "—"), row.pop("orphans", "—")
        runs, lost = row.pop("runs", row.get("operations", "—")), row.pop("lost", "—")
        other = "; ".join(f"{k.replace('_', ' ')}: {fmt(v)}" for k, v in row.items())
        lines.append(
            f"| {title} | {promise} | {method} | {runs} | {fault} | {overlaps} | {orphans} "
            f"| {lost} | {recover} | {other} |"
        )
    missing = [name for name in SCENARIOS if name not in seen]
    if missing:
        lines += ["", "Not run (skipped or not written yet): " + ", ".join(missing) + "."]
    lines += ["", LIMITS]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(lines) + "\n")


LIMITS = """\
## How the promises are kept

- **Lease and fencing.** A running run carries its worker's identity and a
  heartbeat renewed every `PROCESS_CHECK_INTERVAL / 3`. Any cluster's
  housekeeper marks a run whose heartbeat is older than `LEASE_SECONDS` as
  `lost` (a compare-and-set on the heartbeat it saw). Every later write of the
  old worker — heartbeat, progress, finish — is a compare-and-set on (run,
  `running`, worker) and changes nothing.
- **The script dies first.** The supervisor stops its script after half a
  lease without a successful heartbeat. Because a frozen or stuck supervisor
  cannot do that, every script is guarded by a watchdog (`runs/watchdog.py`):
  a tiny process in a session of its own, one per worker process, that the
  supervisor renews with every heartbeat; past 0.6 lease without one it
  stops the script's process group (SIGTERM, then SIGKILL within 0.15
  lease), so the script is dead before any reaper may act. When the worker
  dies, the watchdog's pipe closes and it stops the scripts it guards at
  once.
- **Jobs that vanish.** A queued run whose job is no longer waiting in the
  broker more than a lease after it was handed over — taken by a cluster that
  crashed (the ORM broker would redeliver it only after `retry`, a day; Redis
  never), lost with a Redis restart, or never sent because the broker was
  down — gets a new job from the housekeeper (`rescue_stranded_runs`). A
  second job for a run is harmless: the claim is a compare-and-set.
- **PostgreSQL connections.** `tcp_user_timeout` (a third of a lease) turns a
  connection hung across a partition into an error the worker handles, and
  `idle_in_transaction_session_timeout` (a lease, at least 10 s) ends the
  session of a worker frozen inside a transaction, so that its row locks do
  not stall the reaper.

## Known limits

- **SQLite has one writer lock.** A worker frozen *inside* a write
  transaction holds it, and every other writer (the reaper too) waits until
  it resumes or the busy timeout (30 s) passes. The stalled-worker scenario
  therefore freezes the worker outside a write on SQLite. For several
  machines, or where processes may freeze, use PostgreSQL.
- **A whole machine frozen** (a paused VM) freezes the script and its
  watchdog with it; on resume the watchdog finds its deadline long past and
  stops the script at once, but the script may run for a moment beside the
  retry. Scripts with outside side effects should use `TASKRUN_RUN_ID` and
  `TASKRUN_ATTEMPT` as fencing tokens where it matters.
- **Clocks.** Leases compare the heartbeat written by one host with the clock
  of another; keep worker clocks in sync (NTP) to well under a lease.
- **Short leases.** With the test settings (lease 3 s) a worker stalled for
  1.8 s by the machine itself (CPU starvation, swapping, a database write
  waiting that long) has its script stopped as if it were cut off. The
  default lease is 30 s.
"""


if __name__ == "__main__":
    sys.exit(main())
