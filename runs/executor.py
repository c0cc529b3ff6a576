"""The executor: what a django-q2 worker calls with a run id.

Claim the run (short transaction), start the script in a session of its own,
supervise it — output into the log about twice a second, heartbeat, progress
and result markers, cancel flag, deadline, drain — and end it with a fenced
write. See DESIGN.md, "The life of a run"."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from runs import drain, process, rows, scripts, services, vault
from runs.limits import RunLimits
from runs.models import Run
from runs.output import LogSink, OutputReader
from runs.usage import RunUsage
from runs.watchdog import Watchdog

logger = logging.getLogger(__name__)

S = Run.Status
# How soon new output reaches the database (and live tails) after the last write.
LIVE_OUTPUT_SECONDS = 0.1


# (task id, code hash) → (the newest revision with that code, when asked). A
# revision never changes, so a worker asks once per code; a code with no
# revision (a script put in TASKS_DIR by hand) is asked again after 30 s,
# in case it is saved as one. (A newer revision of the same code is equally
# right.)
_revisions: dict[tuple[int, str], tuple[int | None, float]] = {}


def worker_identity() -> str:
    return f"{settings.WORKER_HOST}:{os.getpid()}"


# A cluster worker that has just ended a run takes the next waiting job from
# the broker itself, and again, for up to CHAIN_SECONDS after its job began:
# handing each job from the pusher to a worker and its result on to the
# monitor crosses three processes, which cost a trivial run as much CPU as
# taskrun's own work. Jobs the pusher has already taken wait at most that
# long (plus the run in hand). Only in cluster workers (runs.apps marks
# them), and only for run jobs.
CHAIN_SECONDS = 1.0
in_cluster_worker = False
_chain_broker = None


def execute_run(run_id: int) -> str:
    """Entry point of the django-q2 job. Never raises for a script's failure:
    the outcome is the run's state, not the job's."""
    began = time.monotonic()
    outcome = _execute(run_id)
    if in_cluster_worker:
        _run_waiting_jobs(began)
    return outcome


def _run_waiting_jobs(began: float) -> int:
    """Run the broker's waiting run jobs one after the other while the
    chain's time lasts; returns how many."""
    broker = _broker_to_chain()
    done = 0
    finished = None  # The job just run: it goes with the next take.
    while broker is not None and time.monotonic() - began < CHAIN_SECONDS:
        if drain.is_draining():
            break
        try:
            taken = broker.take_one(_run_of_job, done=finished)
        except Exception as exc:  # The database or Redis: django-q2's pusher retries.
            logger.warning("could not take the next job: %s", exc)
            break
        finished = None
        if taken is None:
            break  # None waiting, or the next is not a run's: django-q2's turn.
        ack_id, run_id = taken
        try:
            _execute(run_id, fresh=False)
        except Exception:
            logger.exception("run %s: the executor failed", run_id)
        done += 1
        finished = ack_id
    if finished is not None:
        try:
            broker.done_with(finished)
        except Exception as exc:
            # Its row stays locked until django-q2's retry, as a job whose
            # acknowledgement was lost; delivered again, it finds its run taken.
            logger.warning("could not acknowledge job %s: %s", finished, exc)
    return done


def _run_of_job(payload) -> int | None:
    """The run id of a run's job; None for any other job, or one signed
    with another key (django-q2's pusher reports that)."""
    from django_q.signing import BadSignature, SignedPackage

    try:
        job = SignedPackage.loads(payload)
    except (TypeError, BadSignature):
        return None
    args = job.get("args") or ()
    if job.get("func") != "runs.executor.execute_run" or len(args) != 1 or job.get("kwargs"):
        return None
    return args[0]


def _broker_to_chain():
    global _chain_broker
    if _chain_broker is None:
        from runs.broker import jobs_to_take

        _chain_broker = jobs_to_take(services.job_broker()) or False
    return _chain_broker or None


def _execute(run_id: int, fresh: bool = True) -> str:
    if fresh:
        # A django-q2 job: drop a connection that went stale while the
        # worker waited. (In a chain, the run before has just used it.)
        close_old_connections()
    worker = worker_identity()
    if drain.is_draining():
        # This worker is shutting down: leave the run queued for another one.
        services.requeue(run_id)
        return "requeued: worker shutting down"
    run = services.claim_run(run_id, worker)
    if run is None:
        return "nothing to do"
    return Supervisor(run, worker).run()


class Supervisor:
    def __init__(self, run: Run, worker: str):
        self.run_obj = run
        self.run_id = run.pk
        self.worker = worker
        self.task = run.task
        self.limits = RunLimits.for_task(self.task)
        self.sink = LogSink(run.pk, cap=self.limits.output_bytes)
        self.wake = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.reader: OutputReader | None = None
        self.tmpdir: str | None = None
        interval = settings.PROCESS_CHECK_INTERVAL
        self.heartbeat_every = max(0.5, interval / 3)
        # Past half a lease without a successful heartbeat this worker stops
        # its script, well before any reaper may declare the run lost.
        self.fence_after = settings.LEASE_SECONDS / 2
        self.last_heartbeat = time.monotonic()
        self.outcome: tuple[str, str] | None = None  # (status, reason)
        self.usage: RunUsage | None = None
        self.masker = vault.Masker([])
        self.watchdog: Watchdog | None = None
        # Fields for the run's row that ride along with the next write (one
        # transaction fewer per run).
        self.unwritten: dict = {}

    # -- the run ----------------------------------------------------------
    def run(self) -> str:
        try:
            if not self._start():
                return self._finish(S.FAILED, self.outcome[1] if self.outcome else "")
            self._supervise()
            return self._finish(*self.outcome)
        except Exception as exc:  # A bug here must not leave a script behind.
            logger.exception("supervisor of run %s failed", self.run_id)
            self._stop(grace=0)
            return self._finish(S.FAILED, f"executor error: {exc.__class__.__name__}: {exc}"[:500])
        finally:
            self._release_watchdog()
            if self.tmpdir:
                shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _start(self) -> bool:
        run = self.run_obj
        try:
            script = self.task.script_path
        except Exception as exc:
            return self._start_failed(f"invalid script path: {exc}")
        if not script.is_file():
            return self._start_failed(f"script not found: {script.name} in TASKS_DIR")
        self._record_code(script)
        extra: dict[str, str] = {}
        if run.config is not None:
            self.tmpdir = tempfile.mkdtemp(prefix=f"taskrun-{run.pk}-")
            config_path = os.path.join(self.tmpdir, "config.json")
            with open(config_path, "w", encoding="utf-8") as fh:
                json.dump(run.config, fh)
            extra["TASKRUN_CONFIG"] = config_path
        try:
            secrets = vault.secrets_for(self.task)
        except Exception as exc:
            return self._start_failed(f"could not read the secrets: {exc}")
        self.masker = vault.Masker(secrets.values())
        self.sink.masker = self.masker
        if self._run_as:
            user = pwd.getpwnam(settings.RUN_AS_USER)
            extra["HOME"] = user.pw_dir
            if self.tmpdir:
                os.chown(self.tmpdir, user.pw_uid, user.pw_gid)
                os.chown(extra["TASKRUN_CONFIG"], user.pw_uid, user.pw_gid)
        env = process.script_env(
            run.pk,
            self.task.name,
            run.attempt,
            self.task.env,
            run.env,
            secrets,
            extra,
            worker=self.worker,
        )
        rlimits = self.limits.rlimits()
        run_as = self._run_as
        if run_as:
            run_as["preexec_fn"] = process.limits_in_child(rlimits)
        try:
            self.proc = subprocess.Popen(
                process.command(script, run.args),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=settings.TASKS_DIR,
                env=env,
                start_new_session=True,
                **run_as,
                close_fds=True,
            )
        except OSError as exc:
            return self._start_failed(f"could not start the script: {exc}")
        if not run_as:
            try:
                process.apply_limits(self.proc.pid, rlimits)
            except OSError as exc:
                process.kill_group(self.proc.pid)
                self.proc.wait()
                return self._start_failed(f"could not set the script's limits: {exc}")
        # Past 60 % of the lease without a renewed heartbeat the watchdog
        # stops the script, even when this process is frozen or stuck; it is
        # dead well before the reaper (at 100 %) may let a retry start.
        lease = settings.LEASE_SECONDS
        try:
            self.watchdog = Watchdog(
                self.proc.pid,
                fence=lease * 0.6,
                grace=min(settings.KILL_GRACE_SECONDS, lease * 0.15),
            )
        except OSError as exc:
            process.kill_group(self.proc.pid)
            self.proc.wait()
            return self._start_failed(f"could not start the script's watchdog: {exc}")
        self.usage = RunUsage(self.proc.pid, write_every=self.heartbeat_every)
        self.reader = OutputReader(self.proc.stdout, self.wake)
        self.reader.start()
        self.deadline = time.monotonic() + self.task.timeout
        # Rides along with the first write (most trivial scripts: the end);
        # until then the watchdog is what guards the script.
        self.unwritten["pid"] = self.proc.pid
        return True

    def _record_code(self, script) -> None:
        """Remember which code this run ran, and its revision when known."""
        try:
            digest = scripts.code_hash(script.read_bytes())
        except OSError:
            return
        key = (self.task.pk, digest)
        revision, asked = _revisions.get(key, (None, None))
        if asked is None or (revision is None and time.monotonic() - asked > 30):
            revision = rows.latest_revision(self.task.pk, digest)
            if len(_revisions) >= 4096:
                _revisions.clear()
            _revisions[key] = (revision, time.monotonic())
        self.unwritten.update(code_hash=digest, revision_id=revision)

    @property
    def _run_as(self) -> dict:
        """Popen arguments that drop to RUN_AS_USER when the worker is root."""
        name = settings.RUN_AS_USER
        if not name or os.geteuid() != 0:
            return {}
        user = pwd.getpwnam(name)
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _start_failed(self, message: str) -> bool:
        self._note(message)
        self.outcome = (S.FAILED, message)
        return False

    def _supervise(self) -> None:
        proc = self.proc
        flush_every = settings.LOG_FLUSH_SECONDS
        # New output is stored this soon after the last write, so that a
        # live tail shows a line within a fraction of a second; the
        # heartbeat and the cancel check keep to flush_every.
        output_gap = min(LIVE_OUTPUT_SECONDS, flush_every)
        last_write = time.monotonic()
        next_flush = last_write + flush_every
        while True:
            due = next_flush
            if self.reader.pending_size:
                due = min(due, last_write + output_gap)
            timeout = max(0.0, due - time.monotonic())
            if self.reader.eof.is_set():
                # The output is closed: the script is exiting; wait for that
                # rather than for the next flush.
                process.wait_exit(proc, timeout)
            else:
                self.wake.wait(timeout)
                self.wake.clear()
            if proc.poll() is not None:
                break  # The rest of the output is stored with the end.
            now = time.monotonic()
            pending = self.reader.pending_size
            if (
                now >= next_flush
                or (pending and now >= last_write + output_gap)
                or pending >= self.reader.max_pending // 4
            ):
                next_flush = now + flush_every
                last_write = now
                state = self._tick()
                if state is not None:
                    self.outcome = state
                    break
        if self.outcome is None:
            # The script ended by itself; sweep its group and read the rest.
            process.stop_group(proc.pid, grace=1.0, reap=proc.poll)
            self._drain_output()
            code = proc.wait()
            if self._release_watchdog():
                self.outcome = (
                    S.LOST,
                    f"lease lost: no heartbeat for {self.watchdog.fence:g} s, "
                    "the watchdog stopped the script",
                )
            elif code == 0:
                self.outcome = (S.SUCCEEDED, "")
            else:
                limit = self.limits.explain_exit(code, self.reader.tail)
                self.outcome = (S.FAILED, limit or f"exit code {code}")
        else:
            status, reason = self.outcome
            grace = settings.KILL_GRACE_SECONDS
            if reason.startswith("lease"):
                grace = min(grace, settings.LEASE_SECONDS / 4)
            self._note(f"stopping the script: {reason}")
            self._stop(grace=grace)

    def _tick(self) -> tuple[str, str] | None:
        """One supervision step; returns (status, reason) when the run must stop."""
        now = time.monotonic()
        try:
            alive = self._write(**(self.usage.sample() if self.usage else {}))
            if alive is None:
                alive = self._check()
        except DatabaseError as exc:
            logger.warning("run %s: database unreachable: %s", self.run_id, exc)
            self._reset_connection()
            if now - self.last_heartbeat > self.fence_after:
                return (S.LOST, "lease lost: the database could not be reached")
            return None
        if alive is False:
            return (S.LOST, "lease lost: another worker or the reaper took the run")
        if isinstance(alive, str):
            return (S.CANCELLED, alive)
        if now >= self.deadline:
            return (S.TIMED_OUT, f"timed out after {self.task.timeout} s")
        if self.sink.truncated:
            return (S.FAILED, f"output limit {self.limits.output_mb:g} MB reached")
        if self.usage is not None:
            over = self.limits.exceeded(
                self.usage.rss_now, self.usage.cpu_seconds, self.usage.processes_now
            )
            if over:
                return (S.FAILED, over)
        shutdown_at = drain.deadline()
        if shutdown_at is not None and time.time() >= shutdown_at:
            return (S.CANCELLED, "worker shutdown")
        return None

    def _write(self, **fields) -> bool | None:
        """Store new output, markers and the heartbeat. Returns None when there
        was nothing to write, else whether this worker still holds the run."""
        reader = self.reader
        data = self.sink.encode(reader.take()) if reader else b""
        fields = {**self.unwritten, **fields, **self._marker_fields()}
        began = time.monotonic()
        heartbeat_due = began - self.last_heartbeat >= self.heartbeat_every
        if not data and not fields and not heartbeat_due:
            return None
        chunk = self.sink.chunk(data)
        try:
            held = services.record_progress(
                self.run_id,
                self.worker,
                log_chunk=chunk,
                log_size=self.sink.size + len(data),
                log_truncated=self.sink.truncated,
                **fields,
            )
        finally:
            # Past this output even when the write failed: it was read and is
            # lost, and an answer lost after its commit must not make the
            # next chunk collide with this one.
            self.sink.advance(chunk)
        self.unwritten = {}
        if held:
            # The lease runs from when the heartbeat was taken, not from when
            # a slow commit returned.
            self.last_heartbeat = began
            if self.watchdog is not None:
                self.watchdog.renew(began)
        return held

    def _marker_fields(self) -> dict:
        """Progress and result seen since the last write, secrets masked."""
        reader = self.reader
        if reader is None or not reader.markers_changed:
            return {}
        reader.markers_changed = False
        fields = {
            "progress": reader.progress,
            "progress_message": self.masker.mask(reader.progress_message),
        }
        if reader.result is not None:
            fields["result"] = self.masker.mask_json(reader.result)
        return fields

    def _check(self) -> bool | str:
        """Read the run's row: False if the lease is gone, the cancel reason if
        a cancel was asked for, else True."""
        row = (
            Run.objects.filter(pk=self.run_id)
            .values_list("status", "worker", "cancel_requested", "cancel_reason")
            .first()
        )
        if row is None or row[0] != S.RUNNING or row[1] != self.worker:
            return False
        if row[2]:
            return row[3] or "cancelled"
        return True

    def _drain_output(self) -> None:
        self.reader.join(timeout=2.0)
        if self.reader.is_alive():
            # Something still holds the pipe open; stop waiting for it.
            self.reader.close()
            self.proc.stdout.close()

    def _stop(self, grace: float) -> None:
        if self.proc is None:
            return
        process.stop_group(self.proc.pid, grace=grace, reap=self.proc.poll)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill_group(self.proc.pid)
            self.proc.wait()
        if self.reader is not None:
            self._drain_output()
        self._release_watchdog()

    def _release_watchdog(self) -> bool:
        """Let the watchdog go once the script is gone (never later: its
        process group id could be reused); returns whether it had fired."""
        if self.watchdog is None:
            return False
        return self.watchdog.close()

    def _note(self, message: str) -> None:
        data = self.sink.encode(b"") + f"[taskrun] {message}\n".encode()
        self._append_quietly(data)

    def _append_quietly(self, data: bytes) -> None:
        chunk = self.sink.chunk(data)
        try:
            services.record_progress(
                self.run_id,
                self.worker,
                log_chunk=chunk,
                log_size=self.sink.size + len(data),
                **self.unwritten,
            )
            self.unwritten = {}
        except DatabaseError:
            self._reset_connection()
        self.sink.advance(chunk)  # As in _write.

    def _finish(self, status: str, reason: str) -> str:
        code = self.proc.returncode if self.proc is not None else None
        rest = self.sink.encode(self.reader.take(), final=True) if self.reader else b""
        fields = {
            "exit_code": code,
            "log_size": self.sink.size,
            "log_truncated": self.sink.truncated,
        }
        if self.usage is not None:
            fields.update(self.usage.finish())
        fields.update(self._marker_fields())
        fields.update(self.unwritten)
        chunk = self.sink.chunk(rest)
        fields["log_size"] = self.sink.size + len(rest)
        fields["log_truncated"] = self.sink.truncated
        for attempt in range(3):
            try:
                # A failed attempt stored nothing (the next one stores the
                # same chunk), unless only its answer was lost: see below.
                done = services.finish_run(
                    self.run_id,
                    self.worker,
                    status=status,
                    reason=reason,
                    known=self.run_obj,
                    log_chunk=chunk,
                    **fields,
                )
                self.sink.advance(chunk)
                break
            except DatabaseError as exc:
                logger.warning("run %s: could not record the end: %s", self.run_id, exc)
                self._reset_connection()
                if self._end_stored(status):
                    # Committed, but the answer was lost: what follows a
                    # run's end (its retry, downstream tasks, notifications)
                    # is still to do.
                    self.sink.advance(chunk)
                    self._after_end()
                    done = True
                    break
                done = False
                time.sleep(0.5 * (attempt + 1))
        if not done:
            logger.warning(
                "run %s ended %s here, but this worker no longer held it", self.run_id, status
            )
            return f"fenced: {status}"
        return status

    def _end_stored(self, status: str) -> bool:
        """Whether this worker's end of the run is in the database."""
        try:
            return Run.objects.filter(pk=self.run_id, status=status, worker=self.worker).exists()
        except DatabaseError:
            self._reset_connection()
            return False

    def _after_end(self) -> None:
        try:
            services.after_run_end(self.run_id)
        except Exception:
            logger.exception("run %s: what follows its end failed", self.run_id)

    def _reset_connection(self) -> None:
        try:
            connection.close()
        except DatabaseError:
            pass
