"""The dashboard in headless Chromium: live charts, steering with acks, roles and CSRF, compare."""

from __future__ import annotations

import re
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from server.settings import Settings
from tests.pages.helpers import add_token, add_user
from tests.server.conftest import LiveServer, wait_for

from .conftest import AgentLoop, PageWatch, screenshot

pytestmark = pytest.mark.browser

WAIT_MS = 20_000


def charts_loaded(page: Page) -> None:
    page.wait_for_function(
        "() => { const el = document.getElementById('chart-probability');"
        " return el && el.data && el.data.length === 4 && el.data[0].x.length > 0; }",
        timeout=WAIT_MS,
    )


def points(page: Page, chart: str = "chart-probability", trace: int = 0) -> int:
    return int(page.evaluate(f"() => document.getElementById('{chart}').data[{trace}].x.length"))


def log_in(page: Page, name: str, password: str) -> None:
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("#login-form button[type=submit]")
    expect(page.locator(".who .user")).to_contain_text(name, timeout=WAIT_MS)


def add_operator_and_viewer(server: LiveServer, settings: Settings) -> None:
    """Users olga (operator, "olga-password") and vera (viewer, "vera-password")."""
    add_user(settings, "olga", "operator", "olga-password")
    add_user(settings, "vera", "viewer", "vera-password")
    # Users exist, so the test's own reads need a credential too (a viewer token).
    server.client.headers["Authorization"] = f"Bearer {add_token(settings, 'test-reader', 'viewer')}"


def post_from_page(page: Page, run: str, with_token: bool) -> int:
    """A hand-made form POST from inside the page (what a forged request would send)."""
    return int(page.evaluate(
        """async ([run, withToken]) => {
            const token = document.querySelector('meta[name="csrf-token"]').content;
            const body = new URLSearchParams({kind: "pin", arm: "kk3", value: "0.2"});
            const headers = {"HX-Request": "true"};
            if (withToken) { body.set("csrf_token", token); headers["X-CSRF-Token"] = token; }
            const r = await fetch(`/runs/${run}/commands`, {method: "POST", body, headers});
            return r.status;
        }""",
        [run, with_token],
    ))


def test_run_page_charts_grow_live(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "br-live"
    agents(run)
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200
             and app_server.client.get(f"/api/runs/{run}").json()["last_step"] >= 2)
    page = pages.new_page()
    page.goto(f"/runs/{run}")
    charts_loaded(page)
    expect(page.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    page.evaluate("() => { window.__sameDocument = true; }")
    before = [points(page, trace=i) for i in range(4)]
    page.wait_for_function(
        f"() => document.getElementById('chart-probability').data[0].x.length >= {before[0] + 5}", timeout=WAIT_MS
    )
    after = [points(page, trace=i) for i in range(4)]
    assert all(a >= b + 5 for a, b in zip(after, before, strict=True)), (before, after)
    assert page.evaluate("() => window.__sameDocument") is True  # no reload happened
    # Every chart follows.
    for chart in ("chart-mean_abs_adv", "chart-counts", "chart-score"):
        assert points(page, chart) > 0
    # The other views: completions cumulative (never decreasing, and growing live), the score's parts
    # (DUMP's mu and bonus for each of the 4 arms), each loaded when chosen and then kept live.
    page.check('input.chart-view[value="n_total"]')
    page.wait_for_function("() => { const y = document.getElementById('chart-counts').data[0].y;"
                           " return y.length > 0 && y.every((v, i) => !i || v >= y[i - 1]) && Math.max(...y) > 4; }",
                           timeout=WAIT_MS)
    n = points(page, "chart-counts")
    page.wait_for_function(f"() => document.getElementById('chart-counts').data[0].x.length >= {n + 2}",
                           timeout=WAIT_MS)
    page.check('input.chart-view[value="parts"]')
    page.wait_for_function("() => document.getElementById('chart-score').data.length === 8", timeout=WAIT_MS)
    assert page.evaluate("() => document.getElementById('chart-score').data.map(t => t.name)") == [
        f"{a} {p}" for a in ("kk3", "kk4", "kk5", "kk6") for p in ("bonus", "mu")
    ]
    expect(page.locator("#parts-names")).to_be_visible()
    n = points(page, "chart-score")
    page.wait_for_function(f"() => document.getElementById('chart-score').data[0].x.length >= {n + 2}",
                           timeout=WAIT_MS)
    page.check('input.chart-view[value="score"]')
    page.wait_for_function("() => document.getElementById('chart-score').data.length === 4", timeout=WAIT_MS)
    expect(page.locator("#parts-names")).to_be_hidden()
    # Hiding an arm hides it on every chart; the probability chart stays a stacked area.
    page.uncheck('.arm-toggle[value="kk6"]')
    assert page.evaluate("() => document.getElementById('chart-accuracy').data[3].visible") == "legendonly"
    assert page.evaluate("() => document.getElementById('chart-probability').data[0].stackgroup") == "one"
    page.check('.arm-toggle[value="kk6"]')
    # EMA smoothing: the drawn values change, the hover keeps the exact ones.
    page.eval_on_selector("#ema", "el => { el.value = '0.9'; el.dispatchEvent(new Event('input')); }")
    smoothed = page.evaluate("() => { const t = document.getElementById('chart-accuracy').data[0];"
                             " return [t.y.length === t.customdata.length, t.hovertemplate.includes('raw')]; }")
    assert smoothed == [True, True]
    # Live points keep coming while smoothed, each with its raw value for the hover.
    n = points(page, "chart-accuracy")
    page.wait_for_function(
        f"() => document.getElementById('chart-accuracy').data[0].x.length >= {n + 2}", timeout=WAIT_MS
    )
    assert page.evaluate("() => document.getElementById('chart-accuracy').data"
                         ".every(t => t.y.length === t.customdata.length && t.x.length === t.y.length)")
    # Wall-time x axis.
    page.check('input[name=xaxis][value="time"]')
    page.wait_for_function(
        "() => document.getElementById('chart-probability').layout.xaxis.type === 'date'", timeout=WAIT_MS
    )
    screenshot(page, "run_page_live")
    assert pages.outside() == []


# Per chart, the arm and visibility of every trace (the parts chart has one trace per arm and part).
TRACE_STATES = """() => [...document.querySelectorAll('.charts .plot')].map((el) =>
    [el.id, el.data.map((t) => [t.legendgroup, t.visible])])"""


def visibility(page: Page) -> dict[str, list[list[Any]]]:
    return {chart: traces for chart, traces in page.evaluate(TRACE_STATES)}


def rgb(hex_color: str) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_fast_run_is_reloaded_downsampled_without_losing_the_tail(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    """Live steps are appended raw; after a chart's worth of them the page reloads the series downsampled
    (no page reload), and the steps that arrive meanwhile are not lost."""
    run, total = "br-fast", 2500
    loop = agents(run, hz=0, steps=total)  # as fast as the agent goes
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    page = pages.new_page()
    page.goto(f"/runs/{run}")
    charts_loaded(page)
    page.evaluate("() => { window.__sameDocument = true; }")
    loop.thread.join(timeout=60)
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["last_step"] == total - 1)
    page.wait_for_function(
        f"() => document.getElementById('chart-probability').data.every(t => t.x[t.x.length - 1] === {total - 1})",
        timeout=WAIT_MS,
    )
    assert page.evaluate("() => performance.getEntriesByName('sb:reload').length") >= 1
    assert page.evaluate("() => window.__sameDocument") is True
    xs = page.evaluate("() => document.getElementById('chart-probability').data.map(t => t.x)")
    for x in xs:
        assert len(x) < total  # downsampled, not every step raw
        assert all(b >= a for a, b in pairwise(x))  # in order, nothing appended twice


def test_shared_legend(app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]) -> None:
    run = "br-legend"
    arms = ["kk3", "kk4", "kk5", "kk6"]
    agents(run, hz=0, steps=20)
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200
             and app_server.client.get(f"/api/runs/{run}").json()["last_step"] == 19)
    page = pages.new_page()
    # Hold one chart's data request: no chart draws until every chart's data is in.
    held: list[Any] = []
    page.route(re.compile(r"/api/runs/[^/]+/series\?metric=score"), lambda route: held.append(route))
    page.goto(f"/runs/{run}")
    page.wait_for_function(
        "() => document.querySelectorAll('.arm-toggle').length === 4"
        " && [...document.querySelectorAll('#arm-toggles .swatch')].every((s) => s.style.backgroundColor)",
        timeout=WAIT_MS,
    )
    # The swatches have their colours before any chart has drawn.
    assert len(held) == 1
    assert page.evaluate("() => document.getElementById('chart-probability').data") is None
    palette = page.evaluate("() => [0, 1, 2, 3].map((i) => SB.color(i))")
    swatch_css = """() => [...document.querySelectorAll('#arm-toggles label')].map((l) =>
        [l.querySelector('.arm-toggle').value, getComputedStyle(l.querySelector('.swatch')).backgroundColor])"""
    swatches = [[arm, rgb(c)] for arm, c in zip(arms, palette, strict=True)]
    assert page.evaluate(swatch_css) == swatches
    for route in held:
        route.continue_()
    charts_loaded(page)
    page.wait_for_function("() => performance.getEntriesByName('sb:drawn').length === 1", timeout=WAIT_MS)

    # Each swatch has the colour of its arm's trace in the probability chart, and so in every chart.
    prob = page.evaluate("() => document.getElementById('chart-probability').data.map((t) => [t.name, t.line.color])")
    assert [[name, rgb(c)] for name, c in prob] == swatches
    colours = page.evaluate("() => [...document.querySelectorAll('.charts .plot')].flatMap((el) =>"
                            " el.data.map((t) => [t.legendgroup, t.line.color]))")
    assert len(colours) == 5 * 4 and all(c == palette[arms.index(arm)] for arm, c in colours)
    # One legend for the page: none of the charts draws a Plotly legend; hover names the arm.
    layouts = page.evaluate("() => [...document.querySelectorAll('.charts .plot')].map((el) =>"
                            " [el.layout.showlegend, el.layout.hovermode])")
    assert layouts == [[False, "x unified"]] * 5
    assert page.locator(".charts .legend").count() == 0
    hovers = page.evaluate("() => document.getElementById('chart-accuracy').data.map((t) => t.hovertemplate)")
    assert hovers == [f"{a}: %{{y:.3g}}%{{customdata[1]}}<extra></extra>" for a in arms]
    # ... its value to three significant digits and, for a statistic of the step's completions, how many.
    counts = page.evaluate("() => document.getElementById('chart-accuracy').data"
                           ".map((t) => t.customdata.map((c) => c[1]))")
    assert all(c.startswith(" · n=") and int(c[5:]) > 0 for per_arm in counts for c in per_arm if c)
    assert sum(1 for per_arm in counts for c in per_arm if c) > 0
    # The score's parts view tells parts by line style, and its caption says which is which.
    page.check('input.chart-view[value="parts"]')
    page.wait_for_function("() => document.getElementById('chart-score').data.length === 8", timeout=WAIT_MS)
    dashes = page.evaluate("() => document.getElementById('chart-score').data.map((t) => [t.name, t.line.dash])")
    assert dashes == [[f"{a} {p}", d] for a in arms for p, d in (("bonus", "solid"), ("mu", "dot"))]
    expect(page.locator("#parts-names")).to_have_text("bonus: solid line, mu: dotted line")
    # Both marks are set once, data first.
    marks = page.evaluate("() => ['sb:data', 'sb:drawn'].map((n) => performance.getEntriesByName(n, 'mark').length)")
    assert marks == [1, 1]
    assert page.evaluate("() => performance.getEntriesByName('sb:data')[0].startTime"
                         " <= performance.getEntriesByName('sb:drawn')[0].startTime")

    all_shown = visibility(page)
    assert len(all_shown) == 5 and all(v is True for traces in all_shown.values() for _, v in traces)
    # Unticking an arm hides its traces in every chart, and only its traces.
    page.uncheck('.arm-toggle[value="kk4"]')
    assert visibility(page) == {
        chart: [[arm, "legendonly" if arm == "kk4" else True] for arm, _ in traces]
        for chart, traces in all_shown.items()
    }
    # "none" hides every arm with one redraw of each chart (not one per arm); "all" shows them again.
    page.evaluate("() => { window.__reacts = 0; const react = Plotly.react;"
                  " Plotly.react = function (...a) { window.__reacts += 1; return react.apply(this, a); }; }")
    page.click("#arms-none")
    assert page.evaluate("() => window.__reacts") == 5
    assert visibility(page) == {chart: [[arm, "legendonly"] for arm, _ in t] for chart, t in all_shown.items()}
    expect(page.locator(".arm-toggle:checked")).to_have_count(0)
    page.click("#arms-all")
    assert page.evaluate("() => window.__reacts") == 10
    assert visibility(page) == all_shown
    expect(page.locator(".arm-toggle:checked")).to_have_count(4)
    screenshot(page, "run_page_legend")
    assert pages.outside() == []


def test_operator_pins_viewer_cannot(
    app_server: LiveServer, settings: Settings, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "br-steer"
    add_operator_and_viewer(app_server, settings)
    loop = agents(run)
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)

    page = pages.new_page()
    log_in(page, "olga", "olga-password")
    page.goto(f"/runs/{run}")
    charts_loaded(page)
    expect(page.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    dialogs: list[str] = []

    def accept(d: Any) -> None:
        dialogs.append(d.message)
        d.accept()

    page.on("dialog", accept)
    form = page.locator('form[data-arm="kk4"][data-kind="pin"]')
    form.locator("input[name=value]").fill("0.5")
    page.fill("#steer-reason", "kk4 is the held-out control")
    form.locator("button[type=submit]").click()
    message = page.locator('form[data-arm="kk4"][data-kind="pin"] .form-message')
    expect(message).to_have_attribute("data-command-id", re.compile(r"^[0-9a-f-]{36}$"), timeout=WAIT_MS)
    # The confirmation states the exact command and its reason; the reason is spent once sent.
    assert dialogs == ["Pin kk4 to p = 0.5?\nReason: kk4 is the held-out control\nApplied at the next step."]
    expect(page.locator("#steer-reason")).to_have_value("")
    cid = message.get_attribute("data-command-id")
    status = page.locator(f'td.cmd-status[data-command-id="{cid}"]')
    expect(status).to_have_text(re.compile(r"^applied at step \d+$"), timeout=WAIT_MS)
    ack = next(c for c in app_server.client.get(f"/api/runs/{run}/commands").json() if c["id"] == cid)
    assert (ack["status"], ack["actor"], ack["kind"], ack["arm"], ack["value"], ack["reason"]) == (
        "applied", "olga", "pin", "kk4", 0.5, "kk4 is the held-out control")
    n = ack["applied_step"]
    expect(status).to_have_text(f"applied at step {n}")
    expect(message).to_have_text(f"applied at step {n}")
    # The agent runs with the pin from that step on.
    assert loop.agent.probabilities()["kk4"] == 0.5
    # The chart marks the command at its step.
    page.wait_for_function(
        "() => (document.getElementById('chart-probability').layout.shapes || []).length === 1", timeout=WAIT_MS
    )
    shape = page.evaluate("() => document.getElementById('chart-probability').layout.shapes[0].x0")
    label = page.evaluate("() => document.getElementById('chart-probability').layout.annotations[0].text")
    assert (shape, label) == (n, "pin kk4=0.5")
    expect(page.locator('tr[data-arm="kk4"] .arm-pin')).to_have_text("0.500", timeout=WAIT_MS)
    # Pinned, it offers Release; active, it does not offer Restore.
    expect(page.locator('form[data-arm="kk4"][data-kind="release"]')).to_be_visible()
    expect(page.locator('form[data-arm="kk4"][data-kind="restore"]')).to_be_hidden()
    expect(page.locator('form[data-arm="kk3"][data-kind="release"]')).to_be_hidden()
    screenshot(page, "run_page_pinned")

    # A POST without the CSRF token is refused, even from the operator's own page.
    assert post_from_page(page, run, with_token=False) == 403
    page.close()  # two live pages at once would share two slow cores

    viewer = pages.new_page()
    log_in(viewer, "vera", "vera-password")
    viewer.goto(f"/runs/{run}")
    charts_loaded(viewer)
    expect(viewer.locator("form.cmd")).to_have_count(0)
    expect(viewer.locator("#no-controls")).to_have_text("You are a viewer: steering needs an operator.")
    # A forged POST with the viewer's own valid CSRF token: 403.
    assert post_from_page(viewer, run, with_token=True) == 403
    screenshot(viewer, "run_page_viewer")
    log = app_server.client.get(f"/api/runs/{run}/commands").json()
    assert [c["id"] for c in log] == [cid]
    assert pages.outside() == []


def test_compare_overlays_two_runs(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    a = agents("br-cmp-dump", hz=0, steps=30, scheduler="dump")
    b = agents("br-cmp-uniform", hz=0, steps=20, scheduler="uniform")
    for loop in (a, b):
        loop.thread.join(timeout=30)
        loop.agent.close()
    def finished(run: str) -> bool:
        r = app_server.client.get(f"/api/runs/{run}")
        return r.status_code == 200 and r.json()["status"] == "finished"

    wait_for(lambda: finished("br-cmp-dump") and finished("br-cmp-uniform"))
    page = pages.new_page()
    page.goto("/compare?runs=br-cmp-dump,br-cmp-uniform&metric=overall_accuracy&target=0.5")
    page.wait_for_function(
        "() => { const el = document.getElementById('chart-overlay'); return el && el.data && el.data.length === 2; }",
        timeout=WAIT_MS,
    )
    traces = page.evaluate(
        "() => document.getElementById('chart-overlay').data.map(t => [t.name, t.x.length])"
    )
    assert traces == [["br-cmp-dump", 30], ["br-cmp-uniform", 20]]
    assert page.locator(".small-plot").count() == 4
    expect(page.locator('#diff-table tr[data-key="scheduler"] td')).to_have_text(["dump", "uniform"])
    screenshot(page, "compare")
    page.goto("/")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(2)
    expect(page.locator('tr[data-run="br-cmp-dump"] .badge')).to_have_text("finished")
    expect(page.locator('tr[data-run="br-cmp-dump"] .tag')).to_have_text(["browser-test"])
    # Tick both and compare: the form builds the compare URL.
    page.check('input[name=runs][value="br-cmp-dump"]')
    page.check('input[name=runs][value="br-cmp-uniform"]')
    screenshot(page, "runs")
    page.click("#compare-form button[type=submit]")
    page.wait_for_function(
        "() => { const el = document.getElementById('chart-overlay'); return el && el.data && el.data.length === 2; }",
        timeout=WAIT_MS,
    )
    assert pages.outside() == []
