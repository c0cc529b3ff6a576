"""The pages in a real browser: Debian's Chromium driven by Playwright,
against the app served by pytest-django's live server and runs executed by a
real django-q2 cluster. A screenshot of every page lands in
test-output/screenshots/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User

from runs.models import CodeRevision, Run, Task, TaskLink, TaskSchedule, Webhook
from tests.conftest import OUTPUT_DIR, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = OUTPUT_DIR / "screenshots"
TIMEOUT_MS = 30_000
PASSWORD = "browser-pw"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (requirements-dev.txt)"
)
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"{CHROMIUM} is missing: `make test` installs Debian's chromium (devtools/ci_prepare.py)",
        allow_module_level=True,
    )
expect = sync_api.expect


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # Playwright's sync API keeps an event loop in this thread; Django's ORM
    # would take that for async code. The tests themselves are plain sync code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def new_page(chromium, live_server) -> Iterator[Any]:
    """Pages in fresh browser contexts (their own cookies), closed at the end.
    A JavaScript error on any of them fails the test."""
    contexts = []
    errors: list[str] = []

    def make() -> Any:
        context = chromium.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert errors == []


@pytest.fixture
def admin_user(transactional_db) -> User:
    return User.objects.create_superuser("admin", "admin@example.com", PASSWORD)


@pytest.fixture
def viewer(transactional_db) -> User:
    user = User.objects.create_user("vera", password=PASSWORD)
    user.groups.add(Group.objects.get(name="Viewers"))
    return user


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page: Any, user: User, screenshot: str | None = None) -> None:
    page.goto("/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    if screenshot:
        shot(page, screenshot)
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".username")).to_have_text(user.username)


def type_code(page: Any, selector: str, lines: list[tuple[int, str]]) -> None:
    """Type a script into the admin's code editor as a person would. Each line
    is (dedent, text): the editor keeps the indentation on Enter and adds a
    level after a colon, so only dedents need Shift+Tab."""
    editor = page.locator(selector)
    editor.click()
    for i, (dedent, text) in enumerate(lines):
        if i:
            page.keyboard.press("Enter")
        for _ in range(dedent):
            page.keyboard.press("Shift+Tab")
        page.keyboard.type(text)


def status_of(page: Any) -> Any:
    return page.locator("#run-summary .summary-head [data-status]")


# A script typed into the admin: it prints its arguments and a first line,
# reports progress, then waits for a file the test creates, so the test sees
# the run live before it lets it finish.
WAITING_SCRIPT = [
    (0, "import os, sys, time"),
    (0, 'print("args:", sys.argv[1:])'),
    (0, 'print("tick 1")'),
    (0, 'print("::progress::50 halfway")'),
    (0, "for _ in range(600):"),
    (0, 'if os.path.exists("release"):'),
    (0, "break"),
    (1, "time.sleep(0.1)"),
    (1, 'print("done")'),
]
WAITING_CODE = (
    "import os, sys, time\n"
    'print("args:", sys.argv[1:])\n'
    'print("tick 1")\n'
    'print("::progress::50 halfway")\n'
    "for _ in range(600):\n"
    '    if os.path.exists("release"):\n'
    "        break\n"
    "    time.sleep(0.1)\n"
    'print("done")'
)


def test_write_a_task_in_the_admin_run_it_and_watch_it_live(
    new_page, admin_user, tasks_dir: Path, cluster
):
    cluster()
    page = new_page()
    log_in(page, admin_user, screenshot="login")

    # Write the task in the admin's code editor.
    page.goto("/admin/runs/task/add/")
    page.fill("#id_name", "waiter")
    page.fill("#id_description", "Waits for a file, for the browser test.")
    type_code(page, "#id_code", WAITING_SCRIPT)
    expect(page.locator("#id_code")).to_have_value(WAITING_CODE)
    shot(page, "admin-task-add")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    task = Task.objects.get(name="waiter")
    assert (tasks_dir / "waiter.py").read_text() == WAITING_CODE
    assert CodeRevision.objects.filter(task=task, author=admin_user).count() == 1

    # A second save keeps a second revision, shown with its diff in the admin.
    page.goto(f"/admin/runs/task/{task.pk}/change/")
    page.locator("#id_code").press("Control+End")
    page.keyboard.press("Enter")
    page.keyboard.type('print("bye")')
    page.click("input[name=_continue]")
    expect(page.locator("#revision-history")).to_contain_text("r2")
    expect(page.locator("#revision-history .d-add").first).to_have_text('+print("bye")')
    shot(page, "admin-task-change")

    # Run it from its page with arguments, shell-like.
    page.goto("/tasks/waiter/")
    expect(page.locator("#code")).to_contain_text('print("bye")')
    expect(page.locator("#revisions")).to_contain_text("r2")
    page.fill("#id_args", '"big world" second')
    page.check("input[name=args_style][value=shell]")
    page.fill("#id_env", "GREETING=hi")
    shot(page, "task-detail")
    page.click("button[data-run-task=waiter]")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    run = Run.objects.get(task=task)
    assert run.args == ["big world", "second"] and run.env == {"GREETING": "hi"}
    page.evaluate("window.__sameDocument = true")

    # The output appears while the run is live, without a reload.
    log = page.locator("#log")
    expect(log).to_contain_text("tick 1")
    expect(log).to_contain_text("args: ['big world', 'second']")
    expect(status_of(page)).to_have_attribute("data-status", "running")
    expect(page.locator("#run-summary .progress")).to_have_attribute("aria-valuenow", "50")
    expect(page.locator("#cancel-run")).to_be_visible()
    assert "done" not in log.inner_text()
    shot(page, "run-live")

    # Meanwhile the dashboard shows it running and refreshes itself.
    dashboard = new_page()
    log_in(dashboard, admin_user)
    expect(dashboard.locator("#running-now")).to_contain_text("waiter")
    shot(dashboard, "dashboard-live")

    (tasks_dir / "release").touch()
    expect(status_of(page)).to_have_attribute("data-status", "succeeded")
    expect(log).to_contain_text("done")
    expect(log).to_contain_text("bye")
    expect(page.locator("#exit-code")).to_have_text("0")
    expect(page.locator("#rerun")).to_be_visible()
    expect(page.locator("#run-events")).to_contain_text("succeeded")
    expect(page.locator("[data-live-note]")).to_be_hidden()
    assert page.evaluate("window.__sameDocument") is True
    shot(page, "run-finished")

    expect(dashboard.locator("#running-now")).to_contain_text("Nothing is running")
    expect(dashboard.locator(".count.st-succeeded .count-n")).to_have_text("1")
    shot(dashboard, "dashboard")

    page.goto("/tasks/")
    expect(page.locator("tr[data-task=waiter]")).to_contain_text("Succeeded")
    shot(page, "tasks")
    page.goto("/runs/")
    expect(page.locator(f"tr[data-run='{run.pk}']")).to_contain_text("waiter")
    shot(page, "runs")


def test_the_code_editor_indents_blocks_and_refuses_bad_code(new_page, admin_user, tasks_dir: Path):
    page = new_page()
    log_in(page, admin_user)
    page.goto("/admin/runs/task/add/")
    page.fill("#id_name", "broken")
    editor = page.locator("#id_code")
    type_code(page, "#id_code", [(0, "a = 1"), (0, "b = 2"), (0, "def f(:")])
    page.keyboard.press("Control+a")
    page.keyboard.press("Tab")
    expect(editor).to_have_value("    a = 1\n    b = 2\n    def f(:")
    page.keyboard.press("Shift+Tab")
    expect(editor).to_have_value("a = 1\nb = 2\ndef f(:")
    # Escape, then Tab: the focus leaves the editor.
    page.keyboard.press("Escape")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") != "id_code"

    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("Line 3")
    shot(page, "admin-syntax-error")
    assert not Task.objects.filter(name="broken").exists()
    assert not (tasks_dir / "broken.py").exists()


SLEEPER = """\
import time
print("started", flush=True)
for i in range(3000):
    time.sleep(0.1)
"""


def test_cancel_a_long_run_from_its_page(new_page, admin_user, make_task, cluster):
    cluster()
    make_task("sleeper", SLEEPER)
    page = new_page()
    log_in(page, admin_user)
    page.goto("/tasks/")
    page.click("button[data-run-task=sleeper]")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("#log")).to_contain_text("started")
    expect(status_of(page)).to_have_attribute("data-status", "running")
    page.click("#cancel-run")
    expect(page.locator(".messages")).to_contain_text("Cancel requested")
    expect(status_of(page)).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#run-summary")).to_contain_text("cancelled by admin")
    expect(page.locator("#rerun")).to_be_visible()
    shot(page, "run-cancelled")
    run = Run.objects.get()
    assert run.status == Run.Status.CANCELLED and run.finished_at is not None


CHATTY = """\
import os, time
i = 0
while not os.path.exists("release") and i < 30000:
    i += 1
    print(f"line {i}", flush=True)
    time.sleep(0.02)
print("end")
"""

AT_END = "(e) => e.scrollHeight - e.scrollTop - e.clientHeight < 30"


def test_the_log_follows_its_end_unless_the_user_scrolled_up(
    new_page, admin_user, make_task, tasks_dir: Path, cluster
):
    from runs import services

    cluster()
    task = make_task("chatter", CHATTY)
    run = services.start_run(task, user=admin_user)
    page = new_page()
    log_in(page, admin_user)
    page.goto(f"/runs/{run.pk}/")
    log = page.locator("#log")

    def lines() -> int:
        return log.text_content().count("\n")

    # Following: the box stays scrolled to the end while lines arrive.
    wait_for(lambda: lines() > 150, message="the log did not grow")
    seen = lines()
    wait_for(lambda: lines() > seen + 20)
    assert log.evaluate(AT_END)

    # Scrolled up: new lines arrive, the view stays where the user put it.
    log.evaluate("(e) => { e.scrollTop = 40; }")
    seen = lines()
    wait_for(lambda: lines() > seen + 30)
    assert log.evaluate("(e) => e.scrollTop") == 40

    # Back at the end: following again.
    log.evaluate("(e) => { e.scrollTop = e.scrollHeight; }")
    seen = lines()
    wait_for(lambda: lines() > seen + 30)
    assert log.evaluate(AT_END)
    shot(page, "run-following")

    (tasks_dir / "release").touch()
    expect(status_of(page)).to_have_attribute("data-status", "succeeded")
    expect(log).to_contain_text("end")


def test_a_viewer_sees_no_run_button_and_cannot_post_one(new_page, viewer, make_task):
    task = make_task("hello", 'print("hello")\n')
    done = Run.objects.create(task=task, status=Run.Status.SUCCEEDED, exit_code=0)
    page = new_page()
    log_in(page, viewer)
    page.goto("/tasks/")
    expect(page.locator("tr[data-task=hello]")).to_be_visible()
    expect(page.locator("button[data-run-task]")).to_have_count(0)
    expect(page.locator(".nav")).not_to_contain_text("Admin")
    shot(page, "viewer-tasks")
    page.goto("/tasks/hello/")
    expect(page.locator("#run-form")).to_contain_text("not run it")
    expect(page.locator("button[data-run-task]")).to_have_count(0)
    shot(page, "viewer-task-detail")
    page.goto(f"/runs/{done.pk}/")
    expect(page.locator("#rerun")).to_have_count(0)

    # The server refuses the POST the hidden button would have made.
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        "/tasks/hello/run",
        form={"csrfmiddlewaretoken": csrf},
        headers={"Referer": page.url},
    )
    assert response.status == 403
    assert "CSRF" not in response.text()
    assert Run.objects.count() == 1


ETL = """\
import argparse
parser = argparse.ArgumentParser(description="Load some data.")
parser.add_argument("source", help="where the data comes from")
parser.add_argument("--count", type=int, default=3, help="how many batches")
parser.add_argument("--mode", choices=["fast", "slow"], help="how hard to try")
parser.add_argument("--dry-run", action="store_true", help="change nothing")
args = parser.parse_args()
print(args)
"""


def test_run_a_task_through_its_argparse_form(new_page, admin_user, make_task):
    make_task("etl", ETL)
    page = new_page()
    log_in(page, admin_user)
    page.goto("/tasks/etl/")
    page.fill("#id_p_source", "s3 bucket")
    page.fill("#id_p_count", "many")
    page.select_option("#id_p_mode", "slow")
    page.check("#id_p_dry_run")
    page.click("button[data-run-task=etl]")
    # Refused with the reason beside the field; nothing was queued.
    expect(page.locator(".msg-error")).to_contain_text("not started")
    expect(page.locator("#run-form .errorlist")).to_contain_text("must be an integer")
    assert Run.objects.count() == 0
    expect(page.locator("#id_p_source")).to_have_value("s3 bucket")
    shot(page, "task-parameters-error")

    page.fill("#id_p_count", "5")
    page.click("button[data-run-task=etl]")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    run = Run.objects.get()
    assert run.args == ["s3 bucket", "--count", "5", "--mode", "slow", "--dry-run"]
    expect(page.locator("code.arg")).to_have_count(6)


def test_a_page_far_behind_a_live_log_jumps_to_its_tail(new_page, viewer, make_task):
    from django.utils import timezone

    from runs.models import LogChunk
    from runs.views import LOG_CATCH_UP_BYTES

    task = make_task("flood", 'print("x")\n')
    run = Run.objects.create(task=task, status=Run.Status.RUNNING, started_at=timezone.now())
    LogChunk.objects.create(run=run, start=0, data=b"first line\n")
    Run.objects.filter(pk=run.pk).update(log_size=11)
    page = new_page()
    log_in(page, viewer)
    page.goto(f"/runs/{run.pk}/")
    log = page.locator("#log")
    expect(log).to_have_text("first line\n")
    expect(page.locator("[data-live-note]")).to_be_visible()

    # More output at once than the page would ever crawl through.
    flood = b"y" * LOG_CATCH_UP_BYTES + b"\nlast line\n"
    LogChunk.objects.create(run=run, start=11, data=flood)
    Run.objects.filter(pk=run.pk).update(log_size=11 + len(flood))
    expect(log).to_contain_text("last line")
    assert "first line" not in log.text_content()
    expect(page.locator("#log-earlier")).to_be_visible()
    expect(page.locator("#log-skipped")).to_be_visible()

    # Once the run ends the page shows it and stops asking (the script hides
    # the live note exactly when it sets no further timer).
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, exit_code=0)
    expect(status_of(page)).to_have_attribute("data-status", "succeeded")
    expect(page.locator("[data-live-note]")).to_be_hidden()


def test_the_run_page_ticks_its_duration_and_swaps_parts_only_when_they_change(
    new_page, viewer, make_task
):
    from datetime import timedelta

    from django.utils import timezone

    task = make_task("slow", 'print("x")\n')
    started = timezone.now() - timedelta(seconds=5)
    run = Run.objects.create(task=task, status=Run.Status.RUNNING, started_at=started)
    page = new_page()
    log_in(page, viewer)
    lives = []
    page.on("request", lambda request: "/live?" in request.url and lives.append(request.url))
    page.goto(f"/runs/{run.pk}/")
    # A marker in the summary survives the polls while nothing it shows
    # changes, though the duration moves with the clock.
    page.evaluate("document.querySelector('#run-summary dl').dataset.mark = 'kept'")
    duration = page.locator("#run-duration")
    shown = duration.text_content()
    expect(duration).not_to_have_text(shown)
    # (Playwright delivers the page's events while it waits on the page.)
    page.wait_for_timeout(1500)
    assert len(lives) >= 4, "the page polls a few times a second"
    assert all("&version=" in url for url in lives)
    expect(page.locator("#run-summary dl[data-mark=kept]")).to_have_count(1)
    # Progress changes what the summary shows: it is rendered again.
    Run.objects.filter(pk=run.pk).update(progress=40, progress_message="reading")
    expect(page.locator("#run-summary .progress")).to_contain_text("40% · reading")
    expect(page.locator("#run-summary dl[data-mark=kept]")).to_have_count(0)


def test_a_long_log_shows_its_tail_and_loads_earlier_parts(new_page, viewer, make_task):
    from runs.models import LogChunk
    from runs.views import LOG_TAIL_BYTES

    task = make_task("chatty", 'print("x")\n')
    run = Run.objects.create(task=task, status=Run.Status.SUCCEEDED, exit_code=0)
    lines = [f"line {i:06d}\n".encode() for i in range(30000)]  # about 360 KB
    start = 0
    for i in range(0, len(lines), 1000):
        data = b"".join(lines[i : i + 1000])
        LogChunk.objects.create(run=run, start=start, data=data)
        start += len(data)
    Run.objects.filter(pk=run.pk).update(log_size=start)

    page = new_page()
    log_in(page, viewer)
    page.goto(f"/runs/{run.pk}/")
    log = page.locator("#log")
    expect(log).to_contain_text("line 029999")
    shown = log.text_content()
    assert "line 000000" not in shown and len(shown) <= LOG_TAIL_BYTES
    # Scrolled to the end on arrival.
    wait_for(
        lambda: page.evaluate(
            "(e) => e.scrollHeight - e.scrollTop - e.clientHeight < 30", log.element_handle()
        )
    )
    earlier = page.locator("#log-earlier")
    clicks = 0
    while earlier.is_visible():
        before = len(log.text_content())
        earlier.click()
        wait_for(lambda before=before: len(log.text_content()) > before)
        clicks += 1
        assert clicks < 20
    assert log.text_content() == b"".join(lines).decode()
    expect(page.locator("#log-skipped")).to_be_hidden()
    shot(page, "run-long-log")
    download = page.locator("a[download]")
    assert download.get_attribute("href") == f"/runs/{run.pk}/log.txt"


def test_start_a_delayed_run_from_the_task_page(new_page, admin_user, make_task):
    task = make_task("later", 'print("later")\n', retry_count=2)
    TaskSchedule.objects.create(task=task, cron="0 6 * * 1-5", timezone="Europe/Paris")
    TaskLink.objects.create(upstream=task, downstream=make_task("report", 'print("r")\n'))
    Webhook.objects.create(task=task, url="https://hooks.example.com/later")
    page = new_page()
    log_in(page, admin_user)
    page.goto("/tasks/later/")
    expect(page.locator("#schedules")).to_contain_text("0 6 * * 1-5")
    expect(page.locator("#chain-links")).to_contain_text("report")
    expect(page.locator("#webhooks")).to_contain_text("https://hooks.example.com/later")
    expect(page.locator("input[name=start][value=now]")).to_be_checked()
    # Typing a delay chooses "after a delay" (task.js); no cluster is needed,
    # as a delayed run waits in the database until its time.
    page.fill("#id_delay", "3600")
    expect(page.locator("input[name=start][value=delay]")).to_be_checked()
    shot(page, "task-delayed-start")
    page.click("button[data-run-task=later]")
    expect(page).to_have_url(re.compile(r"/runs/\d+/$"))
    run = Run.objects.get(task=task)
    assert run.status == Run.Status.QUEUED and run.not_before is not None
    expect(page.locator(".msg-success")).to_contain_text("waits until")
    expect(page.locator("#waits-until")).to_contain_text("waits until")
    expect(status_of(page)).to_have_attribute("data-status", "queued")
    shot(page, "run-delayed")
    page.goto("/tasks/")
    expect(page.locator("tr[data-task=later]")).to_contain_text("waits until")
    shot(page, "tasks-with-next-run")


def test_the_run_page_shows_the_retry_that_follows_its_end(new_page, viewer, make_task):
    from datetime import timedelta

    from django.utils import timezone

    task = make_task("flaky", "raise SystemExit(1)\n", retry_count=1)
    run = Run.objects.create(task=task, status=Run.Status.RUNNING, started_at=timezone.now())
    page = new_page()
    log_in(page, viewer)
    page.goto(f"/runs/{run.pk}/")
    expect(page.locator("#attempts")).to_have_count(0)

    # The end first, then (as services.after_run_end does, after the end's
    # commit) the next attempt: the page sees both without a reload.
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, exit_code=1)
    expect(status_of(page)).to_have_attribute("data-status", "failed")
    later = timezone.now() + timedelta(minutes=5)
    retry = Run.objects.create(
        task=task,
        status=Run.Status.QUEUED,
        trigger=Run.Trigger.RETRY,
        attempt=2,
        retry_of=run,
        not_before=later,
    )
    chain = page.locator("#attempts")
    expect(chain.locator(f'a[href="/runs/{retry.pk}/"]')).to_have_text("2")
    expect(chain).to_contain_text("waits until")
    expect(chain.locator('[aria-current="page"] a')).to_have_text("1")
    shot(page, "run-attempt-chain")
    chain.locator(f'a[href="/runs/{retry.pk}/"]').click()
    expect(page).to_have_url(re.compile(rf"/runs/{retry.pk}/$"))
    expect(page.locator("#waits-until")).to_contain_text("waits until")
