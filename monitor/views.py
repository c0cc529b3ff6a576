"""The monitor page, its live fragments, the system API, /health and /metrics."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_safe

from monitor import charts, clusters, metrics, system
from monitor.health import health_report
from runs import auth
from runs.models import Run

# Seeing the host, its processes and the workers is part of viewing runs.
VIEW_PERMISSION = "runs.view_run"

View = Callable[..., HttpResponse]


def api_view(view: View) -> View:
    """GET-only JSON API call: a session or a bearer token (401 JSON without),
    and the view permission (403 JSON without)."""
    guarded = auth.permission_required(VIEW_PERMISSION)(view)

    # authenticate() does the CSRF check for sessions; the middleware's own
    # would refuse a token caller's POST with an HTML page instead of a 405.
    @csrf_exempt
    @never_cache
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refusal = auth.authenticate(request)
        if refusal is not None:
            return refusal
        if request.method not in ("GET", "HEAD"):
            response = auth.error(f"Method {request.method} not allowed.", 405)
            response["Allow"] = "GET"
            return response
        return guarded(request, *args, **kwargs)

    return wrapper


# -- /health, open to load balancers ---------------------------------------
@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    healthy, body = health_report()
    return JsonResponse(body, status=200 if healthy else 503)


@api_view
def system_health(request: HttpRequest) -> JsonResponse:
    healthy, body = health_report()
    return JsonResponse(body, status=200 if healthy else 503)


# -- the system API ----------------------------------------------------------
@api_view
def system_info(request: HttpRequest) -> JsonResponse:
    return JsonResponse(system.host_info())


@api_view
def system_process(request: HttpRequest) -> JsonResponse:
    return JsonResponse(system.this_process())


@api_view
def system_processes(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"processes": system.python_processes()})


# -- /metrics ------------------------------------------------------------------
def _metrics_token_ok(request: HttpRequest) -> bool:
    expected = settings.METRICS_TOKEN
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return bool(
        expected
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    )


@never_cache
@require_safe
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    if not _metrics_token_ok(request):
        if not request.user.is_authenticated:
            return auth.unauthorized(
                "Log in as staff, or send 'Authorization: Bearer <METRICS_TOKEN>'."
            )
        if not request.user.is_staff:
            return auth.error("Permission denied: staff only.", 403)
    body, content_type = metrics.render(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)


# -- the monitor page ----------------------------------------------------------
def _snapshot(request: HttpRequest) -> dict[str, Any]:
    return {
        "host": system.host_info(),
        "process": system.this_process(),
        "processes": system.python_processes(),
        "clusters": clusters.clusters(),
        "queue": clusters.queue_depth(),
        "history": charts.host_charts(),
        "interval": settings.PROCESS_CHECK_INTERVAL,
    }


SECTIONS = ("host", "clusters", "processes", "history")


@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
@require_GET
def monitor_page(request: HttpRequest) -> HttpResponse:
    return render(request, "monitor/monitor.html", _snapshot(request))


@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
@never_cache
@require_GET
def monitor_live(request: HttpRequest) -> JsonResponse:
    """The page's sections, rendered again, for its script to swap in."""
    context = _snapshot(request)
    html = {
        name: render_to_string(f"monitor/_{name}.html", context, request=request)
        for name in SECTIONS
    }
    return JsonResponse({"html": html})


@login_required
@permission_required(VIEW_PERMISSION, raise_exception=True)
@never_cache
@require_GET
def run_usage(request: HttpRequest, run_id: int) -> JsonResponse:
    """A run's resources: the figures and the chart, for the run page."""
    run = get_object_or_404(Run.objects.select_related("task"), pk=run_id)
    return JsonResponse(
        {
            "active": run.is_active,
            "peak_rss": run.peak_rss,
            "cpu_seconds": run.cpu_seconds,
            "usage": run.usage,
            "html": render_to_string("monitor/_run_usage_body.html", {"run": run}, request=request),
        }
    )
