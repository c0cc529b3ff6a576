"""The benchmark suite of issue 11: P1-P7, every set-up measured in one
session on one machine, repetitions interleaved (rep 1 of every set-up, then
rep 2, ...), min / median / max, and ratios as the median of paired reps so
that machine drift cancels. `make bench` writes bench/RESULTS.md;
`make bench-quick` runs the same code at a small scale and prints the table.

    .venv/bin/python -m bench [--quick] [--only P1,P2] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import setups
from bench.setups import PYTHON, ROOT, BareQ, CeleryRedis, Direct, PrivateRedis, Taskrun

PG_BASE = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432/h_perf")


@dataclass
class Scale:
    reps: int
    runs: int  # P1/P6: trivial runs per rep
    latencies: int  # P2: dispatches per set-up per rep
    lines: int  # P3: lines the chatty script prints
    ticks: int  # P4: lines of the tail script
    pages_small: int  # P5: runs in the small database
    pages_large: int  # P5: runs in the large database
    page_requests: int  # P5: requests per page per rep
    postgres: bool = True
    idle_seconds: float = 10.0


FULL = Scale(
    reps=3,
    runs=300,
    latencies=30,
    lines=2_000_000,
    ticks=40,
    pages_small=1_000,
    pages_large=1_000_000,
    page_requests=30,
)
QUICK = Scale(
    reps=3,
    runs=30,
    latencies=8,
    lines=200_000,
    ticks=12,
    pages_small=1_000,
    pages_large=20_000,
    page_requests=8,
    idle_seconds=3.0,
)
TINY = Scale(
    reps=2,
    runs=4,
    latencies=2,
    lines=2_000,
    ticks=3,
    pages_small=50,
    pages_large=200,
    page_requests=2,
    postgres=False,
    idle_seconds=0.5,
)


@dataclass
class Row:
    measure: str
    setup: str
    unit: str
    values: list[float] = field(default_factory=list)
    ratio_to: str | None = None  # the reference set-up's row of the same measure
    ratio: float | None = None
    goal: str = ""
    note: str = ""


class Results:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Row] = {}
        self.notes: list[str] = []

    def add(self, measure: str, setup: str, value: float, unit: str, **kw) -> None:
        row = self.rows.setdefault((measure, setup), Row(measure, setup, unit, **kw))
        row.values.append(value)

    def pair(self, measure: str, setup: str, reference: str, goal: str = "") -> None:
        """Ratio of paired reps: median of value_i / reference_i."""
        row, ref = self.rows.get((measure, setup)), self.rows.get((measure, reference))
        if row is None or ref is None:
            return
        pairs = [a / b for a, b in zip(row.values, ref.values, strict=False) if b]
        row.ratio_to = reference
        row.ratio = statistics.median(pairs) if pairs else None
        row.goal = goal or row.goal

    def table(self) -> str:
        lines = [
            "| # | set-up | unit | min | median | max | ratio (paired medians) | goal |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in self.rows.values():
            v = row.values
            ratio = f"{row.ratio:.2f}× {row.ratio_to}" if row.ratio is not None else ""
            lines.append(
                f"| {row.measure} | {row.setup} | {row.unit} | {_fmt(min(v))} | "
                f"{_fmt(statistics.median(v))} | {_fmt(max(v))} | {ratio} | {row.goal} |"
            )
        return "\n".join(lines)


def _fmt(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def interleaved(reps: int, setups_: list, measure) -> None:
    """Rep 1 of every set-up, then rep 2, ...; the others are paused while
    one is measured, and the order within a rep rotates."""
    for rep in range(reps):
        order = setups_[rep % len(setups_) :] + setups_[: rep % len(setups_)]
        for setup in order:
            for other in setups_:
                if other is not setup:
                    setups.pause(other)
            setups.resume(setup)
            measure(rep, setup)
        for setup in setups_:
            setups.resume(setup)
    print(flush=True)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


# --- the measures -------------------------------------------------------------


def p1_throughput(scale: Scale, results: Results, group: list, direct: Direct) -> None:
    everyone = [direct, *group]

    def measure(rep: int, setup) -> None:
        seconds = setup.throughput(scale.runs)
        results.add("P1", setup.name, seconds, "s")
        if hasattr(setup, "memory"):
            for part, rss in setup.memory().items():
                results.add("P7", f"{setup.name} {part} after P1", rss / 2**20, "MB")
        log(f"P1 rep {rep + 1} {setup.name}: {seconds:.2f} s")

    interleaved(scale.reps, everyone, measure)
    for setup in group:
        results.pair(
            "P1", setup.name, direct.name, "≤ 1.15× direct" if setup.kind == "taskrun" else ""
        )
    # P6: taskrun against Celery on the same reps.
    celery = next((s for s in group if s.kind == "celery"), None)
    if celery is not None:
        for setup in group:
            if setup.kind != "taskrun":
                continue
            row = results.rows[("P1", setup.name)]
            ref = results.rows[("P1", celery.name)]
            for a, b in zip(row.values, ref.values, strict=False):
                results.add("P6", setup.name, b / a, "× Celery speed")
            goal = "≥ 1.0" if "redis" in setup.name else "≥ 0.95"
            results.rows[("P6", setup.name)].goal = goal


def p2_latency(scale: Scale, results: Results, group: list, tmp: Path) -> None:
    rnd = random.Random(11)

    def measure(rep: int, setup) -> None:
        values = []
        for i in range(scale.latencies):
            time.sleep(rnd.uniform(0.05, 0.5))  # a random moment of the poll cycle
            out = tmp / f"latency-{setup.name}-{rep}-{i}"
            values.append(setup.latency(out) * 1000)
        med, p95 = statistics.median(values), percentile(values, 0.95)
        results.add("P2 median", setup.name, med, "ms")
        results.add("P2 p95", setup.name, p95, "ms")
        log(f"P2 rep {rep + 1} {setup.name}: median {med:.1f} ms, p95 {p95:.1f} ms")

    interleaved(scale.reps, group, measure)
    direct = next(s for s in group if s.kind == "direct")
    celery = next((s for s in group if s.kind == "celery"), None)
    for setup in group:
        if setup.kind == "direct":
            continue
        if setup.kind == "taskrun" and "redis" in setup.name and celery is not None:
            results.pair("P2 median", setup.name, celery.name, "≤ 1.1× Celery")
            results.pair("P2 p95", setup.name, celery.name)
        else:
            goal = "≤ 40 ms" if setup.kind == "taskrun" and "sqlite" in setup.name else ""
            results.pair("P2 median", setup.name, direct.name, goal)
            results.pair("P2 p95", setup.name, direct.name, "≤ 60 ms" if goal else "")
    # The idle cluster's CPU, which a fast poll would trade for latency.
    for setup in group:
        if hasattr(setup, "idle_cpu"):
            for other in group:
                if other is not setup:
                    setups.pause(other)
            setups.resume(setup)
            share = setup.idle_cpu(scale.idle_seconds) * 100
            results.add(
                "P2 idle CPU",
                setup.name,
                share,
                "% of a core",
                goal="< 3 %" if setup.kind == "taskrun" else "",
            )
            for other in group:
                setups.resume(other)


def p3_log_capture(scale: Scale, results: Results, taskrun: Taskrun, tmp: Path) -> None:
    script = taskrun.folder / "tasks" / "chatty.py"
    small = max(1, scale.lines // 10)

    def piped(lines: int) -> float:
        start = time.perf_counter()
        subprocess.run(f"{PYTHON} -u {script} {lines} | cat > /dev/null", shell=True, check=True)
        return time.perf_counter() - start

    def supervised(lines: int) -> dict:
        run = taskrun.agent("create_run", task="chatty", args=[str(lines)])["run"]
        out = subprocess.run(
            [PYTHON, "-m", "bench.supervise", str(run)],
            cwd=ROOT,
            env=taskrun.env,
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        assert figures["outcome"] == "succeeded", figures
        # Every line reached the log, not just the end of it.
        assert figures["log_size"] == sum(len(f"line {i}\n") for i in range(lines)), figures
        taskrun.agent("clean")
        return figures

    for rep in range(scale.reps):
        cat = piped(scale.lines)
        big = supervised(scale.lines)
        little = supervised(small)
        results.add("P3", "python -u script \\| cat", cat, "s")
        results.add("P3", "taskrun supervisor", big["seconds"], "s")
        results.add(
            "P3 memory",
            f"supervisor, {scale.lines:,} lines",
            big["max_rss"] / 2**20,
            "MB peak",
            goal="≤ 64 MB, flat",
        )
        results.add(
            "P3 memory", f"supervisor, {small:,} lines", little["max_rss"] / 2**20, "MB peak"
        )
        results.add(
            "P3 memory",
            f"supervisor growth, {scale.lines:,} lines",
            (big["max_rss"] - big["rss_before"]) / 2**20,
            "MB",
        )
        log(
            f"P3 rep {rep + 1}: cat {cat:.2f} s, taskrun {big['seconds']:.2f} s, "
            f"rss {big['max_rss'] / 2**20:.0f} MB "
            f"({little['max_rss'] / 2**20:.0f} MB at {small:,} lines)"
        )
    results.pair("P3", "taskrun supervisor", "python -u script \\| cat", "≤ 1.15×")


def p4_live_tail(scale: Scale, results: Results, taskrun: Taskrun) -> None:
    run_js = (ROOT / "static" / "runs" / "run.js").read_text()
    found = re.search(r"VISIBLE_MS\s*=\s*(\d+)", run_js)
    page_ms = int(found.group(1)) if found else 700
    session = taskrun.login()
    for rep in range(scale.reps):
        run = taskrun.execute("tail", [str(scale.ticks), "0.1"])
        seen: dict[str, list[float]] = {"api": [], "page": []}

        def follow(kind: str, run: int = run, seen: dict = seen) -> None:
            offset, carry, pending = 0, b"", True
            while pending:
                if kind == "api":
                    _, headers, body = taskrun.http(
                        "GET", f"/api/logs/tail_{run}.log?offset={offset}"
                    )
                    pending = headers.get("X-Run-Status") in ("queued", "running") or body
                    offset += len(body)
                else:
                    _, _, raw = taskrun.http(
                        "GET", f"/runs/{run}/live?offset={offset}", token=False, opener=session
                    )
                    data = json.loads(raw)
                    body = data["log"]["text"].encode()
                    offset = data["log"]["offset"]
                    pending = data["active"] or data["log"]["more"]
                now = time.time()
                carry += body
                *complete, carry = carry.split(b"\n")
                for line in complete:
                    if line.startswith(b"tick "):
                        seen[kind].append(now - float(line.split()[1]))
                time.sleep(0.1 if kind == "api" else page_ms / 1000)

        threads = [threading.Thread(target=follow, args=(k,)) for k in seen]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        taskrun.agent("wait_idle")
        for kind, label in (
            ("api", "API polled every 0.1 s"),
            ("page", f"run page (polls every {page_ms} ms)"),
        ):
            values = [v * 1000 for v in seen[kind]]
            if values:
                results.add("P4 p95", label, percentile(values, 0.95), "ms", goal="≤ 500 ms")
        log(
            f"P4 rep {rep + 1}: api p95 {percentile(seen['api'], 0.95) * 1000:.0f} ms, "
            f"page p95 {percentile(seen['page'], 0.95) * 1000:.0f} ms"
        )


def p5_pages(scale: Scale, results: Results, base: Path) -> None:
    from bench import pages

    databases = [("sqlite", "")]
    if scale.postgres:
        databases.append(("postgres", PG_BASE + "_pages"))
    for engine, url in databases:
        for size in (scale.pages_small, scale.pages_large):
            seconds = pages.prepare(base / f"pages-{engine}-{size}", url and f"{url}_{size}", size)
            log(f"P5 {engine}: {size:,} runs generated in {seconds:.1f} s")
            results.add("P5 generator", f"{engine}, {size:,} runs", seconds, "s")
    for rep in range(scale.reps):
        for engine, url in databases:
            figures = {}
            for size in (scale.pages_small, scale.pages_large):
                figures[size] = pages.measure(
                    base / f"pages-{engine}-{size}", url and f"{url}_{size}", scale.page_requests
                )
            for page, p95 in figures[scale.pages_large].items():
                small = figures[scale.pages_small][page]
                results.add(
                    "P5 p95", f"{engine} {page} @ {scale.pages_large:,}", p95, "ms", goal="≤ 200 ms"
                )
                results.add(
                    "P5 p95 ratio",
                    f"{engine} {page}",
                    p95 / small if small else 0,
                    f"× @ {scale.pages_small:,}",
                    goal="≤ 1.5×",
                )
            log(
                f"P5 rep {rep + 1} {engine}: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in figures[scale.pages_large].items())
            )
    for _, url in databases:
        for size in (scale.pages_small, scale.pages_large) if url else ():
            setups.reset_postgres(f"{url}_{size}", create=False)


# --- the environment ------------------------------------------------------------


def environment(redis: PrivateRedis | None) -> dict[str, str]:
    from importlib.metadata import version

    def pg_version() -> str:
        try:
            import psycopg

            admin = urllib.parse.urlunsplit(
                urllib.parse.urlsplit(PG_BASE)._replace(path="/postgres")
            )
            with psycopg.connect(admin) as conn:
                return conn.execute("SHOW server_version").fetchone()[0]
        except Exception as exc:  # noqa: BLE001
            return f"unavailable ({exc.__class__.__name__})"

    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPUs": str(os.cpu_count()),
        "CPU": _cpu_model(),
        "load average at start (1, 5, 15 min)": ", ".join(f"{x:.2f}" for x in load),
        "Python": platform.python_version(),
        "Django": version("django"),
        "django-q2": version("django-q2"),
        "Celery": _maybe(version, "celery"),
        "SQLite": __import__("sqlite3").sqlite_version,
        "PostgreSQL": pg_version(),
        "Redis": redis.version() if redis else "not used",
        "git commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }


def _maybe(f, *args) -> str:
    try:
        return f(*args)
    except Exception:  # noqa: BLE001
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --- the run -------------------------------------------------------------------------


def run(scale: Scale, only: set[str], base: Path, out: Path | None, label: str) -> Results:
    results = Results()
    # Redis and Celery are optional: without them their set-ups are left out
    # and the results say so.
    redis = PrivateRedis(base / "redis") if shutil.which("redis-server") else None
    has_celery = importlib.util.find_spec("celery") is not None and redis is not None
    if redis is None:
        results.notes.append("redis-server not found: the Redis and Celery set-ups were left out.")
    elif not has_celery:
        results.notes.append("Celery not installed (bench/requirements.txt): left out.")
    if redis is not None:
        redis.start()
    env = environment(redis)
    planned: list = []
    started: list = []
    pg = PG_BASE if scale.postgres else ""

    def start(setup):
        planned.append(setup)
        return setup

    def start_all() -> None:
        """Start what was planned, a few at a time (each migrates a database)."""

        def one(setup) -> None:
            t0 = time.perf_counter()
            setup.start()
            started.append(setup)
            log(f"started {setup.name} in {time.perf_counter() - t0:.1f} s")

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(one, [s for s in planned if s not in started]))

    try:
        live = only & {"P1", "P2", "P3", "P4", "P6", "P7"}
        direct = start(Direct(base, scale.runs)) if live else None
        sqlite = start(Taskrun("taskrun-sqlite", base, scale.runs, web=True)) if live else None
        redis_tr = bare_redis = celery = None
        if redis is not None and only & {"P1", "P2", "P6", "P7"}:
            redis_tr = start(
                Taskrun("taskrun-redis", base, scale.runs, web=True, redis_url=redis.url(1))
            )
            bare_redis = start(BareQ("django-q2-redis", base, scale.runs, redis_url=redis.url(2)))
            if has_celery:
                celery = start(CeleryRedis("celery-redis", base, scale.runs, redis.url(3)))
        if only & {"P1", "P6", "P7"}:
            group = [sqlite, redis_tr]
            if pg:
                group.append(
                    start(
                        Taskrun("taskrun-postgres", base, scale.runs, database_url=f"{pg}_taskrun")
                    )
                )
            group.append(start(BareQ("django-q2-sqlite", base, scale.runs)))
            group.append(bare_redis)
            if pg:
                group.append(
                    start(BareQ("django-q2-postgres", base, scale.runs, database_url=f"{pg}_bare"))
                )
            group.append(celery)
            group = [s for s in group if s is not None]
            start_all()
            for setup in group:
                for part, rss in setup.memory().items():
                    results.add("P7", f"{setup.name} {part} idle", rss / 2**20, "MB")
            p1_throughput(scale, results, group, direct)
        start_all()
        if "P2" in only:
            group = [direct, sqlite, redis_tr, bare_redis, celery]
            p2_latency(scale, results, [s for s in group if s is not None], base)
        for other in started:
            if other not in (sqlite, direct):
                setups.pause(other)
        if "P3" in only:
            p3_log_capture(scale, results, sqlite, base)
        if "P4" in only:
            p4_live_tail(scale, results, sqlite)
    finally:
        for setup in reversed(planned):
            setups.resume(setup)
            try:
                setup.stop()
            except Exception as exc:  # noqa: BLE001
                print(f"stopping {setup.name}: {exc}", file=sys.stderr)
        if redis is not None:
            redis.stop()
    if "P5" in only:
        p5_pages(scale, results, base)
    env["load average at end (1, 5, 15 min)"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(results.table())
    for note in results.notes:
        print(note)
    if out is not None:
        write_results(out, scale, env, results, label, ",".join(sorted(only)))
    return results


def write_results(
    out: Path, scale: Scale, env: dict[str, str], results: Results, label: str, key: str
) -> None:
    """Replace this selection's generated block of RESULTS.md (``--only P5``
    has its own, so that P5 can be taken apart), keep the prose around it."""
    begin, end = f"<!-- generated {key} -->", f"<!-- end generated {key} -->"
    block = [
        begin,
        "",
        f"`python -m bench --only {key}` ({label} scale)",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in env.items()],
        "",
        f"Scale: {scale.reps} interleaved reps; P1 {scale.runs} runs; P2 {scale.latencies} "
        f"dispatches per set-up per rep; P3 {scale.lines:,} lines; P4 {scale.ticks} lines per rep; "
        f"P5 {scale.pages_small:,} vs {scale.pages_large:,} runs, {scale.page_requests} requests "
        "per page per rep.",
        "",
        results.table(),
        "",
        *results.notes,
        end,
    ]
    text = out.read_text() if out.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    new = "\n".join(block)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    out.write_text(text)
    log(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small scale (under 5 minutes)")
    parser.add_argument("--tiny", action="store_true", help="a smoke run (the tests use it)")
    parser.add_argument("--only", default="P1,P2,P3,P4,P5,P6,P7")
    parser.add_argument("--out", type=Path, help="write the table into this RESULTS.md")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--no-postgres", action="store_true")
    opts = parser.parse_args(argv)
    scale = TINY if opts.tiny else QUICK if opts.quick else FULL
    if opts.reps:
        scale.reps = opts.reps
    if opts.no_postgres:
        scale.postgres = False
    only = {p.strip().upper() for p in opts.only.split(",")}
    label = "tiny" if opts.tiny else "quick" if opts.quick else "full"
    with tempfile.TemporaryDirectory(prefix="taskrun-bench-") as tmp:
        run(scale, only, Path(tmp), opts.out, label)


if __name__ == "__main__":
    main()
