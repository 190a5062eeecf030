"""The arms cockpit in headless Chromium (static/js/run/cockpit.js): live figures, sorting, a suggestion
accepted from the cockpit reaching the trainer and the audit log with its reason, one dismissed."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Dialog, expect

from tests.server.conftest import LiveServer

from .conftest import AgentLoop, PageWatch, screenshot

pytestmark = pytest.mark.browser

WAIT_MS = 30_000


def test_a_suggestion_accepted_from_the_cockpit_reaches_the_trainer_and_the_audit_log(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    loop = agents("ck-accept", hz=12.0, scheduler="uniform")
    page = pages.new_page()
    page.goto("/runs/ck-accept")
    row = page.locator('tr[data-arm="kk4"]')
    # Live figures: the recent accuracy, samples, a diagnosis once 64 completions are in.
    expect(row.locator(".arm-acc")).to_have_text(re.compile(r"^0\.\d\d$"), timeout=WAIT_MS)
    expect(row.locator(".arm-ntotal")).not_to_have_text("—", timeout=WAIT_MS)
    expect(row.locator(".arm-diag .diag-learning")).to_be_visible(timeout=WAIT_MS)
    assert row.locator(".arm-spark svg.sparkline").count() == 2
    # Sorting by p, largest first, after a pin of kk3 to 0.94 (the others starve: p 0.02 each).
    r = app_server.client.post("/api/runs/ck-accept/commands", json={"kind": "pin", "arm": "kk3", "value": 0.94})
    assert r.status_code == 202, r.text
    expect(page.locator('tr[data-arm="kk3"] .arm-p')).to_have_text("0.940", timeout=WAIT_MS)
    page.click('th[data-sort="p"] button.sort')
    expect(page.locator("#cockpit tbody tr").first).to_have_attribute("data-arm", "kk3")
    assert page.get_attribute('th[data-sort="p"]', "aria-sort") == "descending"
    # kk4 (pass rate 0.55: its groups carry signal) is starved; the cockpit offers the boost.
    accept = row.locator("button.suggest-accept")
    expect(accept).to_have_text("boost kk4×2 for 50 steps…", timeout=WAIT_MS)
    expect(row.locator(".arm-diag .diag-starved")).to_be_visible()
    since = int(re.sub(r"\D", "", row.locator(".diag-since").inner_text()))
    screenshot(page, "cockpit_suggestion")
    dialogs: list[tuple[str, str]] = []

    def confirm(d: Dialog) -> None:
        dialogs.append((d.message, d.default_value))
        d.accept(d.default_value)

    page.on("dialog", confirm)
    accept.click()
    reason = f"starved since step {since}: the curriculum gives it p=0.020"
    expect(page.locator("#audit tbody tr").first).to_contain_text("boost kk4×2 for 50 steps", timeout=WAIT_MS)
    assert len(dialogs) == 1
    message, default = dialogs[0]
    assert message.startswith("boost kk4×2 for 50 steps?")
    assert '{"kind":"boost","arm":"kk4","value":2,"steps":50}' in message
    assert default.startswith(reason)
    audit = page.locator("#audit tbody tr").first
    expect(audit).to_contain_text(reason)
    # It reached the trainer: applied at a step, and the step records carry the agent's boost.
    expect(audit.locator(".cmd-status")).to_have_text(re.compile(r"^applied at step \d+$"), timeout=WAIT_MS)
    expect(row.locator(".arm-boost")).to_have_text("2.00", timeout=WAIT_MS)
    expect(row.locator(".suggest-done")).to_have_text("boost kk4×2 for 50 steps: accepted")
    # Dismissing kk5's suggestion, with a reason: in the audit log too.
    dismiss = page.locator('tr[data-arm="kk5"] button.suggest-dismiss')
    expect(dismiss).to_be_visible(timeout=WAIT_MS)
    page.remove_listener("dialog", confirm)
    page.once("dialog", lambda d: d.accept("kk5 is the held-out control"))
    dismiss.click()
    row5 = page.locator("#audit tr.status-dismissed").first
    expect(row5).to_contain_text("dismissed the suggestion for kk5", timeout=WAIT_MS)
    expect(row5).to_contain_text("kk5 is the held-out control")
    got = app_server.client.get("/api/runs/ck-accept/diagnoses").json()["responses"]
    assert [(x["arm"], x["response"]) for x in got] == [("kk4", "accepted"), ("kk5", "dismissed")]
    loop.stop.set()
