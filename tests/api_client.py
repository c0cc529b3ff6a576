"""For the API tests: users in the groups of CONTRACT, and a client that
speaks JSON to the API with a bearer token, as a program would."""

from __future__ import annotations

import itertools
import json
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.http import HttpResponse
from django.test import Client

from runs.auth import new_token
from runs.models import ApiToken

_numbers = itertools.count()


def make_user(group: str | None = None, *perms: str, **fields: Any) -> User:
    """A user in ``group`` (Viewers, Operators, Editors; None for none), with
    extra ``perms`` ("runs.change_task") if given."""
    user = User.objects.create_user(f"user{next(_numbers)}", password="pw", **fields)
    if group:
        user.groups.add(Group.objects.get(name=group))
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def make_token(user: User, name: str = "test") -> str:
    token, prefix, digest = new_token()
    ApiToken.objects.create(user=user, name=name, prefix=prefix, token_hash=digest)
    return token


class Api:
    """JSON calls as ``user`` through an API token; anonymous when None."""

    def __init__(self, user: User | None = None):
        self.client = Client()
        self.user = user
        self.headers = {"Authorization": f"Bearer {make_token(user)}"} if user else {}

    def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | str | None = None
    ) -> HttpResponse:
        data = raw if raw is not None else ("" if body is None else json.dumps(body))
        return self.client.generic(
            method, path, data, content_type="application/json", headers=self.headers
        )

    def get(self, path: str, **query: Any) -> HttpResponse:
        return self.client.get(path, query, headers=self.headers)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> HttpResponse:
        return self.call("POST", path, body, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> HttpResponse:
        return self.call("PUT", path, body, **kwargs)

    def delete(self, path: str) -> HttpResponse:
        return self.call("DELETE", path)
