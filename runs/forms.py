"""Forms of the pages: starting a run with arguments, environment and config,
and filtering the run list."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from runs import schedules
from runs.models import Run, Task
from runs.parameters import Param, ParamError, ParameterSpec, params_to_argv

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ARGS = 200
MAX_ENV = 200


def _param_field(param: Param) -> forms.Field:
    """A form field for one argparse parameter. Values stay text here:
    params_to_argv converts and checks them, and its errors name the field."""
    common: dict[str, Any] = {"label": param.option or param.name, "required": False}
    if param.help:
        common["help_text"] = param.help
    if param.kind == "flag":
        if param.action == "boolean_optional":
            return forms.ChoiceField(
                choices=[("", "default"), ("true", "on"), ("false", "off")], **common
            )
        # The box shows the value the script will see; the default is its start.
        return forms.BooleanField(initial=bool(param.default), **common)
    if param.choices and not param.multiple:
        choices = [(str(c), str(c)) for c in param.choices]
        return forms.ChoiceField(choices=[("", "—"), *choices], **common)
    if param.multiple:
        placeholder = "values separated by spaces; quotes group words"
    elif param.default not in (None, "") and not param.default_computed:
        placeholder = f"default: {param.default}"
    else:
        placeholder = ""
    attrs = {"placeholder": placeholder, "spellcheck": "false"}
    if param.type in ("int", "float") or param.action == "count":
        attrs["inputmode"] = "decimal"
    return forms.CharField(widget=forms.TextInput(attrs=attrs), max_length=5000, **common)


class RunTaskForm(forms.Form):
    """Arguments, environment variables and a JSON config for one run. What
    the user typed is checked whole before anything is queued.

    When the script's argparse can be read (``spec``), the form also has a
    field per parameter; the free arguments field stays as the other way.
    Left all empty, the run takes the task's default arguments."""

    ARGS_LINES = "lines"
    ARGS_SHELL = "shell"

    args = forms.CharField(
        label="Arguments",
        required=False,
        strip=False,
        max_length=20000,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono", "spellcheck": "false"}),
    )
    args_style = forms.ChoiceField(
        label="Split arguments",
        choices=[
            (ARGS_LINES, "one per line"),
            (ARGS_SHELL, "like a shell (quotes group words)"),
        ],
        initial=ARGS_LINES,
        widget=forms.RadioSelect,
    )
    env = forms.CharField(
        label="Environment",
        required=False,
        max_length=20000,
        widget=forms.Textarea(
            attrs={"rows": 3, "class": "mono", "spellcheck": "false", "placeholder": "KEY=value"}
        ),
        help_text="KEY=VALUE, one per line; added to the task's own variables.",
    )
    config = forms.CharField(
        label="JSON config",
        required=False,
        max_length=100000,
        widget=forms.Textarea(
            attrs={"rows": 3, "class": "mono", "spellcheck": "false", "placeholder": "{}"}
        ),
        help_text="A JSON object; the script finds its path in TASKRUN_CONFIG.",
    )
    START_NOW = "now"
    START_DELAY = "delay"
    START_AT = "at"

    start = forms.ChoiceField(
        label="Start",
        choices=[(START_NOW, "now"), (START_DELAY, "after a delay of"), (START_AT, "at")],
        initial=START_NOW,
        required=False,
        widget=forms.RadioSelect,
    )
    # Text, not number or date fields: schedules.parse_start_time checks
    # them, as it does for the API and run_task, so all three say the same.
    delay = forms.CharField(
        label="Delay",
        required=False,
        max_length=40,
        widget=forms.TextInput(
            attrs={"inputmode": "decimal", "size": 8, "aria-label": "delay in seconds"}
        ),
    )
    at = forms.CharField(
        label="Time",
        required=False,
        max_length=40,
        widget=forms.TextInput(attrs={"type": "datetime-local", "aria-label": "start time"}),
    )

    def __init__(
        self, *args: Any, spec: ParameterSpec | None = None, task: Task | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.spec = spec if spec is not None and spec.readable and spec.parameters else None
        self.task_args = list(task.args or []) if task is not None else []
        if self.spec is not None:
            for param in self.spec.parameters:
                field = _param_field(param)
                field.param_required = param.required  # type: ignore[attr-defined]
                self.fields[f"p_{param.name}"] = field

    @classmethod
    def for_task(cls, task: Task, spec: ParameterSpec | None = None) -> RunTaskForm:
        """An unbound form. Without a parameter form, the free arguments field
        shows the task's default arguments."""
        form = cls(spec=spec, task=task)
        if form.spec is None:
            args = [str(a) for a in task.args or []]
            if any("\n" in a or a != a.strip() or a == "" for a in args):
                form.initial = {"args": shlex.join(args), "args_style": cls.ARGS_SHELL}
            else:
                form.initial = {"args": "\n".join(args), "args_style": cls.ARGS_LINES}
        return form

    @property
    def time_zone(self) -> str:
        """The zone an "at" time without an offset is read in."""
        return settings.TIME_ZONE

    def param_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.fields if name.startswith("p_")]

    def clean_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for number, line in enumerate(self.cleaned_data["env"].splitlines(), start=1):
            line = line.rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, value = line.partition("=")
            name = name.strip()
            if not sep:
                raise forms.ValidationError(f"Line {number}: expected KEY=VALUE.")
            if not ENV_NAME_RE.fullmatch(name):
                raise forms.ValidationError(
                    f"Line {number}: '{name}' is not a variable name "
                    "(letters, digits and _, not starting with a digit)."
                )
            if name.upper().startswith("TASKRUN_"):
                raise forms.ValidationError(
                    f"Line {number}: TASKRUN_ variables are set by taskrun."
                )
            if name in env:
                raise forms.ValidationError(f"Line {number}: {name} is given twice.")
            if "\x00" in value:
                raise forms.ValidationError(f"Line {number}: the value holds a NUL character.")
            env[name] = value
        if len(env) > MAX_ENV:
            raise forms.ValidationError(f"At most {MAX_ENV} variables.")
        return env

    def clean_config(self) -> dict[str, Any] | None:
        text = self.cleaned_data["config"].strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError('The config must be a JSON object, like {"key": "value"}.')
        return value

    def _given_params(self, data: dict[str, Any]) -> dict[str, Any]:
        """The parameters the user set: filled fields, and flags moved off
        their default."""
        assert self.spec is not None
        params: dict[str, Any] = {}
        for param in self.spec.parameters:
            value = data.get(f"p_{param.name}")
            if param.kind == "flag" and param.action != "boolean_optional":
                if bool(value) != bool(param.default):
                    params[param.name] = bool(value)
            elif value not in (None, ""):
                params[param.name] = value
        return params

    def _clean_start(self, data: dict[str, Any]) -> None:
        """``not_before`` from the start choice: None to start now."""
        data["not_before"] = None
        start = data.get("start") or self.START_NOW
        if start == self.START_NOW:
            return
        field = start  # the delay or at field, which holds the value
        value = (data.get(field) or "").strip()
        if not value:
            self.add_error(
                field, "Give the delay in seconds." if field == "delay" else "Give the time."
            )
            return
        try:
            data["not_before"] = schedules.parse_start_time(**{field: value})
        except ValidationError as exc:
            self.add_error(field, exc.messages)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        self._clean_start(data)
        text = data.get("args")
        style = data.get("args_style")
        if text is None or style is None:
            return data
        if self.spec is not None and not text.strip():
            params = self._given_params(data)
            if not params and self.task_args:
                data["arg_list"] = None  # the task's defaults
                return data
            try:
                data["arg_list"] = params_to_argv(self.spec, params)
            except ParamError as exc:
                field = f"p_{exc.field}"
                if field in self.fields:
                    self.add_error(field, exc.message)
                else:
                    self.add_error(None, str(exc))
            return data
        if self.spec is not None and self._given_params(data):
            self.add_error("args", "Fill in either the parameters or the free arguments, not both.")
            return data
        if style == self.ARGS_SHELL:
            try:
                args = shlex.split(text)
            except ValueError as exc:
                self.add_error("args", f"Cannot split the arguments: {exc}.")
                return data
        else:
            args = [line.strip() for line in text.splitlines() if line.strip()]
        if any("\x00" in a for a in args):
            self.add_error("args", "An argument holds a NUL character.")
        elif len(args) > MAX_ARGS:
            self.add_error("args", f"At most {MAX_ARGS} arguments.")
        else:
            data["arg_list"] = args
        return data

    def run_kwargs(self) -> dict[str, Any]:
        """The arguments of services.start_run, once the form is valid."""
        return {
            "args": self.cleaned_data["arg_list"],
            "env": self.cleaned_data["env"],
            "config": self.cleaned_data["config"],
            "not_before": self.cleaned_data["not_before"],
        }


_DATETIME_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]


class RunFilterForm(forms.Form):
    task = forms.ModelChoiceField(
        queryset=Task.objects.order_by("name"),
        to_field_name="name",
        required=False,
        empty_label="all tasks",
    )
    status = forms.ChoiceField(
        label="State", choices=[("", "all states"), *Run.Status.choices], required=False
    )
    trigger = forms.ChoiceField(
        choices=[("", "all triggers"), *Run.Trigger.choices], required=False
    )
    since = forms.DateTimeField(
        label="Queued from",
        required=False,
        input_formats=_DATETIME_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    until = forms.DateTimeField(
        label="to",
        required=False,
        input_formats=_DATETIME_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def filter(self, runs: Any) -> Any:
        """Narrow a Run queryset by whichever fields were valid."""
        data = getattr(self, "cleaned_data", {})
        if data.get("task"):
            runs = runs.filter(task=data["task"])
        if data.get("status"):
            runs = runs.filter(status=data["status"])
        if data.get("trigger"):
            runs = runs.filter(trigger=data["trigger"])
        if data.get("since"):
            runs = runs.filter(queued_at__gte=data["since"])
        if data.get("until"):
            runs = runs.filter(queued_at__lt=data["until"])
        return runs
