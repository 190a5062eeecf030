"""Steering controls that follow the run and each arm, and command markers that stay readable, in
headless Chromium against the real server and a live agent (static/js/run/steer.js, charts.js)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from tests.server.conftest import LiveServer, ingest_docs, run_start, step_msg, wait_for

from .conftest import AgentLoop, PageWatch, live_page

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
KINDS = ("pin", "boost", "retire", "restore", "release")


def shown_forms(page: Page, arm: str) -> list[str]:
    return [k for k in KINDS if page.locator(f'form[data-arm="{arm}"][data-kind="{k}"]').is_visible()]


def post(app_server: LiveServer, run: str, kind: str, arm: str, **fields: object) -> str:
    r = app_server.client.post(f"/api/runs/{run}/commands", json={"kind": kind, "arm": arm, **fields})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def command(app_server: LiveServer, run: str, kind: str, arm: str, **fields: object) -> None:
    """Send a command as another operator would, and wait until the trainer applied it."""
    cid = post(app_server, run, kind, arm, **fields)
    wait_for(lambda: applied(app_server, run, [cid]))


def applied(app_server: LiveServer, run: str, ids: list[str]) -> dict[str, int]:
    got = {c["id"]: c["applied_step"] for c in app_server.client.get(f"/api/runs/{run}/commands").json()
           if c["id"] in ids and c["status"] == "applied"}
    return got if len(got) == len(ids) else {}


def stepping_page(app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop], run: str,
                  viewport: dict[str, int] | None = None) -> Page:
    """The page of `run`, which an agent steps at 6 Hz."""
    agents(run, hz=6.0)
    return live_page(app_server, pages, run, viewport)


def test_an_ended_run_offers_no_steering(app_server: LiveServer, pages: PageWatch, engine: Engine) -> None:
    arms = ["kk3", "kk4"]
    ingest_docs(engine, [run_start("ended", 1, arms), *[step_msg("ended", 2 + s, s, arms) for s in range(5)],
                         {"v": 1, "type": "run_end", "run": "ended", "seq": 9, "ts": time.time(),
                          "status": "finished", "step": 4}])
    page = pages.new_page()
    page.goto("/runs/ended")
    expect(page.locator("#steer-note")).to_have_text("This run has ended (finished): steering is off.")
    for arm in arms:
        assert shown_forms(page, arm) == []
    expect(page.locator("th.steer-col")).to_be_hidden()
    expect(page.locator("#steer-reason")).to_be_hidden()


def test_a_stale_run_shows_its_controls_disabled_with_the_reason(app_server: LiveServer, pages: PageWatch,
                                                                  engine: Engine) -> None:
    arms = ["kk3", "kk4"]
    # Stored from stream entries of 1970 (ingest_docs' ids): not heard from since, so stale.
    ingest_docs(engine, [run_start("quiet", 1, arms), *[step_msg("quiet", 2 + s, s, arms) for s in range(5)]])
    page = pages.new_page()
    page.goto("/runs/quiet")
    expect(page.locator("#run-status")).to_have_text("stale")
    expect(page.locator("#steer-note")).to_contain_text("stale): steering is off until it sends a step again")
    assert shown_forms(page, "kk3") == ["pin", "boost", "retire"]
    buttons = page.locator("form.cmd button")
    assert buttons.count() > 0 and all(b.is_disabled() for b in buttons.all())
    assert "stale" in (buttons.first.get_attribute("title") or "")


def test_controls_follow_each_arms_state_and_stale_errors_clear(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "steer-states"
    page = stepping_page(app_server, pages, agents, run)
    expect(page.locator("#steer-note")).to_be_hidden()
    assert shown_forms(page, "kk5") == ["pin", "boost", "retire"]  # active, neither pinned nor boosted

    # A pin the server refuses: its error shows under the form...
    page.on("dialog", lambda d: d.accept())
    form = page.locator('form[data-arm="kk5"][data-kind="pin"]')
    form.locator("input[name=value]").fill("2")
    form.locator("button[type=submit]").click()
    error = page.locator('form[data-arm="kk5"][data-kind="pin"] .form-error')
    expect(error).to_be_visible(timeout=WAIT_MS)

    # ... until the arm's state changes (retired by someone else): retired, it offers Restore only.
    command(app_server, run, "retire", "kk5")
    expect(page.locator('tr[data-arm="kk5"]')).to_have_attribute("data-state", "retired", timeout=WAIT_MS)
    expect(page.locator('form[data-arm="kk5"] .form-error')).to_have_count(0)
    assert shown_forms(page, "kk5") == ["restore"]
    # Boosted, an arm offers Release too.
    command(app_server, run, "boost", "kk3", value=2.0)
    expect(page.locator('tr[data-arm="kk3"]')).to_have_attribute("data-boosted", "1", timeout=WAIT_MS)
    assert shown_forms(page, "kk3") == ["pin", "boost", "retire", "release"]


def test_commands_on_nearby_steps_share_one_marker(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "steer-markers"
    page = stepping_page(app_server, pages, agents, run)
    ids = [post(app_server, run, "pin", "kk3", value=0.4), post(app_server, run, "boost", "kk4", value=2.0),
           post(app_server, run, "retire", "kk6")]
    steps = wait_for(lambda: applied(app_server, run, ids))
    assert max(steps.values()) - min(steps.values()) <= 1  # sent together: applied at one step boundary or two
    page.wait_for_function("() => (document.getElementById('chart-probability').layout.annotations || [])"
                           ".some((a) => a.text === '3 commands')", timeout=WAIT_MS)
    marker = page.evaluate("() => document.getElementById('chart-probability').layout.annotations"
                           ".find((a) => a.text === '3 commands')")
    assert marker["x"] == min(steps.values())
    for label in ("pin kk3=0.4", "boost kk4×2", "retire kk6"):
        assert label in marker["hovertext"]
    commands = page.evaluate("() => document.getElementById('chart-probability').layout.shapes"
                             ".filter((s) => s.line.color === '#b42318').map((s) => s.x0)")
    assert commands == [min(steps.values())]  # one line (diagnosis changes have markers of their own)


def test_on_a_phone_each_arms_controls_fold_into_a_menu(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "steer-phone"
    page = stepping_page(app_server, pages, agents, run, viewport={"width": 390, "height": 844})
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    menus = page.locator("details.steer-menu")
    expect(menus).to_have_count(4)
    assert shown_forms(page, "kk4") == []  # folded
    menu = page.locator('tr[data-arm="kk4"] details.steer-menu')
    menu.locator("summary").scroll_into_view_if_needed()
    menu.locator("summary").click()
    assert shown_forms(page, "kk4") == ["pin", "boost", "retire"]
    page.on("dialog", lambda d: d.accept())
    menu.locator('form[data-kind="pin"] input[name=value]').fill("0.4")
    menu.locator('form[data-kind="pin"] button[type=submit]').click()
    expect(page.locator('tr[data-arm="kk4"] .arm-pin')).to_have_text("0.400", timeout=WAIT_MS)
