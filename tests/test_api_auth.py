"""Who may call the API: sessions (with CSRF for writes), bearer tokens made
in the admin, and the JSON refusals when neither is there."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.utils import timezone

from runs.models import ApiToken, Run
from tests.api_client import make_token, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def hello(make_task):
    return make_task("hello", "print('hello')\n")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


JSON = "application/json"


# --- bearer tokens -----------------------------------------------------------


def test_a_token_acts_as_its_user_and_records_its_use(hello):
    user = make_user("Operators")
    token = make_token(user)
    response = Client().post("/api/tasks/hello/execute", content_type=JSON, headers=bearer(token))
    assert response.status_code == 202
    assert Run.objects.get().triggered_by == user
    used = ApiToken.objects.get().last_used_at
    assert used is not None and timezone.now() - used < timedelta(minutes=1)


def test_last_use_is_written_at_most_once_a_minute(hello):
    token = make_token(make_user("Viewers"))
    recent = timezone.now() - timedelta(seconds=10)
    ApiToken.objects.update(last_used_at=recent)
    assert Client().get("/api/tasks", headers=bearer(token)).status_code == 200
    assert ApiToken.objects.get().last_used_at == recent
    old = timezone.now() - timedelta(minutes=5)
    ApiToken.objects.update(last_used_at=old)
    Client().get("/api/tasks", headers=bearer(token))
    assert ApiToken.objects.get().last_used_at > old


def test_a_token_needs_no_csrf_token_for_writes(hello):
    client = Client(enforce_csrf_checks=True)
    token = make_token(make_user("Operators"))
    assert (
        client.post(
            "/api/tasks/hello/execute", content_type=JSON, headers=bearer(token)
        ).status_code
        == 202
    )


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-token", "Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Token abc"],
)
def test_a_bad_authorization_header_is_refused_even_with_a_session(hello, header):
    client = Client()
    client.force_login(make_user("Editors"))
    response = client.get("/api/tasks", headers={"Authorization": header})
    assert response.status_code == 401
    assert "error" in response.json()


def test_a_token_of_an_inactive_or_deleted_user_is_refused(hello):
    user = make_user("Editors")
    token = make_token(user)
    user.is_active = False
    user.save()
    assert Client().get("/api/tasks", headers=bearer(token)).status_code == 401
    user.is_active = True
    user.save()
    assert Client().get("/api/tasks", headers=bearer(token)).status_code == 200
    ApiToken.objects.all().delete()
    assert Client().get("/api/tasks", headers=bearer(token)).status_code == 401


def test_tokens_are_stored_as_their_hash_only():
    token = make_token(make_user())
    stored = ApiToken.objects.get()
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(stored.prefix) and len(stored.prefix) < len(token) // 4
    assert token not in {stored.name, stored.prefix, stored.token_hash}


# --- sessions ----------------------------------------------------------------


def test_without_session_or_token_every_call_is_401_json_not_a_redirect(hello):
    for method, path in [
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("GET", "/api/tasks/nope"),
        ("POST", "/api/tasks/hello/execute"),
        ("GET", "/api/logs/app.log"),
        ("GET", "/api/openapi.json"),
    ]:
        response = Client().generic(method, path)
        assert response.status_code == 401, path
        assert response.json()["error"].startswith("Authentication required")


def test_a_session_reads_without_csrf(hello):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("Viewers"))
    assert client.get("/api/tasks/hello").status_code == 200


def test_a_session_write_needs_the_csrf_token(hello):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("Operators"))
    response = client.post("/api/tasks/hello/execute", content_type=JSON)
    assert response.status_code == 403
    assert response.json()["error"].startswith("CSRF check failed")
    assert not Run.objects.exists()

    secret = _get_new_csrf_string()
    client.cookies["csrftoken"] = secret
    response = client.post(
        "/api/tasks/hello/execute", content_type=JSON, headers={"X-CSRFToken": secret}
    )
    assert response.status_code == 202
    assert Run.objects.count() == 1

    # A form body passes the CSRF check and is then refused as not JSON.
    response = client.post(
        "/api/tasks/hello/execute", {"args": "x"}, headers={"X-CSRFToken": secret}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "The body is not valid JSON."


# --- tokens in the admin -----------------------------------------------------


def add_token(client: Client, **form: str) -> str:
    response = client.post("/admin/runs/apitoken/add/", form, follow=True)
    assert response.status_code == 200
    match = re.search(r"<code>([A-Za-z0-9_-]{40,})</code>", response.content.decode())
    assert match, response.content.decode()
    return match.group(1)


def test_a_superuser_makes_a_token_in_the_admin_and_sees_it_once(hello):
    admin = make_user(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(admin)
    form = client.get("/admin/runs/apitoken/add/")
    assert form.status_code == 200
    assert form.context["adminform"].form.initial["user"] == admin.pk
    token = add_token(client, name="ci", user=str(admin.pk))

    stored = ApiToken.objects.get()
    assert (stored.name, stored.user) == ("ci", admin)
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert Client().get("/api/tasks", headers=bearer(token)).status_code == 200
    # Not shown again: neither in the list nor on its page.
    for page in ("/admin/runs/apitoken/", f"/admin/runs/apitoken/{stored.pk}/change/"):
        html = client.get(page).content.decode()
        assert stored.prefix in html and token not in html


def test_a_staff_user_makes_tokens_for_themself_only():
    other = ApiToken.objects.create(
        user=make_user(), name="theirs", prefix="abcd", token_hash="0" * 64
    )
    editor = make_user("Editors", is_staff=True)
    client = Client()
    client.force_login(editor)
    form = client.get("/admin/runs/apitoken/add/")
    assert "user" not in form.context["adminform"].form.fields
    token = add_token(client, name="mine")
    mine = ApiToken.objects.get(name="mine")
    assert mine.user == editor and mine.token_hash == hashlib.sha256(token.encode()).hexdigest()
    listing = client.get("/admin/runs/apitoken/").content.decode()
    assert "mine" in listing and "theirs" not in listing
    assert client.get(f"/admin/runs/apitoken/{other.pk}/change/").status_code == 302
    client.post(f"/admin/runs/apitoken/{other.pk}/delete/", {"post": "yes"})
    assert ApiToken.objects.filter(pk=other.pk).exists()
