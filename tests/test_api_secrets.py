"""/api/secrets: editors write values that never come back out."""

import json

import pytest

from runs import services, vault
from runs.models import Secret
from tests.api_client import Api, make_user

pytestmark = pytest.mark.django_db(transaction=True)
VALUE = "tok-3x4mpl3-value"


def test_put_list_and_delete_a_global_secret(editor):
    response = editor.call("PUT", "/api/secrets/API_KEY", {"value": VALUE})
    assert response.status_code == 200
    body = response.json()["secret"]
    assert body["name"] == "API_KEY" and body["task"] is None
    assert body["updated_by"] == editor.user.username
    assert VALUE not in response.content.decode()
    listing = editor.get("/api/secrets")
    assert listing.status_code == 200
    assert [s["name"] for s in listing.json()["secrets"]] == ["API_KEY"]
    assert VALUE not in listing.content.decode()
    assert editor.call("DELETE", "/api/secrets/API_KEY").status_code == 204
    assert editor.call("DELETE", "/api/secrets/API_KEY").status_code == 404
    assert not Secret.objects.exists()


def test_a_task_secret_reaches_the_script_masked(editor, make_task, execute):
    task = make_task("uses_secret", "import os; print('key', os.environ['API_KEY'])")
    assert (
        editor.call(
            "PUT", "/api/secrets/API_KEY", {"value": VALUE, "task": "uses_secret"}
        ).status_code
        == 200
    )
    run = execute(services.start_run(task))
    assert run.read_log() == b"key ****\n"
    log = editor.get(f"/api/logs/{run.log_name}")
    assert VALUE not in log.content.decode()
    run_body = editor.get(f"/api/tasks/runs/{run.pk}")
    assert VALUE not in run_body.content.decode()
    assert editor.call("DELETE", "/api/secrets/API_KEY?task=uses_secret").status_code == 204


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/api/secrets/lower", {"value": "x"}, "name:"),
        ("/api/secrets/OK", {}, "Missing field(s): value"),
        ("/api/secrets/OK", {"value": 5}, "value: must be a string"),
        ("/api/secrets/OK", {"value": ""}, "value: must not be empty"),
        ("/api/secrets/OK", {"value": "x", "extra": 1}, "Unknown field(s): extra"),
    ],
)
def test_bad_input_is_400_and_changes_nothing(editor, path, body, message):
    response = editor.call("PUT", path, body)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Secret.objects.exists()


def test_unknown_task_is_404(editor):
    response = editor.call("PUT", "/api/secrets/OK", {"value": "x", "task": "nope"})
    assert response.status_code == 404
    assert not Secret.objects.exists()


def test_body_that_is_not_json_is_400(editor):
    response = editor.call("PUT", "/api/secrets/OK", raw="{nope")
    assert response.status_code == 400


@pytest.mark.parametrize("group", ["Viewers", "Operators"])
def test_non_editors_are_refused(group):
    api = Api(make_user(group))
    vault.set_secret("HIDDEN", VALUE)
    assert api.get("/api/secrets").status_code == 403
    assert api.call("PUT", "/api/secrets/HIDDEN", {"value": "new"}).status_code == 403
    assert api.call("DELETE", "/api/secrets/HIDDEN").status_code == 403
    assert vault.decrypt(Secret.objects.get().encrypted_value) == VALUE


def test_anonymous_gets_401_json():
    response = Api().get("/api/secrets")
    assert response.status_code == 401
    assert "error" in json.loads(response.content)


@pytest.mark.parametrize("task", ["", "Bad Name", 5])
def test_a_task_that_is_not_a_task_name_is_400(editor, task):
    response = editor.call("PUT", "/api/secrets/OK", {"value": "x", "task": task})
    assert response.status_code == 400
    assert response.json()["error"].startswith("task:")
    assert not Secret.objects.exists()
