from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.utils.html import format_html

from runs import scripts, services, vault
from runs.auth import new_token
from runs.models import (
    Alert,
    ApiToken,
    Run,
    RunEvent,
    Secret,
    Task,
    TaskLink,
    TaskSchedule,
    Webhook,
    WebhookDelivery,
)

LOG_TAIL_BYTES = 64 * 1024


class TaskForm(forms.ModelForm):
    code = forms.CharField(
        required=False,
        strip=False,
        widget=forms.Textarea(
            attrs={"class": "code-editor", "rows": 28, "cols": 100, "spellcheck": "false"}
        ),
        help_text="Saved to TASKS_DIR/<name>.py. Tab indents; the code must compile.",
    )

    class Meta:
        model = Task
        fields = [
            "name",
            "description",
            "code",
            "args",
            "env",
            "timeout",
            "enabled",
            "overlap",
            "max_queued",
            "retry_count",
            "retry_on",
            "retry_delay",
            "retry_backoff",
            "retry_max_delay",
            "notify_emails",
            "email_on_failure",
            "email_on_success",
            "email_on_recovery",
            "alert_after",
            "slow_factor",
        ]

    class Media:
        css = {"all": ["runs/code-editor.css"]}
        js = ["runs/code-editor.js"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.fields["code"].initial = self.instance.read_code()

    def clean_code(self):
        code = self.cleaned_data["code"].replace("\r\n", "\n")
        scripts.check_syntax(code, f"{self.cleaned_data.get('name') or 'script'}.py")
        return code

    def clean_args(self):
        value = self.cleaned_data["args"]
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise forms.ValidationError("Arguments must be a JSON list of strings.")
        return value

    def clean_env(self):
        value = self.cleaned_data["env"]
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise forms.ValidationError("Environment must be a JSON object of strings.")
        return value


class RunInline(admin.TabularInline):
    model = Run
    fields = ["link", "status", "trigger", "queued_at", "exit_code", "reason"]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    show_change_link = False
    can_delete = False
    verbose_name_plural = "Recent runs"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        recent = list(qs.order_by("-id").values_list("id", flat=True)[:20])
        return qs.filter(id__in=recent)

    @admin.display(description="Run")
    def link(self, run):
        return format_html('<a href="../../../run/{}/change/">#{}</a>', run.pk, run.pk)


class TaskScheduleInline(admin.TabularInline):
    model = TaskSchedule
    fields = ["cron", "timezone", "enabled", "next_run"]
    readonly_fields = ["next_run"]
    extra = 0
    verbose_name_plural = "Schedules (cron: minute hour day month weekday [second])"

    @admin.display(description="Next run")
    def next_run(self, ts):
        return ts.next_run_at if ts.enabled and ts.task.enabled else "—"


class WebhookForm(forms.ModelForm):
    # A bare host name means https, as Django 6 will assume.
    url = forms.URLField(max_length=500, assume_scheme="https")

    class Meta:
        model = Webhook
        fields = ["url", "secret", "on_failure", "on_success", "on_recovery", "on_alert", "enabled"]


class WebhookInline(admin.TabularInline):
    model = Webhook
    form = WebhookForm
    fields = ["url", "secret", "on_failure", "on_success", "on_recovery", "on_alert", "enabled"]
    extra = 0
    verbose_name_plural = "Webhooks (signed JSON POST: X-Taskrun-Signature: sha256=<HMAC>)"


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["at", "webhook", "event", "attempt", "status_code", "error", "duration_ms"]
    list_filter = ["event", "status_code"]
    list_select_related = ["webhook__task"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["at", "task", "kind", "message"]
    list_filter = ["kind"]
    list_select_related = ["task"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class TaskLinkInline(admin.TabularInline):
    model = TaskLink
    fk_name = "upstream"
    fields = ["downstream", "on"]
    extra = 0
    verbose_name_plural = "Downstream tasks (started when a run of this one ends)"


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    form = TaskForm
    list_display = [
        "name",
        "enabled",
        "timeout",
        "last_status",
        "next_run",
        "missing",
        "updated_at",
    ]
    list_filter = ["enabled", "missing"]
    search_fields = ["name", "description"]
    actions = ["run_now"]
    inlines = [TaskScheduleInline, TaskLinkInline, WebhookInline, RunInline]

    def get_readonly_fields(self, request, obj=None):
        # The name is the script's file name: renaming would move the file
        # under running runs. Create a new task instead.
        readonly = ["name"] if obj is not None else []
        if not self._may_edit_code(request, obj):
            readonly.append("script_code")
        return readonly

    def get_fields(self, request, obj=None):
        fields = list(self.form.Meta.fields)
        if not self._may_edit_code(request, obj):
            # Those who may not edit code still read it.
            fields[fields.index("code")] = "script_code"
        return fields

    def _may_edit_code(self, request, obj) -> bool:
        return request.user.has_perm("runs.edit_code") and self.has_change_permission(request, obj)

    @admin.display(description="Code")
    def script_code(self, task):
        return format_html('<pre class="run-log">{}</pre>', task.read_code() if task.pk else "")

    @admin.display(description="Next run")
    def next_run(self, task):
        from runs.schedules import next_run_at

        return next_run_at(task) or "—"

    @admin.display(description="Last run")
    def last_status(self, task):
        run = task.runs.order_by("-id").only("status").first()
        return run.status if run else "—"

    def save_model(self, request, obj, form, change):
        code = form.cleaned_data.get("code") if "code" in form.cleaned_data else None
        with transaction.atomic():
            obj.missing = False if code is not None else obj.missing
            super().save_model(request, obj, form, change)
            if code is not None and self._may_edit_code(request, obj):
                scripts.save_code(obj, code, author=request.user)

    def delete_model(self, request, obj):
        if obj.active_run() is not None:
            messages.error(request, f"Task '{obj.name}' has a live run; cancel it first.")
            return
        name = obj.name
        super().delete_model(request, obj)
        scripts.delete_script(name)

    def has_run_permission(self, request):
        return request.user.has_perm("runs.run_task")

    @admin.action(description="Run now", permissions=["run"])
    def run_now(self, request, queryset):
        for task in queryset:
            try:
                run = services.start_run(task, trigger=Run.Trigger.ADMIN, user=request.user)
            except services.RunRefused as exc:
                messages.warning(request, str(exc))
            else:
                messages.success(request, f"Queued run #{run.pk} of '{task.name}'.")


class RunEventInline(admin.TabularInline):
    model = RunEvent
    fields = ["at", "from_status", "to_status", "actor", "reason"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    verbose_name_plural = "Status history"


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "task",
        "status",
        "trigger",
        "attempt",
        "queued_at",
        "duration_s",
        "exit_code",
    ]
    list_filter = ["status", "trigger", "task"]
    list_select_related = ["task"]
    search_fields = ["task__name", "reason"]
    date_hierarchy = None
    actions = ["cancel"]
    inlines = [RunEventInline]
    show_full_result_count = False
    fields = [
        "task",
        "status",
        "reason",
        "trigger",
        "triggered_by",
        "args",
        "env",
        "config",
        "attempt",
        "exit_code",
        "queued_at",
        "started_at",
        "finished_at",
        "heartbeat_at",
        "worker",
        "progress",
        "progress_message",
        "result",
        "log_size",
        "log_truncated",
        "scheduled_for",
        "not_before",
        "schedule",
        "retry_of",
        "upstream",
        "log_tail",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_cancel_permission(self, request):
        return request.user.has_perm("runs.run_task")

    @admin.display(description="Duration")
    def duration_s(self, run):
        d = run.duration
        return f"{d.total_seconds():.1f} s" if d is not None else "—"

    @admin.display(description="Log (tail)")
    def log_tail(self, run):
        start = max(0, run.log_size - LOG_TAIL_BYTES)
        text = run.read_log(start).decode("utf-8", "replace")
        note = f"… {start} earlier bytes not shown\n" if start else ""
        return format_html('<pre class="run-log">{}{}</pre>', note, text)

    @admin.action(description="Cancel", permissions=["cancel"])
    def cancel(self, request, queryset):
        for run in queryset:
            try:
                services.request_cancel(run, user=request.user)
            except services.RunNotActive as exc:
                messages.warning(request, str(exc))
            else:
                messages.success(request, f"Cancel requested for run #{run.pk}.")


class ApiTokenForm(forms.ModelForm):
    class Meta:
        model = ApiToken
        fields = ["name", "user"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Every staff user keeps their own tokens; superusers see everyone's and
    may make one for another user. A token acts with its user's permissions,
    so making one grants nothing new. The token is shown once, at creation;
    only its SHA-256 is stored. Revoke a token by deleting it."""

    form = ApiTokenForm
    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs if request.user.is_superuser else qs.filter(user=request.user)

    def get_fields(self, request, obj=None):
        if obj is not None:
            return ["name", "user", "prefix", "created_at", "last_used_at"]
        return ["name", "user"] if request.user.is_superuser else ["name"]

    def get_readonly_fields(self, request, obj=None):
        return ["user", "prefix", "created_at", "last_used_at"] if obj is not None else []

    def get_changeform_initial_data(self, request):
        return {"user": request.user.pk}

    def _own(self, request, obj=None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        return obj is None or user.is_superuser or obj.user_id == user.pk

    def has_module_permission(self, request):
        return self._own(request)

    def has_view_permission(self, request, obj=None):
        return self._own(request, obj)

    def has_add_permission(self, request):
        return self._own(request)

    def has_change_permission(self, request, obj=None):
        return self._own(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._own(request, obj)

    def save_model(self, request, obj, form, change):
        token = None
        if not change:
            token, obj.prefix, obj.token_hash = new_token()
            if not obj.user_id:
                obj.user = request.user
        super().save_model(request, obj, form, change)
        if token is not None:
            messages.warning(
                request,
                format_html(
                    "The token for “{}” is <code>{}</code>. Copy it now: it will not be "
                    "shown again. Use it as <code>Authorization: Bearer &lt;token&gt;</code>.",
                    obj.name,
                    token,
                ),
            )


class SecretForm(forms.ModelForm):
    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: it is never shown again. Leave empty to keep the current value.",
    )

    class Meta:
        model = Secret
        fields = ["name", "task", "value"]

    def clean_name(self):
        name = self.cleaned_data["name"]
        vault.validate_secret_name(name)
        return name

    def clean(self):
        cleaned = super().clean()
        if not self.instance.pk and not cleaned.get("value"):
            self.add_error("value", "A new secret needs a value.")
        return cleaned


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    form = SecretForm
    list_display = ["name", "scope", "value_state", "updated_by", "updated_at"]
    list_filter = [("task", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name"]
    readonly_fields = ["value_state", "updated_by", "updated_at"]

    def get_fields(self, request, obj=None):
        return ["name", "task", "value", "value_state", "updated_by", "updated_at"]

    @admin.display(description="Scope")
    def scope(self, secret):
        return secret.task.name if secret.task_id else "global"

    @admin.display(description="Value")
    def value_state(self, secret):
        return "set" if secret.pk else "—"

    def save_model(self, request, obj, form, change):
        value = form.cleaned_data.get("value")
        if value:
            obj.encrypted_value = vault.encrypt(value)
            obj.updated_by = request.user
        super().save_model(request, obj, form, change)
