"""Secrets: stored encrypted (Fernet), given to scripts as environment
variables, and masked as **** wherever taskrun shows output.

The key is SECRETS_KEY, or one derived from SECRET_KEY. SECRETS_OLD_KEYS
(comma-separated) still decrypt during a rotation; `rotate_secrets_key`
re-encrypts every secret under a new key."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction

from runs import rows
from runs.models import Secret, Task

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

# cryptography is imported where a secret is encrypted or read, not with this
# module: about 6 MB in every web and worker process, most of which never
# touch a secret.

SECRET_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
MASK = "****"
# Shorter values are not masked: masking "1" would blank every digit 1.
MIN_MASKED_LENGTH = 3


def validate_secret_name(name: str) -> None:
    if not isinstance(name, str) or not SECRET_NAME_RE.fullmatch(name):
        raise ValidationError(
            "A secret name is 1–64 characters of A-Z, 0-9 and _, starting with a letter or _.",
            code="invalid_secret_name",
        )


def fernet_key(material: str) -> bytes:
    """A Fernet key from any string: a Fernet key is used as it is, anything
    else is stretched with SHA-256."""
    try:
        if len(base64.urlsafe_b64decode(material.encode())) == 32:
            return material.encode()
    except (ValueError, TypeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(material.encode()).digest())


def _fernet() -> MultiFernet:
    from cryptography.fernet import Fernet, MultiFernet

    primary = settings.SECRETS_KEY or ("secrets:" + (settings.SECRET_KEY or ""))
    if primary == "secrets:":
        raise ImproperlyConfigured(
            "Neither SECRETS_KEY nor SECRET_KEY is set: secrets cannot be read."
        )
    keys = [primary, *settings.SECRETS_OLD_KEYS]
    return MultiFernet([Fernet(fernet_key(k)) for k in keys])


def encrypt(value: str) -> bytes:
    return _fernet().encrypt(value.encode("utf-8"))


def decrypt(token: bytes) -> str:
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(bytes(token)).decode("utf-8")
    except InvalidToken:
        raise ImproperlyConfigured(
            "A stored secret cannot be decrypted with SECRETS_KEY (or SECRETS_OLD_KEYS)."
        ) from None


def set_secret(name: str, value: str, *, task: Task | None = None, user=None) -> Secret:
    validate_secret_name(name)
    if not isinstance(value, str) or value == "":
        raise ValidationError("The value must be a non-empty string.", code="invalid_value")
    secret, _ = Secret.objects.update_or_create(
        name=name,
        task=task,
        defaults={
            "encrypted_value": encrypt(value),
            "updated_by": user if user is not None and user.is_authenticated else None,
        },
    )
    return secret


def delete_secret(name: str, *, task: Task | None = None) -> bool:
    deleted, _ = Secret.objects.filter(name=name, task=task).delete()
    return bool(deleted)


def secrets_for(task: Task) -> dict[str, str]:
    """Name → value for a run of ``task``: global secrets, then the task's own,
    which win over a global one of the same name. A task read by a run's
    claim brings them along (``secrets_read``, used once)."""
    # Read for every run, hence the plain statement (runs.rows).
    found = task.__dict__.pop("secrets_read", None)
    if found is None:
        found = rows.secrets_of(task.pk)
    found.sort(key=lambda row: row[0])  # the task's own last: they win
    return {name: decrypt(token) for _, name, token in found}


def rotate(new_key: str) -> int:
    """Re-encrypt every secret under ``new_key``; all or nothing."""
    from cryptography.fernet import Fernet

    new = Fernet(fernet_key(new_key))
    count = 0
    with transaction.atomic():
        for secret in Secret.objects.select_for_update():
            plain = decrypt(secret.encrypted_value)
            Secret.objects.filter(pk=secret.pk).update(encrypted_value=new.encrypt(plain.encode()))
            count += 1
    return count


def masker_for(task: Task) -> Masker:
    """The masker of a task's secrets, for what taskrun shows of its runs."""
    try:
        return Masker(secrets_for(task).values())
    except ImproperlyConfigured:
        # Unreadable secrets reached no script either: nothing to mask.
        return Masker([])


class Masker:
    """Replaces secret values with **** in text. For a stream, ``feed`` holds
    back a tail that could be the start of a secret split across two reads,
    and ``flush`` releases it at the end."""

    def __init__(self, values: Iterable[str]):
        self.values = sorted(
            {v for v in values if isinstance(v, str) and len(v) >= MIN_MASKED_LENGTH},
            key=len,
            reverse=True,
        )
        self.pattern = (
            re.compile("|".join(re.escape(v) for v in self.values)) if self.values else None
        )
        self.held = ""

    def __bool__(self) -> bool:
        return self.pattern is not None

    def mask(self, text: str) -> str:
        if self.pattern is None or not text:
            return text
        return self.pattern.sub(MASK, text)

    def mask_json(self, value: Any) -> Any:
        if self.pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self.mask_json(v) for v in value]
        if isinstance(value, dict):
            return {self.mask(str(k)): self.mask_json(v) for k, v in value.items()}
        return value

    def feed(self, text: str) -> str:
        if self.pattern is None:
            return text
        text = self.mask(self.held + text)
        keep = self._partial_tail(text)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep] if keep else text

    def flush(self) -> str:
        rest, self.held = self.held, ""
        return self.mask(rest)

    def _partial_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some secret."""
        longest = 0
        for value in self.values:
            for k in range(min(len(value) - 1, len(text)), longest, -1):
                if text.endswith(value[:k]):
                    longest = k
                    break
        return longest
