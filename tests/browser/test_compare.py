"""The compare page in headless Chromium: two runs that the weighted train accuracy ranks one way and the
evaluation the other, streamed by real agents; the page, opened with its default metric, ranks by
evaluation. Screenshots at 1440 x 900 and 390 x 844 (test-output/screenshots/compare_*.png)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import Browser, Page, expect

from server import compare
from server.settings import Settings
from tests.server.conftest import REDIS_URL, LiveServer, wait_for
from trainer_agent import CurriculumAgent

from .conftest import SCREENSHOTS, PageWatch

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
EASY, HARD = "easy", "hard"
PASS = {EASY: 9, HARD: 2}  # of every 10 completions: deterministic rewards
STEPS = 30


def stream_run(srv: LiveServer, settings: Settings, spool: Path, run: str, scheduler: str, pin_easy: bool,
               evals: dict[int, dict[str, float]]) -> None:
    """A real agent: 8 prompts x 4 completions a step, rewards by arm, evaluations at the given steps; with
    `pin_easy`, an operator's pin of the easy arm (through the API) applied before the steps counted."""
    agent = CurriculumAgent(run=run, arms=[EASY, HARD], scheduler=scheduler, redis_url=REDIS_URL,
                            key_prefix=settings.key_prefix, spool_dir=spool, seed=1, project="browser",
                            config={"group_size": 4, "tags": ["compare-test"]})
    seen = dict.fromkeys(PASS, 0)

    def one_step() -> None:
        arms = [a for a in agent.sample(8) for _ in range(4)]
        rewards = []
        for a in arms:
            rewards.append(float(seen[a] % 10 < PASS[a]))
            seen[a] += 1
        agent.observe(arms, rewards, groups=[i // 4 for i in range(len(arms))])
        agent.end_step()

    try:
        wait_for(lambda: srv.client.get(f"/api/runs/{run}").status_code == 200)
        if pin_easy:
            pin = {"kind": "pin", "arm": EASY, "value": 0.95, "reason": "easy diet"}
            assert srv.client.post(f"/api/runs/{run}/commands", json=pin).status_code == 202

            def applied() -> bool:
                one_step()
                time.sleep(0.05)
                return srv.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "applied"

            wait_for(applied, timeout=20)
        for s in range(STEPS + 1):
            if s in evals:
                agent.log_eval(evals[s], n=100, name="heldout")
            if s < STEPS:
                one_step()
    finally:
        agent.close()
    wait_for(lambda: srv.client.get(f"/api/runs/{run}").json()["status"] == "finished"
             and len(srv.client.get(f"/api/runs/{run}/evals").json()["evals"]) == 2 * len(evals))


def no_sideways_scroll(page: Page) -> bool:
    return bool(page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))


def overlay_ready(page: Page, traces: int) -> None:
    page.wait_for_function(
        "n => { const el = document.getElementById('chart-overlay'); return el && el.data && el.data.length === n; }",
        arg=traces,
        timeout=WAIT_MS,
    )


def test_compare_ranks_by_evaluation_by_default(
    app_server: LiveServer, settings: Settings, pages: PageWatch, browser: Browser, tmp_path: Path
) -> None:
    # A: pinned to the easy arm, so its training batches look good; it never learns the hard arm.
    # B: uniform over both arms; it learns the hard arm and evaluates better.
    a, b = "br-easy-diet", "br-balanced"
    stream_run(app_server, settings, tmp_path / "a", a, "uniform", True,
               {0: {EASY: 0.85, HARD: 0.2}, 10: {EASY: 0.9, HARD: 0.2}, 20: {EASY: 0.92, HARD: 0.25},
                30: {EASY: 0.93, HARD: 0.25}})
    stream_run(app_server, settings, tmp_path / "b", b, "uniform", False,
               {0: {EASY: 0.85, HARD: 0.2}, 10: {EASY: 0.86, HARD: 0.55}, 20: {EASY: 0.88, HARD: 0.74},
                30: {EASY: 0.9, HARD: 0.8}})

    page = pages.new_page()
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"/compare?runs={a},{b}")
    overlay_ready(page, 3)  # two runs and A's override markers
    expect(page.locator("select[name=metric]")).to_have_value("eval:heldout")
    # Evaluation (mean over arms): B reaches 0.8 at step 20 (0.81), A never (0.59 at best).
    expect(page.locator("#ranking tbody tr")).to_have_count(2)
    assert page.locator("#ranking tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)") == [b, a]
    expect(page.locator(f'#ranking tr[data-run="{b}"] .steps-to-target')).to_have_text("20")
    expect(page.locator(f'#ranking tr[data-run="{a}"] .steps-to-target')).to_have_text("not reached")
    # A's pin is on the overlay, in A's colour, labelled; and listed under what differs.
    marker = page.evaluate(f"""() => document.getElementById('chart-overlay').data
        .filter(t => t.name === '{a} overrides').map(t => [t.x, t.text, t.marker.color])""")
    colour = page.evaluate("() => document.getElementById('chart-overlay').data[0].line.color")
    assert len(marker) == 1 and marker[0][1] == ["pin easy=0.95"] and marker[0][2] == colour
    expect(page.locator('#diff-table tr[data-key="overrides"] td').first).to_contain_text("pin easy=0.95 at step")
    # The small multiples have a legend: the runs, in their colours.
    expect(page.locator(".run-legend .run-key")).to_have_text([a, b])
    expect(page.locator(".small-plot")).to_have_count(2)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "compare_1440x900.png"), full_page=True)

    # The weighted train accuracy tells the other story: A's easy diet ranks it first. The form is the URL.
    page.select_option("select[name=metric]", "train_weighted")
    page.wait_for_function("() => location.search.includes('metric=train_weighted')", timeout=WAIT_MS)
    overlay_ready(page, 3)
    expect(page.locator("#ranking tbody tr").first).to_have_attribute("data-run", a, timeout=WAIT_MS)
    assert parse_qs(urlparse(page.url).query)["runs"] == [a, b]

    # Smoothing: the slider re-smooths the charts with the run page's EMA (charts.js), point for point what
    # the server ranked on; letting go puts it in the URL.
    page.goto(f"/compare?runs={a},{b}&metric=train_weighted&smoothing=0.6")
    overlay_ready(page, 3)
    data = page.evaluate("() => JSON.parse(document.getElementById('compare-data').textContent).overlay")
    drawn = page.evaluate("() => document.getElementById('chart-overlay').data.slice(0, 2).map(t => t.y)")
    assert drawn == [compare.ema(t["values"], 0.6) for t in data]
    page.screenshot(path=str(SCREENSHOTS / "compare_weighted_1440x900.png"), full_page=True)
    page.locator("#smoothing").fill("0.9")
    page.wait_for_function("() => location.search.includes('smoothing=0.9')", timeout=WAIT_MS)
    overlay_ready(page, 3)
    drawn = page.evaluate("() => document.getElementById('chart-overlay').data.slice(0, 2).map(t => t.y)")
    assert drawn == [compare.ema(t["values"], 0.9) for t in data]

    # A bad target comes back as a form error next to the field.
    page.goto(f"/compare?runs={a},{b}&target=1.5")
    expect(page.locator("#err-target")).to_have_text("the target must be a number from 0 to 1, got '1.5'")

    phone = browser.new_context(base_url=app_server.url, viewport={"width": 390, "height": 844},
                                device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        p = phone.new_page()
        errors: list[str] = []
        p.on("pageerror", lambda e: errors.append(str(e)))
        p.goto(f"/compare?runs={a},{b}")
        overlay_ready(p, 3)
        assert no_sideways_scroll(p), p.evaluate("() => document.documentElement.scrollWidth")
        p.screenshot(path=str(SCREENSHOTS / "compare_390x844.png"), full_page=True)
        p.screenshot(path=str(SCREENSHOTS / "compare_390x844_top.png"))
        assert errors == []
    finally:
        phone.close()
    assert pages.outside() == []
