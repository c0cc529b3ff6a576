from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from runs.cron import validate_cron, validate_timezone
from runs.names import script_path, validate_task_name


def default_timeout() -> int:
    return settings.TASK_TIMEOUT


def validate_timeout(value: int) -> None:
    if not 1 <= value <= settings.TASK_TIMEOUT_MAX:
        raise ValidationError(
            f"The timeout must be between 1 and {settings.TASK_TIMEOUT_MAX} seconds."
        )


def default_retry_on() -> list[str]:
    return ["failed", "timed_out", "lost"]


def default_timezone() -> str:
    return settings.TIME_ZONE


def validate_retry_on(value: list[str]) -> None:
    allowed = {"failed", "timed_out", "lost"}
    if not isinstance(value, list) or not set(value) <= allowed:
        raise ValidationError('Retry on must be a list of "failed", "timed_out" and "lost".')


class Task(models.Model):
    class Overlap(models.TextChoices):
        SKIP = "skip", "skip: refuse a new start while a run is queued or running"
        QUEUE = "queue", "queue: the new run waits for the running one"
        REPLACE = "replace", "replace: cancel the running one, then start"

    name = models.CharField(max_length=64, unique=True, validators=[validate_task_name])
    description = models.TextField(blank=True)
    args = models.JSONField(
        default=list, blank=True, help_text="Default arguments, a JSON list of strings."
    )
    env = models.JSONField(
        default=dict,
        blank=True,
        help_text="Environment variables for every run, a JSON object of strings.",
    )
    timeout = models.PositiveIntegerField(
        default=default_timeout,
        validators=[validate_timeout],
        help_text="Seconds before a run is stopped.",
    )
    enabled = models.BooleanField(default=True, help_text="A paused task refuses new runs.")
    overlap = models.CharField(
        max_length=8,
        choices=Overlap.choices,
        default=Overlap.SKIP,
        help_text="What a start does while a run of this task is queued or running.",
    )
    max_queued = models.PositiveSmallIntegerField(
        default=1, help_text="With the queue policy: how many runs may wait."
    )
    retry_count = models.PositiveSmallIntegerField(
        default=0, help_text="How many times a failed run is tried again (0: never)."
    )
    retry_on = models.JSONField(
        default=default_retry_on,
        blank=True,
        validators=[validate_retry_on],
        help_text='Outcomes that are retried: a list of "failed", "timed_out", "lost".',
    )
    retry_delay = models.FloatField(
        default=10,
        validators=[MinValueValidator(0)],
        help_text="Seconds before the first retry.",
    )
    retry_backoff = models.FloatField(
        default=2,
        validators=[MinValueValidator(1)],
        help_text="Each retry waits this many times longer than the one before.",
    )
    retry_max_delay = models.FloatField(
        default=3600,
        validators=[MinValueValidator(0)],
        help_text="The longest wait before a retry, seconds.",
    )
    # Notifications (runs.notifications). A chain of attempts notifies once,
    # at its last attempt; "recovery" is the first success after a failure.
    notify_emails = models.TextField(
        blank=True, help_text="Addresses to email, separated by commas or new lines."
    )
    email_on_failure = models.BooleanField(default=True)
    email_on_success = models.BooleanField(default=False)
    email_on_recovery = models.BooleanField(default=True)
    alert_after = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Alert when the task has not succeeded for this many seconds (dead-man switch).",
    )
    slow_factor = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Alert when a run takes longer than this many times its recent median.",
    )
    # Resource limits; null means the RUN_* setting's default.
    memory_mb = models.PositiveIntegerField(null=True, blank=True)
    cpu_seconds = models.PositiveIntegerField(null=True, blank=True)
    output_mb = models.FloatField(null=True, blank=True)
    missing = models.BooleanField(
        default=False, editable=False, help_text="The script file is gone."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("run_task", "Can start and cancel runs"),
            ("edit_code", "Can edit task code"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        # The task's page (the admin's "View on site" leads there).
        return reverse("runs:task", args=[self.name])

    @property
    def script(self) -> str:
        return f"{self.name}.py"

    @property
    def script_path(self):
        return script_path(self.name)

    def read_code(self) -> str:
        try:
            return self.script_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def active_run(self) -> Run | None:
        # The running one first: with the queue policy others wait behind it,
        # and delayed runs wait for their time.
        return (
            self.runs.filter(status__in=Run.Status.active())
            .order_by("-status", models.F("not_before").asc(nulls_first=True), "id")
            .first()
        )


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMED_OUT = "timed_out"
        CANCELLED = "cancelled"
        LOST = "lost"
        SKIPPED = "skipped"

        @classmethod
        def active(cls) -> list[str]:
            return [cls.QUEUED, cls.RUNNING]

        @classmethod
        def final(cls) -> list[str]:
            return [s for s in cls.values if s not in cls.active()]

    class Trigger(models.TextChoices):
        MANUAL = "manual"
        ADMIN = "admin"
        API = "api"
        CLI = "cli"
        SCHEDULE = "schedule"
        RETRY = "retry"
        UPSTREAM = "upstream"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    reason = models.CharField(max_length=500, blank=True, default="")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.MANUAL)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    config = models.JSONField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=1)
    exit_code = models.IntegerField(null=True, blank=True)

    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    # Who holds the lease: "<host>:<pid>" of the supervising worker, and the
    # script's process group (its pid, as it runs in its own session).
    worker = models.CharField(max_length=200, blank=True, default="")
    pid = models.IntegerField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    cancel_reason = models.CharField(max_length=200, blank=True, default="")

    progress = models.PositiveSmallIntegerField(null=True, blank=True)
    progress_message = models.CharField(max_length=500, blank=True, default="")
    result = models.JSONField(null=True, blank=True)

    # When it may start. A delayed run waits, not counted by the overlap
    # policy, until ``not_before``; then it is admitted like a new start and
    # ``not_before`` is cleared. ``scheduled_for`` keeps the time asked for
    # (a schedule's slot, a delay's end). ``dispatched_at``: when its job went
    # to the broker; a queued run without it waits in line (queue policy).
    not_before = models.DateTimeField(null=True, blank=True)
    scheduled_for = models.DateTimeField(null=True, blank=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    schedule = models.ForeignKey(
        "TaskSchedule", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    retry_of = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retry"
    )
    upstream = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="downstream_runs",
        help_text="The run whose end started this one.",
    )
    log_size = models.BigIntegerField(default=0)
    log_truncated = models.BooleanField(default=False)

    # The code it ran (sha256 of the script) and its revision, when known.
    code_hash = models.CharField(max_length=64, blank=True, default="")
    revision = models.ForeignKey(
        "CodeRevision", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # What the script's process tree cost, sampled by the executor.
    peak_rss = models.BigIntegerField(null=True, blank=True, help_text="bytes")
    cpu_seconds = models.FloatField(null=True, blank=True)
    usage = models.JSONField(
        null=True, blank=True, help_text="A compact series: [[t, cpu%, rss, procs], …]"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The second guard of "one running run per task", beside the Task
            # row lock at claim time; it holds on SQLite too.
            models.UniqueConstraint(
                fields=["task"],
                condition=Q(status="running"),
                name="one_running_run_per_task",
            ),
        ]
        indexes = [
            models.Index(fields=["task", "-id"], name="run_task_recent"),
            models.Index(fields=["status", "-id"], name="run_status_recent"),
            # The run list filtered by a rare trigger (retry, upstream, api):
            # newest first without walking the table.
            models.Index(fields=["trigger", "-id"], name="run_trigger_recent"),
            models.Index(fields=["-queued_at"], name="run_queued_at"),
            # The live runs of a task (overlap policy, dispatch, the task
            # page) without walking its history. Not a partial index: SQLite
            # cannot match its condition against a query's bound parameters.
            models.Index(fields=["task", "status"], name="run_task_status"),
            # A run's retry and the runs it started (the run page). Nearly
            # every run has neither: over the whole column, SQLite's ANALYZE
            # statistics call the foreign keys' own indexes useless and the
            # planner walks the table; these hold only the rows that have
            # one (and "= %s" implies NOT NULL on both databases).
            models.Index(
                fields=["retry_of"], name="run_retry_of", condition=Q(retry_of__isnull=False)
            ),
            models.Index(
                fields=["upstream", "id"], name="run_upstream", condition=Q(upstream__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task.name} #{self.pk}"

    @property
    def is_active(self) -> bool:
        return self.status in Run.Status.active()

    @property
    def duration(self) -> timedelta | None:
        if not self.started_at:
            return None
        return (self.finished_at or timezone.now()) - self.started_at

    @property
    def log_name(self) -> str:
        return f"{self.task.name}_{self.pk}.log"

    def read_log(self, offset: int = 0, limit: int | None = None) -> bytes:
        """The stored log from byte ``offset`` (up to ``limit`` bytes)."""
        return LogChunk.read(self.pk, offset, limit)


class RunEvent(models.Model):
    """One change of a run's state: when, from what, to what, by whom and why."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    actor = models.CharField(max_length=200, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '∅'} → {self.to_status}"


class LogChunk(models.Model):
    """A piece of a run's output, stored in the database so that any web host
    can show any run. Bytes ``start`` to ``start + len(data)`` of the log; the
    data is valid UTF-8 (invalid input was replaced when it was read)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    start = models.BigIntegerField()
    data = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "start"], name="log_chunk_order")]

    def __str__(self) -> str:
        return f"run {self.run_id} @{self.start}"

    @classmethod
    def read(cls, run_id: int, offset: int = 0, limit: int | None = None) -> bytes:
        offset = max(0, offset)
        # The chunk that holds ``offset`` starts at or before it.
        first = (
            cls.objects.filter(run_id=run_id, start__lte=offset)
            .order_by("-start")
            .values_list("start", flat=True)
            .first()
        )
        chunks = cls.objects.filter(run_id=run_id, start__gte=first or 0).order_by("start")
        out = bytearray()
        for start, data in chunks.values_list("start", "data").iterator(chunk_size=50):
            data = bytes(data)
            lo = max(0, offset - start)
            out += data[lo:]
            if limit is not None and len(out) >= limit:
                del out[limit:]
                break
        return bytes(out)


class CodeRevision(models.Model):
    """A saved version of a task's script."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField()
    code = models.TextField()
    code_hash = models.CharField(max_length=64, db_index=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["task", "number"], name="revision_number")]

    def __str__(self) -> str:
        return f"{self.task.name} r{self.number}"


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only its SHA-256 is stored; the token
    itself is shown once, when it is created."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The first characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Secret(models.Model):
    """A named secret given to scripts as an environment variable: global
    (task empty) or for one task, which then wins over the global one. The
    value is stored encrypted and never shown again."""

    name = models.CharField(max_length=64)
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.CASCADE, related_name="secrets"
    )
    encrypted_value = models.BinaryField(editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "task"],
                name="secret_per_task",
                condition=Q(task__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["name"], name="secret_global", condition=Q(task__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.task.name if self.task_id else 'global'})"


class TaskSchedule(models.Model):
    """A cron schedule of a task. People edit this row; django-q2's Schedule
    (``job``) does the firing and is kept in step with it (runs.schedules)."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="schedules")
    cron = models.CharField(
        max_length=100,
        validators=[validate_cron],
        help_text="Five fields (minute hour day month weekday), or six with seconds last.",
    )
    timezone = models.CharField(
        max_length=64, default=default_timezone, validators=[validate_timezone]
    )
    enabled = models.BooleanField(default=True)
    last_slot = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="The last slot that fired."
    )
    job = models.OneToOneField(
        "django_q.Schedule",
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["task", "id"]

    def __str__(self) -> str:
        return f"{self.task.name}: {self.cron} ({self.timezone})"

    @property
    def next_run_at(self):
        return self.job.next_run if self.job_id and self.job else None


class TaskLink(models.Model):
    """Start ``downstream`` when a run of ``upstream`` ends as ``on`` says."""

    class On(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"
        ANY = "any"

    upstream = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="downstream_links")
    downstream = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="upstream_links")
    on = models.CharField(max_length=8, choices=On.choices, default=On.SUCCESS)

    class Meta:
        ordering = ["upstream", "downstream"]
        constraints = [
            models.UniqueConstraint(fields=["upstream", "downstream"], name="one_link_per_pair")
        ]

    def __str__(self) -> str:
        return f"{self.upstream} → {self.downstream} on {self.on}"

    def clean(self) -> None:
        from runs.chains import check_no_cycle

        if self.upstream_id and self.downstream_id:
            check_no_cycle(self.upstream, self.downstream, ignore=self.pk)


def new_webhook_secret() -> str:
    import secrets

    return secrets.token_urlsafe(32)


class Webhook(models.Model):
    """A URL that gets a signed JSON POST when a run of its task ends as
    chosen, and on alerts."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=128,
        default=new_webhook_secret,
        help_text="Key of the X-Taskrun-Signature header (HMAC-SHA256 of the body).",
    )
    on_failure = models.BooleanField(default=True)
    on_success = models.BooleanField(default=False)
    on_recovery = models.BooleanField(default=True)
    on_alert = models.BooleanField(default=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["task", "id"]

    def __str__(self) -> str:
        return f"{self.task.name} → {self.url}"


class WebhookDelivery(models.Model):
    """One attempt to deliver one event to one webhook."""

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    event = models.CharField(max_length=16)
    attempt = models.PositiveSmallIntegerField(default=1)
    status_code = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} #{self.attempt} → {self.status_code or self.error}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Alert(models.Model):
    """An alert a run log cannot give: the task has not succeeded for too
    long, or a run takes far longer than usual. ``key`` makes each one once."""

    class Kind(models.TextChoices):
        NOT_SUCCEEDED = "not_succeeded"
        SLOW = "slow"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="alerts")
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    key = models.CharField(max_length=200, unique=True)
    message = models.CharField(max_length=500)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.message
