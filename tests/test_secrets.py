"""Secrets reach the script and nowhere else: masked in the log (also when
split across two reads), the result and progress, encrypted at rest, never
shown again by the admin, and still readable after a key rotation."""

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection

from runs import services, vault
from runs.models import Secret

pytestmark = pytest.mark.django_db(transaction=True)

VALUE = "pa55-W0rd-xyz"


def test_the_script_gets_the_secret_and_the_log_shows_stars(make_task, execute):
    task = make_task(
        "leaky",
        """
        import json, os
        print("token is", os.environ["API_TOKEN"])
        print("::progress::50 using " + os.environ["API_TOKEN"])
        print("::result::" + json.dumps({"token": os.environ["API_TOKEN"], "n": 1}))
        """,
    )
    vault.set_secret("API_TOKEN", VALUE)
    run = execute(services.start_run(task))
    log = run.read_log().decode()
    assert "token is ****" in log
    assert VALUE not in log
    assert run.progress_message == "using ****"
    assert run.result == {"token": "****", "n": 1}


def test_a_secret_printed_in_two_halves_across_a_flush_is_masked(make_task, execute, settings):
    half = len(VALUE) // 2
    task = make_task(
        "split",
        f"""
        import os, sys, time
        value = os.environ["SPLIT_SECRET"]
        sys.stdout.write("start " + value[:{half}])
        sys.stdout.flush()
        time.sleep({settings.LOG_FLUSH_SECONDS * 4})
        sys.stdout.write(value[{half}:] + " end\\n")
        """,
    )
    vault.set_secret("SPLIT_SECRET", VALUE)
    run = execute(services.start_run(task))
    assert run.read_log().decode() == "start **** end\n"
    assert run.chunks.count() >= 1


def test_a_task_secret_wins_over_a_global_one(make_task, execute):
    task = make_task("scoped", "import os; print(os.environ['DB_PASS'] == 'task-value-1')")
    other = make_task("other", "import os; print(os.environ['DB_PASS'] == 'global-value')")
    vault.set_secret("DB_PASS", "global-value")
    vault.set_secret("DB_PASS", "task-value-1", task=task)
    assert execute(services.start_run(task)).read_log() == b"True\n"
    assert execute(services.start_run(other)).read_log() == b"True\n"


def test_the_database_holds_no_clear_value(make_task):
    vault.set_secret("AT_REST", VALUE)
    with connection.cursor() as cursor:
        cursor.execute("SELECT encrypted_value FROM runs_secret")
        (stored,) = cursor.fetchone()
    assert VALUE.encode() not in bytes(stored)
    assert vault.decrypt(stored) == VALUE


def test_rotation_re_encrypts_and_keeps_every_secret_readable(make_task, settings):
    task = make_task("rot", "print(1)")
    vault.set_secret("ONE", "value-one")
    vault.set_secret("TWO", "value-two", task=task)
    before = set(Secret.objects.values_list("encrypted_value", flat=True))
    call_command("rotate_secrets_key", new_key="a-brand-new-secrets-key")
    settings.SECRETS_KEY = "a-brand-new-secrets-key"
    assert vault.secrets_for(task) == {"ONE": "value-one", "TWO": "value-two"}
    after = set(bytes(v) for v in Secret.objects.values_list("encrypted_value", flat=True))
    assert not after & {bytes(v) for v in before}


def test_a_wrong_key_fails_the_run_with_a_readable_reason(make_task, execute, settings):
    task = make_task("nokey", "print(1)")
    vault.set_secret("LOCKED", VALUE)
    settings.SECRETS_KEY = "some-other-key"
    run = execute(services.start_run(task))
    assert run.status == "failed"
    assert "could not read the secrets" in run.reason


@pytest.mark.parametrize("name", ["lower", "1LEADING", "WITH-DASH", "X" * 65, ""])
def test_bad_secret_names_are_refused(name):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        vault.set_secret(name, "value")
    assert not Secret.objects.exists()


def test_the_admin_never_shows_the_value_again(client):
    admin = User.objects.create_superuser("boss", password="pw")
    client.force_login(admin)
    response = client.post(
        "/admin/runs/secret/add/", {"name": "SHOWN_ONCE", "task": "", "value": VALUE}
    )
    assert response.status_code == 302
    secret = Secret.objects.get(name="SHOWN_ONCE")
    assert secret.updated_by == admin
    page = client.get(f"/admin/runs/secret/{secret.pk}/change/")
    assert page.status_code == 200
    assert VALUE.encode() not in page.content
    assert b"set" in page.content
    listing = client.get("/admin/runs/secret/")
    assert VALUE.encode() not in listing.content
    # Saving without a value keeps the old one.
    client.post(
        f"/admin/runs/secret/{secret.pk}/change/", {"name": "SHOWN_ONCE", "task": "", "value": ""}
    )
    secret.refresh_from_db()
    assert vault.decrypt(secret.encrypted_value) == VALUE


def test_masker_never_lets_a_split_value_through():
    masker = vault.Masker(["abcdef", "xyz"])
    out = (
        "".join(masker.feed(piece) for piece in ["123 ab", "cd", "ef 4 x", "yz!"]) + masker.flush()
    )
    assert out == "123 **** 4 ****!"
    assert vault.Masker(["ab"]).mask("ab") == "ab"  # too short to mask


def test_webhook_bodies_and_emails_carry_no_secret(make_task, execute, settings):
    """A run that failed with the secret in its result and reason: the webhook
    body (as sent, signed) and the failure email show ****."""
    from django.core import mail

    from runs import notifications
    from runs.models import Webhook

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    task = make_task(
        "tells",
        """
        import json, os, sys
        print("::result::" + json.dumps({"leak": os.environ["HOOK_SECRET"]}))
        print("the secret is", os.environ["HOOK_SECRET"])
        sys.exit(2)
        """,
        notify_emails="ops@example.com",
    )
    vault.set_secret("HOOK_SECRET", VALUE)
    run = execute(services.start_run(task))
    assert run.status == "failed"
    webhook = Webhook.objects.create(task=task, url="http://127.0.0.1:9/hook", secret="k")
    body = notifications.payload(webhook, "failure", run, f"{task.name} failed")
    assert VALUE.encode() not in body
    assert b"****" in body
    notifications.send_email(task, "failure", run=run, message=f"{task.name} failed")
    assert mail.outbox, "no email was sent"
    assert all(VALUE not in m.body and VALUE not in m.subject for m in mail.outbox)
    assert "the secret is ****" in mail.outbox[-1].body


def test_the_run_page_masks_a_secret_typed_into_the_run_env(make_task, client):
    task = make_task("typed", "print(1)")
    vault.set_secret("DB_PASS", VALUE)
    run = services.start_run(task, env={"COPY": VALUE})
    client.force_login(User.objects.create_superuser("root", password="pw"))
    page = client.get(f"/runs/{run.pk}/")
    assert page.status_code == 200
    assert VALUE.encode() not in page.content
    assert b"COPY=****" in page.content
