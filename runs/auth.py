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
