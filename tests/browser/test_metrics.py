"""The run page's trainer-metric panels and the view in the URL, in headless Chromium, fed by a live agent:
panels added, removed and switched to a log scale, then restored with the rest of the view (smoothing,
hidden arms, zoom) from the copied URL in a new browser context."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.server.conftest import LiveServer, wait_for

from .conftest import AgentLoop, PageWatch, screenshot

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
PANELS = "() => [...document.querySelectorAll('#metric-panels figure.metric-panel')].map((f) => f.dataset.metric)"
# Per panel: [metric, points in its trace, y axis type].
PANEL_DATA = """() => [...document.querySelectorAll('#metric-panels figure.metric-panel')].map((f) => {
    const el = f.querySelector('.js-plotly-plot');
    return [f.dataset.metric, el && el.data ? el.data[0].x.length : -1, el && el.layout ? el.layout.yaxis.type : null];
})"""
XRANGES = """() => [...document.querySelectorAll('.charts .js-plotly-plot, .metric-grid .js-plotly-plot')].map((el) =>
    el.layout.xaxis.autorange === false ? el.layout.xaxis.range.map(Math.round) : null)"""


def query(page: Page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query, keep_blank_values=True)


def panels_drawn(page: Page, names: list[str]) -> None:
    """The panels of `names`, in that order, each drawn with points (scrolled to: the page draws a chart
    once it comes near the viewport)."""
    page.locator("#metric-panels").scroll_into_view_if_needed()
    page.wait_for_function(
        "(names) => { const f = [...document.querySelectorAll('#metric-panels figure.metric-panel')];"
        " return JSON.stringify(f.map((x) => x.dataset.metric)) === JSON.stringify(names)"
        " && f.every((x) => { const el = x.querySelector('.js-plotly-plot');"
        " return el && el.data && el.data[0].x.length > 0; }); }",
        arg=names, timeout=WAIT_MS)


def test_panels_added_removed_and_the_view_restored_from_the_url(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    agents("metrics-view", hz=8.0)
    wait_for(lambda: app_server.client.get("/api/runs/metrics-view").status_code == 200
             and app_server.client.get("/api/runs/metrics-view").json()["last_step"] >= 5)
    page = pages.new_page()
    page.goto("/runs/metrics-view")
    expect(page.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)

    # The first four metrics by name open as panels; the fifth is offered in the picker.
    panels_drawn(page, ["grad_norm", "kl", "loss", "reward_mean"])
    expect(page.locator("#metric-pick option")).to_have_text(["zero_adv_frac"])
    # Live: a panel's line grows as steps arrive.
    n0 = dict((m, n) for m, n, _ in page.evaluate(PANEL_DATA))["loss"]
    page.wait_for_function(
        "(n0) => { const f = document.querySelector('figure.metric-panel[data-metric=\"loss\"] .js-plotly-plot');"
        " return f.data[0].x.length > n0 + 2; }", arg=n0, timeout=WAIT_MS)

    # Remove one, add one, log scale on another.
    page.get_by_role("button", name="remove the kl panel").click()
    panels_drawn(page, ["grad_norm", "loss", "reward_mean"])
    expect(page.locator("#metric-pick option")).to_have_text(["kl", "zero_adv_frac"])
    page.select_option("#metric-pick", "zero_adv_frac")
    page.get_by_role("button", name="add panel").click()
    panels_drawn(page, ["grad_norm", "loss", "reward_mean", "zero_adv_frac"])
    page.locator('figure.metric-panel[data-metric="loss"] input.metric-log').check()
    page.wait_for_function("() => document.querySelector('figure.metric-panel[data-metric=\"loss\"]"
                           " .js-plotly-plot').layout.yaxis.type === 'log'", timeout=WAIT_MS)

    # The rest of the view: smoothing, a hidden arm, a zoom (drawn on one chart, shared by all).
    page.locator("#ema").fill("0.6")
    page.locator("#arm-toggles .arm-toggle[value='kk4']").uncheck()
    page.evaluate("() => Plotly.relayout(document.querySelector('.charts .js-plotly-plot'), {'xaxis.range': [2, 9]})")
    page.wait_for_function(f"() => ({XRANGES})().every((r) => r && r[0] === 2 && r[1] === 9)", timeout=WAIT_MS)
    q = query(page)
    assert q["panels"] == ["grad_norm,loss,reward_mean,zero_adv_frac"] and q["log"] == ["loss"]
    assert q["ema"] == ["0.60"] and q["hide"] == ["kk4"] and q["zoom"] == ["2,9"]
    screenshot(page, "run-metric-panels")
    url = page.url

    # A copied URL in a new browser context (no storage shared): the same view.
    other = pages.new_page()
    other.goto(url)
    expect(other.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    panels_drawn(other, ["grad_norm", "loss", "reward_mean", "zero_adv_frac"])
    types = {m: t for m, _, t in other.evaluate(PANEL_DATA)}
    assert types == {"grad_norm": "linear", "loss": "log", "reward_mean": "linear", "zero_adv_frac": "linear"}
    expect(other.locator("#ema")).to_have_value("0.6")
    expect(other.locator("#ema-value")).to_have_text("0.60")
    expect(other.locator("#arm-toggles .arm-toggle[value='kk4']")).not_to_be_checked()
    expect(other.locator("#arm-toggles .arm-toggle[value='kk3']")).to_be_checked()
    other.wait_for_function(f"() => ({XRANGES})().every((r) => r && r[0] === 2 && r[1] === 9)", timeout=WAIT_MS)
    # Smoothing applies: a smoothed trace carries the raw values beside the smoothed ones.
    assert other.evaluate("() => Array.isArray(document.querySelector('figure.metric-panel[data-metric=\"grad_norm\"]"
                          " .js-plotly-plot').data[0].customdata)")
    # A double-click's autorange drops the zoom from every chart and from the URL.
    other.evaluate("() => Plotly.relayout(document.querySelector('.charts .js-plotly-plot'),"
                   " {'xaxis.autorange': true})")
    other.wait_for_function(f"() => ({XRANGES})().every((r) => r === null)", timeout=WAIT_MS)
    assert "zoom" not in query(other)

    # All panels removed: the URL says so, and a reload shows none (not the default four).
    for name in ["grad_norm", "loss", "reward_mean", "zero_adv_frac"]:
        other.get_by_role("button", name=f"remove the {name} panel").click()
    panels_drawn(other, [])
    assert query(other)["panels"] == [""]
    other.reload()
    expect(other.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    expect(other.locator("#metric-pick option")).to_have_count(5)
    assert other.evaluate(PANELS) == []
