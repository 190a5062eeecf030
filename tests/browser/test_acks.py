"""Command acks on the run page: each live `update` event (or one replayed on reconnect) carries the
command it acks (docs/sse.md), so the page shows it on the audit log row, the form and the chart
markers without a single request."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route, expect

from tests.server.conftest import LiveServer, wait_for

from .conftest import AgentLoop, PageWatch
from .test_dashboard import WAIT_MS, charts_loaded

pytestmark = pytest.mark.browser

# The run header refreshes itself every 5 s (templates/_run_header.html), whatever the acks: a clock,
# not a cost of an ack, and it may fall between a command and its ack.
HEADER_POLL = "run-header"

# Applied in the audit log, and marked on the chart: a command marker (commands on nearby steps share
# one, each listed in its hover text; diagnosis changes have markers of their own).
APPLIED = """([cid, label]) => {
    const row = document.querySelector(`tr[data-command-row="${cid}"]`);
    const notes = document.getElementById('chart-probability').layout.annotations || [];
    return row !== null && row.classList.contains('status-applied')
        && notes.some((a) => (a.hovertext || '').split('<br>').some((l) => l.endsWith(`: ${label}`)));
}"""


class Requests:
    """Every request the page makes, in order (Playwright's `request` events)."""

    def __init__(self, page: Page) -> None:
        self.seen: list[Request] = []
        page.on("request", lambda r: self.seen.append(r))

    def mark(self) -> int:
        return len(self.seen)

    def since(self, mark: int) -> list[str]:
        return [f"{r.method} {r.url}" for r in self.seen[mark:] if r.headers.get("hx-trigger") != HEADER_POLL]


def send(page: Page, requests: Requests, run: str, arm: str, kind: str, **fields: str) -> tuple[str, int]:
    """Send a command from its form; answers its id and the request count when the POST was answered."""
    form = f'form[data-arm="{arm}"][data-kind="{kind}"]'
    for name, value in fields.items():
        page.fill(f"{form} input[name={name}]", value)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/runs/{run}/commands")) as resp:
        page.click(f"{form} button[type=submit]")
    mark = requests.mark()
    assert resp.value.status == 200
    message = page.locator(f"{form} .form-message")
    expect(message).to_have_attribute("data-command-id", re.compile(r"^[0-9a-f-]{36}$"), timeout=WAIT_MS)
    return str(message.get_attribute("data-command-id")), mark


def audit_row(page: Page, cid: str) -> list[str]:
    return page.locator(f'tr[data-command-row="{cid}"] td').all_inner_texts()


def check_shown(page: Page, server: LiveServer, run: str, cid: str, label: str) -> None:
    """The page shows what the audit log API says about the command."""
    rec = next(c for c in server.client.get(f"/api/runs/{run}/commands").json() if c["id"] == cid)
    assert rec["status"] == "applied"
    n, msg = rec["applied_step"], rec["message"]
    row = audit_row(page, cid)
    assert row[2:] == [label, rec["reason"], f"applied at step {n}", str(n), msg]
    listed = page.evaluate("() => document.getElementById('chart-probability').layout.annotations"
                           ".flatMap((a) => (a.hovertext || '').split('<br>'))")
    assert f"step {n}: {label}" in listed


def test_acks_are_shown_without_a_request(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "br-acks"
    agents(run)
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    page = pages.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(f"/runs/{run}")
    charts_loaded(page)
    expect(page.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    requests = Requests(page)
    commands = [("kk3", "pin", {"value": "0.5"}, "pin kk3=0.5"),
                ("kk5", "boost", {"value": "2", "steps": "5"}, "boost kk5×2 for 5 steps"),
                ("kk6", "retire", {}, "retire kk6")]
    for arm, kind, fields, label in commands:
        cid, mark = send(page, requests, run, arm, kind, **fields)
        page.wait_for_function(APPLIED, arg=[cid, label], timeout=WAIT_MS)
        assert requests.since(mark) == [], (kind, requests.since(mark))
        check_shown(page, app_server, run, cid, label)
        form_message = page.locator(f'form[data-arm="{arm}"][data-kind="{kind}"] .form-message')
        expect(form_message).to_have_text(re.compile(r"^applied at step \d+$"))
        assert form_message.inner_text() == audit_row(page, cid)[4]


def test_acks_replayed_on_connect_need_no_request(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    """An ack committed while the page's event stream is not connected comes with the events replayed
    from SQL when it connects, and is shown from them alone."""
    run = "br-acks-replay"
    agents(run)
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    page = pages.new_page()
    page.on("dialog", lambda d: d.accept())
    held: list[Route] = []
    page.route(re.compile(r"/api/runs/[^/]+/events\?"), lambda route: held.append(route))
    page.goto(f"/runs/{run}")
    charts_loaded(page)
    for _ in range(WAIT_MS // 50):  # Playwright calls the route handler while the test waits in Playwright
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    requests = Requests(page)
    cid, mark = send(page, requests, run, "kk4", "pin", value="0.25")

    def applied() -> Any:
        log = app_server.client.get(f"/api/runs/{run}/commands").json()
        return next(c for c in log if c["id"] == cid)["status"] == "applied"

    wait_for(applied)
    assert page.locator(f'td.cmd-status[data-command-id="{cid}"]').inner_text() == "pending"
    held[0].continue_()  # the stream starts at the page's event seq: the ack is replayed
    page.wait_for_function(APPLIED, arg=[cid, "pin kk4=0.25"], timeout=WAIT_MS)
    assert requests.since(mark) == []
    check_shown(page, app_server, run, cid, "pin kk4=0.25")
