"""The operations console in a real browser: Playwright drives Debian's chromium against real API,
worker and SQS processes. Screenshots of every page are kept in test-artifacts/console/ (ignored by
git) and in the test's tmp dir."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT, Receiver

OPERATOR_KEY = "op-secret"
VIEWER_KEY = "view-secret"
KEYS = f"ops:{OPERATOR_KEY}:operator,watch:{VIEWER_KEY}:viewer"

#: Where the screenshots are kept for people to look at (ignored by git).
ARTIFACTS = ROOT / "test-artifacts" / "console"

#: The most the overview may lag a change in SQS's counts (the issue's promise).
FOLLOWS_WITHIN_MS = 3000


def _browser() -> tuple[Any, str]:
    """Playwright's sync API and Debian's chromium; skipped locally without them, a failure in CI."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = (
        "chromium is missing: `make test` installs Debian's chromium package"
        if chromium is None
        else "playwright is missing: `make install` installs the dev dependencies"
        if sync_playwright is None
        else None
    )
    if missing is not None:
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)
    assert chromium is not None
    return sync_playwright, chromium


def _call(url: str, *, key: str, method: str = "GET", body: Any = None) -> tuple[int, dict[str, str], Any]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.loads(error.read())


def test_the_console_overview_dead_letters_roles_and_send_form_in_chromium(
    api_process: Any, worker_process: Any, receiver: Receiver, tmp_path: Path
) -> None:
    sync_playwright, chromium = _browser()
    from playwright.sync_api import expect

    # Given the API with an operator's and a viewer's key, a worker, and SQS
    state = {"QM_STATE_DIR": str(tmp_path / "state")}  # as `make run`: the API and the workers share it
    api, url = api_process(env={"QM_API_KEYS": KEYS, **state})
    worker_process(env=state)
    shots = tmp_path / "screenshots"
    shots.mkdir()

    def shoot(page: Any, name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    def send(envelope: dict[str, Any]) -> str:
        status, _, answer = _call(url + "/messages", key=OPERATOR_KEY, method="POST", body=envelope)
        assert status == 202, answer
        return str(answer["id"])

    problems_seen: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems_seen.append(f"page error: {error}"))
            page.on("console", lambda m: problems_seen.append(m.text) if "Content Security Policy" in m.text else None)

            # When an operator opens /ui: it asks for the key, then shows the overview
            page.goto(url + "/ui")
            expect(page.get_by_role("heading", name="API key")).to_be_visible()
            # (with the keyboard alone: the key field has the focus, Enter sends it)
            assert page.evaluate("document.activeElement.id") == "api-key"
            page.keyboard.type(OPERATOR_KEY)
            page.keyboard.press("Enter")
            expect(page.locator("#who")).to_contain_text("ops · operator")
            # And the key lasts for the tab's session; the first Tab reaches the skip link, which leads to the content
            page.reload()
            expect(page.locator("#who")).to_contain_text("ops · operator")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.textContent") == "Skip to content"
            page.keyboard.press("Enter")
            assert page.evaluate("document.activeElement.id") == "main"
            log_row = page.locator('#overview-table tr[data-type="log"]')
            expect(log_row).to_be_visible()
            # Then it shows an empty state that says how to send a first message
            expect(page.locator("#overview-empty")).to_contain_text("curl -X POST")
            shoot(page, "overview-empty")

            # When two messages wait (delayed, so the worker leaves them): the overview shows what /queues reports
            page.evaluate("window.notReloaded = true")
            for _ in range(2):
                send({"type": "log", "payload": {"message": "later"}, "delay_seconds": 900})
            expect(log_row.locator('[data-field="delayed"]')).to_have_text("2 msg", timeout=FOLLOWS_WITHIN_MS + 2000)
            _, _, queues = _call(url + "/queues", key=OPERATOR_KEY)
            for queue in queues["queues"]:
                row = page.locator(f'#overview-table tr[data-type="{queue["type"]}"]')
                for field in ("visible", "in_flight", "delayed"):
                    expect(row.locator(f'[data-field="{field}"]')).to_have_text(f"{queue[field]} msg")
                expect(row.locator('[data-field="dead_letter_visible"]')).to_have_text(
                    f"{queue['dead_letter']['visible']} msg"
                )
            # And it follows a change within 3 s, without a reload
            for _ in range(3):
                send({"type": "log", "payload": {"message": "later"}, "delay_seconds": 900})
            changed = time.monotonic()
            expect(log_row.locator('[data-field="delayed"]')).to_have_text("5 msg", timeout=FOLLOWS_WITHIN_MS)
            assert time.monotonic() - changed < FOLLOWS_WITHIN_MS / 1000
            assert page.evaluate("window.notReloaded") is True
            shoot(page, "overview")

            # When three poison messages are dead-lettered (their webhook answers 400)
            receiver.statuses["/poison"] = [400]
            poison = [
                send({"type": "webhook", "payload": {"url": receiver.url("/poison"), "body": {"n": n}}})
                for n in range(3)
            ]
            webhook_row = page.locator('#overview-table tr[data-type="webhook"]')
            expect(webhook_row.locator('[data-field="dead_letter_visible"]')).to_have_text("3 msg", timeout=20_000)
            # Then the dead-letter page lists them, and the error-text filter finds exactly them
            webhook_row.locator('[data-field="dead_letter_visible"] a').click()
            expect(page.locator("#dl-table tbody tr")).to_have_count(3)
            page.get_by_label("Error contains").fill("no such error")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#dl-empty")).to_contain_text("Nothing matches this filter")
            page.get_by_label("Error contains").fill("answered 400")
            page.get_by_role("button", name="Filter").click()
            expect(page.locator("#dl-table tbody tr")).to_have_count(3)
            assert sorted(
                page.locator("#dl-table tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
            ) == sorted(poison)
            with page.expect_download() as exported:
                page.get_by_role("button", name="Export matching as JSON").click()
            dumped = json.loads(Path(exported.value.path()).read_text())
            assert sorted(m["id"] for m in dumped) == sorted(poison)
            assert all(m["payload"]["url"] == receiver.url("/poison") for m in dumped)
            page.get_by_role("button", name="Open").first.click()
            expect(page.locator("#dl-detail-payload")).to_contain_text("/poison")
            expect(page.locator("#dl-detail-fields")).to_contain_text("answered 400")
            shoot(page, "dead-letters")
            # When the operator redrives the filtered set with the button (the receiver now accepts them)
            receiver.statuses["/poison"] = [200]
            page.get_by_role("button", name="Redrive all matching (3)").click()
            expect(page.locator("#confirm-text")).to_contain_text("Redrive 3 dead letters back to the webhook queue")
            expect(page.locator("#confirm-text")).to_contain_text("Dry run")
            page.locator("#confirm-ok").click()
            expect(page.locator("#toast")).to_contain_text("Redrove 3")
            # Then the overview shows the dead-letter queue back at zero, and each was delivered
            page.get_by_role("link", name="Overview").click()
            expect(webhook_row.locator('[data-field="dead_letter_visible"]')).to_have_text("0 msg", timeout=20_000)
            expect(webhook_row.locator('[data-field="visible"]')).to_have_text("0 msg", timeout=20_000)
            assert len([r for r in receiver.to("/poison")]) >= 6
            assert "who=ops what=redrive" in api.output()

            # When the operator sends a message from the form built from its schema
            page.get_by_role("link", name="Messages").click()
            page.get_by_label("Type", exact=True).select_option("webhook")
            posted: list[str] = []
            page.on(
                "request",
                lambda r: posted.append(r.url) if r.method == "POST" and r.url.endswith("/messages") else None,
            )
            page.locator("#f-payload-url").fill("ftp://nowhere")
            page.locator("#f-payload-body").fill('{"order": 7}')
            page.get_by_role("button", name="Send").click()
            # Then a schema violation shows at its field and nothing is sent
            expect(page.locator("#f-payload-url-error")).to_contain_text("does not match")
            expect(page.locator("#f-payload-url")).to_have_attribute("aria-invalid", "true")
            assert posted == []
            shoot(page, "messages-invalid")
            # And a valid one is sent: 202 and the status link
            page.locator("#f-payload-url").fill(receiver.url("/ok"))
            with page.expect_response(lambda r: r.url.endswith("/messages") and r.request.method == "POST") as sent:
                page.get_by_role("button", name="Send").click()
            assert sent.value.status == 202
            accepted = sent.value.json()
            result = page.locator('#send-result [data-status="202"]')
            expect(result).to_contain_text(accepted["id"])
            location = sent.value.headers.get("location")
            link = result.get_by_role("link", name="Follow its status")
            expect(link).to_have_attribute("data-status-url", location or f"/messages/{accepted['id']}")
            shoot(page, "messages-sent")
            link.click()
            # The 202 points at its status, and the look-up shows the message with its state
            assert location == f"/messages/{accepted['id']}"
            expect(page.locator('#lookup-result [data-status="200"]')).to_contain_text(accepted["id"])
            shoot(page, "messages-lookup")

            # At 390 px wide, and in dark mode, the overview still fits and reads
            page.set_viewport_size({"width": 390, "height": 844})
            page.emulate_media(color_scheme="dark")
            page.get_by_role("link", name="Overview").click()
            expect(log_row).to_be_visible()
            assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
            assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(17, 18, 22)"
            shoot(page, "overview-390-dark")

            # When a viewer opens the console: no redrive button, and a direct POST is refused
            viewer = browser.new_page(viewport={"width": 1280, "height": 900})
            viewer.on("pageerror", lambda error: problems_seen.append(f"page error: {error}"))
            viewer.goto(url + "/ui#/dead-letters/webhook")
            viewer.get_by_role("textbox", name="Key").fill(VIEWER_KEY)
            viewer.get_by_role("textbox", name="Key").press("Enter")
            expect(viewer.locator("#who")).to_contain_text("watch · viewer")
            expect(viewer.locator("#dl-summary")).to_contain_text("dead letters of webhook")
            for button in (
                "#dl-redrive-matching",
                "#dl-redrive-selected",
                "#dl-delete-matching",
                "#dl-delete-selected",
            ):
                expect(viewer.locator(button)).to_be_hidden()
            expect(viewer.get_by_role("button", name="Export matching as JSON")).to_be_visible()
            refused = viewer.evaluate(
                """async (key) => {
                    const r = await fetch('/queues/webhook/redrive', {method: 'POST', body: '{}',
                        headers: {'Authorization': 'Bearer ' + key, 'Content-Type': 'application/json'}});
                    return [r.status, r.headers.get('content-type'), await r.json()];
                }""",
                VIEWER_KEY,
            )
            assert refused[0] == 403 and refused[1].startswith("application/problem+json")
            assert "viewer" in refused[2]["detail"]
            viewer.goto(url + "/ui#/messages")
            expect(viewer.locator("#send-panel")).to_be_hidden()
            shoot(viewer, "viewer")
        finally:
            browser.close()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            for shot in shots.glob("*.png"):
                shutil.copy(shot, ARTIFACTS / shot.name)
    # And the strict policy refused nothing the page needed, and no script failed
    assert problems_seen == []
    assert {p.stem for p in shots.glob("*.png")} >= {"overview", "dead-letters", "messages-sent", "viewer"}
