"""Who is calling the JSON API, and may they: a logged-in session (with the
CSRF token for writes, as any form) or an API token in
``Authorization: Bearer <token>``. Failures are JSON, never a redirect to the
login page: the callers are programs."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from runs.models import ApiToken

View = Callable[..., HttpResponse]

# last_used_at is a hint for people cleaning up old tokens, not an audit
# trail: writing it at most once a minute keeps reads from taking the SQLite
# write lock on every call.
LAST_USED_RESOLUTION = timedelta(minutes=1)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE"}


def new_token() -> tuple[str, str, str]:
    """A fresh token: (token, prefix to recognise it by, hash to store)."""
    token = secrets.token_urlsafe(32)
    return token, token[:8], hash_token(token)


def hash_token(token: str) -> str:
    # A token has 256 random bits: a plain SHA-256 is enough, no slow hash
    # (there is nothing to brute-force), and it can be looked up by index.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# The largest request body the API reads; larger ones are refused with 400.
MAX_BODY_BYTES = 1 << 20


class BadRequest(Exception):
    """Input the API refuses with 400 and ``{"error": message}``."""


class NotFound(Exception):
    """An unknown name or id: 404."""


def error(message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


def unauthorized(message: str) -> JsonResponse:
    response = error(message, 401)
    response["WWW-Authenticate"] = 'Bearer realm="taskrun"'
    return response


class _CsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF check, returning the reason instead of a page."""

    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def _csrf_failure(request: HttpRequest) -> str | None:
    check = _CsrfCheck(lambda request: HttpResponse())
    check.process_request(request)
    reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
    return reason if isinstance(reason, str) else None


def _token_user(request: HttpRequest, header: str) -> Any | None:
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    token = (
        ApiToken.objects.select_related("user").filter(token_hash=hash_token(credentials)).first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    request.api_token = token  # type: ignore[attr-defined]
    return token.user


def authenticate(request: HttpRequest) -> JsonResponse | None:
    """Set ``request.user`` from the bearer token, or check the session (and
    its CSRF token for writes). Returns the refusal, or None to go on."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header:
        # A token wins over a session cookie sent along; a bad token is
        # refused even then, so a script never runs as someone else.
        user = _token_user(request, header)
        if user is None:
            return unauthorized("Invalid API token: send 'Authorization: Bearer <token>'.")
        request.user = user
        # A cross-site page cannot set this header, so no CSRF check.
        return None
    if not request.user.is_authenticated:
        return unauthorized(
            "Authentication required: log in, or send 'Authorization: Bearer <token>'."
        )
    if request.method not in SAFE_METHODS:
        reason = _csrf_failure(request)
        if reason is not None:
            return error(f"CSRF check failed: {reason}", 403)
    return None


def permission_required(*perms: str) -> Callable[[View], View]:
    """403 JSON unless the (already authenticated) user has every permission."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perms(perms):
                return error(f"Permission denied: needs {', '.join(perms)}.", 403)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def staff_required(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not (request.user.is_staff or request.user.is_superuser):
            return error("Permission denied: staff only.", 403)
        return view(request, *args, **kwargs)

    return wrapper


def content_length(request: HttpRequest) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def endpoint(**handlers: View) -> View:
    """One API URL with one handler per HTTP method, answering in JSON:
    authentication first (401 before anything else), then the method (405),
    then the handler, whose BadRequest and NotFound become 400 and 404.

    ``path("tasks", endpoint(GET=list_tasks, POST=create_task))``"""

    # Sessions still get their CSRF check, in authenticate(); the middleware's
    # own would answer with an HTML page and cannot tell a token from a cookie.
    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        if content_length(request) <= MAX_BODY_BYTES:
            # Read the body before the CSRF check parses a form out of it and
            # leaves nothing for the handler to read.
            request.body  # noqa: B018
        refusal = authenticate(request)
        if refusal is not None:
            return refusal
        handler = handlers.get(request.method or "")
        if handler is None:
            response = error(f"Method {request.method} not allowed.", 405)
            response["Allow"] = ", ".join(handlers)
            return response
        try:
            return handler(request, **kwargs)
        except BadRequest as exc:
            return error(str(exc), 400)
        except NotFound as exc:
            return error(str(exc), 404)

    view.handlers = handlers  # type: ignore[attr-defined]  (for the OpenAPI test)
    return view
