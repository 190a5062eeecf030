"""Every page on a phone, a tablet and a desktop, light and dark, in headless Chromium: no horizontal
scroll, the theme applied, and axe-core's accessibility check (from npm: package.json's dev dependency)
with no serious or critical violation. Screenshots of each page at each size land in
test-output/screenshots/ (layout-<page>-<size>-<theme>.png) to be looked at."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy import Engine

from tests.server.conftest import ROOT, LiveServer, ingest_docs, run_start

from .conftest import SCREENSHOTS

pytestmark = pytest.mark.browser

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SIZES = {"phone": (390, 844), "tablet": (768, 1024), "desktop": (1440, 900)}
ARMS = ["math/competition/level-1", "math/competition/level-3", "math/competition/level-5-hard", "code/leetcode-easy",
        "code/leetcode-medium", "code/leetcode-hard", "logic/kk3", "logic/kk5", "logic/kk7-very-long-name"]


def step(run: str, seq: int, s: int) -> dict[str, Any]:
    recs = []
    for i, arm in enumerate(ARMS):
        acc = min(1.0, 0.1 * i / 3 + s / 80.0)
        recs.append({"arm": arm, "p": 1.0 / len(ARMS), "score": 0.3 + 0.01 * i, "parts": {"mu": 0.2, "bonus": 0.1},
                     "n_step": 8 + i, "n_total": (8 + i) * (s + 1), "mean_abs_adv": 0.4 - 0.02 * i,
                     "mean_reward": acc, "accuracy": acc, "state": "active", "pin": None, "boost": None})
    return {"v": 1, "type": "step", "run": run, "seq": seq, "ts": time.time() - 600 + s, "step": s,
            "metrics": {"loss": 1.0 / (s + 1), "kl": 0.001 * s, "grad_norm": 1.5}, "dropped": 0, "arms": recs}


def evaluation(run: str, seq: int, s: int) -> dict[str, Any]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": time.time(), "name": "heldout", "step": s,
            "arms": [{"arm": a, "accuracy": min(1.0, 0.05 * i + s / 100.0), "correct": None, "total": None}
                     for i, a in enumerate(ARMS)]}


def fill(engine: Engine) -> None:
    for run, steps in (("layout/dump-run", 60), ("layout/uniform-run", 40)):
        docs: list[dict[str, Any]] = [run_start(run, 1, ARMS, ts=time.time() - 700,
                                                config={"tags": ["layout", "seed0"]})]
        docs += [step(run, len(docs) + 1, s) for s in range(steps)]
        docs += [evaluation(run, len(docs) + 1 + k, s) for k, s in enumerate(range(0, steps, 10))]
        if run.endswith("uniform-run"):
            docs.append({"v": 1, "type": "run_end", "run": run, "seq": len(docs) + 1, "ts": time.time(),
                         "status": "finished", "step": steps - 1})
        ingest_docs(engine, docs)


PAGES = {
    "runs": ("/", None),
    "run": ("/runs/layout/dump-run", "() => performance.getEntriesByName('sb:drawn').length === 1"),
    "run-finished": ("/runs/layout/uniform-run", "() => performance.getEntriesByName('sb:drawn').length === 1"),
    "compare": ("/compare?runs=layout/dump-run,layout/uniform-run",
                "() => [...document.querySelectorAll('.js-plotly-plot')].every((el) => el.data)"),
    "login": ("/login", None),
    "delete": ("/runs/layout/uniform-run/delete", None),
    "not-found": ("/runs/no-such-run", None),
}


def open_page(browser: Browser, base: str, path: str, ready: str | None, size: tuple[int, int],
              theme: str) -> tuple[Any, Page]:
    # bypass_csp: axe-core is injected as a script tag, which the pages' CSP (rightly) refuses.
    ctx = browser.new_context(base_url=base, viewport={"width": size[0], "height": size[1]}, color_scheme=theme,
                              bypass_csp=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path)
    if ready:
        page.wait_for_function(ready, timeout=20_000)
    page.wait_for_timeout(150)  # late layout (Plotly's responsive resize)
    assert errors == [], errors
    return ctx, page


def test_every_page_fits_every_screen_in_both_themes(app_server: LiveServer, browser: Browser, engine: Engine) -> None:
    fill(engine)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    too_wide = []
    for name, (path, ready) in PAGES.items():
        for size_name, size in SIZES.items():
            for theme in ("light", "dark"):
                ctx, page = open_page(browser, app_server.url, path, ready, size, theme)
                try:
                    assert page.evaluate("() => document.documentElement.dataset.theme") == theme
                    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                    if width[0] > width[1]:
                        too_wide.append((name, size_name, theme, width))
                    page.screenshot(path=str(SCREENSHOTS / f"layout-{name}-{size_name}-{theme}.png"), full_page=True)
                finally:
                    ctx.close()
    assert too_wide == [], '\n'.join(map(str, too_wide))


def test_no_serious_accessibility_violations(app_server: LiveServer, browser: Browser, engine: Engine) -> None:
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make assets` installs it (npm ci)")
    fill(engine)
    found = []
    for name, (path, ready) in PAGES.items():
        for theme in ("light", "dark"):
            ctx, page = open_page(browser, app_server.url, path, ready, SIZES["desktop"], theme)
            try:
                page.add_script_tag(path=str(AXE))
                result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                                       ".map((v) => [v.id, v.impact, v.nodes.length, v.nodes[0].target.join(' ')])")
                found += [(name, theme, *v) for v in result if v[1] in ("serious", "critical")]
            finally:
                ctx.close()
    assert found == [], '\n'.join(map(str, found))


def test_the_theme_toggle_is_kept_per_browser(app_server: LiveServer, browser: Browser, engine: Engine) -> None:
    fill(engine)
    ctx, page = open_page(browser, app_server.url, "/runs/layout/dump-run", PAGES["run"][1], SIZES["desktop"], "light")
    try:
        assert page.evaluate("() => document.documentElement.dataset.theme") == "light"
        bg = "() => getComputedStyle(document.body).backgroundColor"
        chart_bg = "() => document.getElementById('chart-accuracy').layout.paper_bgcolor"
        light = (page.evaluate(bg), page.evaluate(chart_bg))
        toggle = page.locator("#theme-toggle")
        toggle.click()  # auto -> light
        toggle.click()  # light -> dark
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        page.wait_for_function(f"() => ({chart_bg})() !== {light[1]!r}")
        dark = (page.evaluate(bg), page.evaluate(chart_bg))
        assert dark[0] != light[0] and dark[1] != light[1]
        page.reload()  # kept: a light system, but the choice was dark
        page.wait_for_function(PAGES["run"][1])
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        assert page.evaluate(chart_bg) == dark[1]
        assert toggle.inner_text().endswith("Theme: dark")
    finally:
        ctx.close()


def test_the_favicon_is_served(app_server: LiveServer) -> None:
    r = app_server.client.get("/favicon.ico", follow_redirects=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert Path(ROOT / "static" / "favicon.svg").read_bytes() == r.content
