"""Heatmaps and the cockpit on runs of 9 and 64 arms (static/js/run/heatmaps.js, cockpit.js): stored runs
shaped like DUMP curricula (arms that saturate, arms out of reach, one that regresses), their screenshots
under test-output/screenshots/, the heatmaps' grid and hover against the stored values; 256 arms with the
trainer's prompt ids: the pass-rate-profile heatmap too, every row drawn, labels thinned, hover naming the arm."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import redis
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from server.settings import Settings
from tests.server.conftest import LiveServer, engine, ingest_docs, rds, run_start, settings, xadd  # noqa: F401 (fixtures)

from .conftest import PageWatch

pytestmark = pytest.mark.browser

WAIT_MS = 30_000
G, COMPLETIONS = 8, 512
HEATMAPS = ["probability", "mean_abs_adv", "accuracy", "zero_var"]
WINDOW_PROMPTS = 32  # distinct prompts per arm in the agent's window, with prompt ids


def pass_profiles(rng: np.random.Generator, acc: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Per arm, its window prompts counted by pass rate over G attempts in the agent's 5 bins (never,
    (0, 1/3), [1/3, 2/3), [2/3, 1), always); a prompt's pass rate is its arm's accuracy plus its `offset`."""
    k = rng.binomial(G, np.clip(acc[:, None] + offset, 0, 1))
    bins = np.where(k == 0, 0, np.where(k == G, 4, 1 + np.minimum(2, (3 * k) // G)))
    return np.stack([(bins == b).sum(axis=1) for b in range(5)], axis=1)


def curriculum_run(eng: Engine, run: str, n_arms: int, steps: int, seed: int = 0, prompt_ids: bool = False,
                   ) -> list[str]:
    """A DUMP-like run stored through ingest: arm i learns from step t0_i up to its ceiling (a few never
    learn, a few saturate, one forgets at 60 %); p a softmax of mean |A| plus a UCB bonus. With
    `prompt_ids`, each arm record carries the pass-rate profile of WINDOW_PROMPTS prompts."""
    rng = np.random.default_rng(seed)
    arms = [f"arith{i:02d}" if i % 2 else f"logic{i:02d}" for i in range(n_arms)]
    offset = rng.normal(0, 0.25, (n_arms, WINDOW_PROMPTS))
    t0 = rng.uniform(0, 1.2 * steps, n_arms)
    ceiling = rng.choice([0.02, 0.7, 0.9, 1.0], n_arms, p=[0.15, 0.35, 0.25, 0.25])
    n_total = np.zeros(n_arms)
    window_mab = np.full(n_arms, 0.5)
    docs = [run_start(run, 1, arms, ts=1_700_000_000.0, params={"window": 300, "c": 1.0, "temperature": 0.1})]
    for step in range(steps):
        acc = ceiling / (1 + np.exp(-(step - t0) / (steps / 12)))
        if step > 0.6 * steps:
            acc[1] *= 0.5
        bonus = np.sqrt(2 * math.log(step * COMPLETIONS + 2) / (n_total + 1)) * 0.3
        score = window_mab + bonus
        p = np.exp((score - score.max()) / 0.1)
        p /= p.sum()
        n = rng.multinomial(COMPLETIONS // G, p) * G
        n_total += n
        hist = pass_profiles(rng, acc, offset).tolist() if prompt_ids else [None] * n_arms
        recs = []
        for i, arm in enumerate(arms):
            q = float(np.clip(acc[i], 0, 1))
            zv = q ** G + (1 - q) ** G
            mab = float(np.sqrt(q * (1 - q)) * 0.9 * (1 - zv) + rng.normal(0, 0.01)) if n[i] else None
            if mab is not None:
                window_mab[i] = 0.97 * window_mab[i] + 0.03 * abs(mab)
            recs.append({
                "arm": arm, "p": float(p[i]), "score": float(score[i]),
                "parts": {"mu": float(window_mab[i]), "bonus": float(bonus[i])}, "n_step": int(n[i]),
                "n_total": int(n_total[i]), "mean_abs_adv": None if mab is None else abs(mab),
                "mean_reward": None if not n[i] else float(rng.binomial(n[i], q) / n[i]),
                "accuracy": None if not n[i] else float(rng.binomial(n[i], q) / n[i]), "state": "active",
                "pin": None, "boost": None, "n_groups": int(n[i] // G) if n[i] else 0,
                "zero_var": None if not n[i] else float(np.clip(zv + rng.normal(0, 0.03), 0, 1)), "pass_hist": hist[i],
            })
        docs.append({"v": 1, "type": "step", "run": run, "seq": step + 2, "ts": 1_700_000_000.0 + step, "step": step,
                     "metrics": {"loss": 1 / (step + 1)}, "dropped": 0, "arms": recs})
    ingest_docs(eng, docs, batch=200)
    return arms


def heatmaps_drawn(page: Page, n_arms: int, maps: list[str] = HEATMAPS) -> None:
    """Each heatmap drawn with every arm: scrolled to in turn, as the page draws a chart once it comes near
    the viewport."""
    for m in maps:
        page.wait_for_function("(m) => !document.getElementById('heat-' + m).closest('[hidden]')", arg=m,
                               timeout=WAIT_MS)
        page.locator(f"#heat-{m}").scroll_into_view_if_needed()
        page.wait_for_function(
            "([n, m]) => { const h = document.getElementById('heat-' + m)._heat; return h && h.arms.length === n; }",
            arg=[n_arms, m], timeout=WAIT_MS)


@pytest.mark.parametrize("n_arms", [9, 64])
def test_heatmaps_and_cockpit_of_a_long_run(app_server: LiveServer, pages: PageWatch, engine: Engine,  # noqa: F811
                                            n_arms: int) -> None:
    steps = 1500
    run = f"heat-{n_arms}"
    arms = curriculum_run(engine, run, n_arms, steps)
    page = pages.new_page()
    page.goto(f"/runs/{run}")
    box = page.locator("#heatmaps")
    # Open by default above 12 arms, and placed before the line charts; folded below the charts at 9.
    assert (box.get_attribute("open") is not None) == (n_arms > 12)
    if n_arms <= 12:
        box.locator("summary").click()
    heatmaps_drawn(page, n_arms)
    grid = page.evaluate("() => { const h = document.getElementById('heat-accuracy')._heat;"
                         " return {x: h.g.x.length, y: h.arms, z: h.g.z.length, c: h.g.custom[0][0]}; }")
    assert grid["y"] == arms and grid["z"] == n_arms and 100 <= grid["x"] <= 240
    assert grid["c"][0] == 0 and grid["c"][1] >= 0  # the first column's steps
    ticks = page.locator("#heat-accuracy .ytick text").all_text_contents()
    assert ticks == arms  # every arm labelled at 64
    # No prompt ids, no pass-rate profile: its heatmap is hidden, not drawn empty.
    assert page.locator("#heat-pass_partial").is_hidden()
    assert page.evaluate("() => !document.getElementById('heat-pass_partial').data")
    # Hover names the arm, the steps and the value.
    el = page.locator("#heat-accuracy .nsewdrag").first
    el.scroll_into_view_if_needed()
    bb = el.bounding_box()
    assert bb is not None
    page.mouse.move(bb["x"] + bb["width"] * 0.5, bb["y"] + bb["height"] * 0.5)
    hover = page.locator("#heat-accuracy .heat-tip")
    expect(hover).to_contain_text("steps ", timeout=WAIT_MS)
    assert any(a in hover.inner_text() for a in arms)
    # The cockpit: every arm diagnosed, its figures and sparklines drawn.
    expect(page.locator("#cockpit tbody tr .diag:not(.diag-none)")).to_have_count(n_arms, timeout=WAIT_MS)
    assert page.locator("#cockpit svg.sparkline polyline").count() == 2 * n_arms
    assert "mu" in page.locator("#cockpit tbody tr").first.locator(".arm-why").inner_text()
    # Above 12 arms the line charts the heatmaps cover are folded (not drawn) until asked for.
    covered = ("chart-probability", "chart-mean_abs_adv", "chart-accuracy")
    drawn = "(id) => !!document.getElementById(id).data"
    page.locator("#chart-counts").scroll_into_view_if_needed()
    page.wait_for_function(f"() => ({drawn})('chart-counts')", timeout=WAIT_MS)
    assert [page.evaluate(drawn, c) for c in covered] == [n_arms <= 12] * 3
    if n_arms > 12:
        page.click('button.unfold[data-chart="chart-accuracy"]')
        page.wait_for_function(f"() => ({drawn})('chart-accuracy')", timeout=WAIT_MS)
        assert page.evaluate("() => document.getElementById('chart-accuracy').data.length") == n_arms
        assert not page.evaluate(drawn, "chart-probability")
    page.click('th[data-sort="diag"] button.sort')
    page.mouse.move(0, 0)
    shots = "test-output/screenshots"
    box.screenshot(path=f"{shots}/heatmaps_{n_arms}_arms.png")
    page.locator(".cockpit-section").screenshot(path=f"{shots}/cockpit_{n_arms}_arms.png")
    page.screenshot(path=f"{shots}/run_page_{n_arms}_arms.png", full_page=True)


def test_heatmaps_at_256_arms_with_the_pass_rate_profile(app_server: LiveServer, pages: PageWatch,
                                                        engine: Engine, rds: redis.Redis,  # noqa: F811
                                                        settings: Settings) -> None:  # noqa: F811
    n_arms, steps = 256, 400
    run = "heat-256"
    arms = curriculum_run(engine, run, n_arms, steps, prompt_ids=True)
    page = pages.new_page()
    page.goto(f"/runs/{run}")
    maps = [*HEATMAPS, "pass_partial"]
    heatmaps_drawn(page, n_arms, maps)
    for m in maps:
        got = page.evaluate("""async (m) => {
            const el = document.getElementById('heat-' + m), h = el._heat, ya = el._fullLayout.yaxis;
            const img = new Image();
            img.src = el.layout.images[0].source;
            await img.decode();
            const ticks = [...el.querySelectorAll('.ytick text')].map((t) => {
                const b = t.getBoundingClientRect();
                return {text: t.textContent, top: b.top, bottom: b.bottom, size: parseFloat(t.style.fontSize)};
            });
            return {rows: h.g.z.length, arms: h.arms, imageRows: img.naturalHeight, rowPx: ya._length / h.arms.length,
                    ticks, values: h.g.z.flat().filter((v) => v !== null)};
        }""", m)
        # Every arm a row of the image, at least 3 px tall.
        assert got["arms"] == arms and got["rows"] == got["imageRows"] == n_arms, m
        assert got["rowPx"] >= 3, m
        # Every 4th arm labelled (64 labels), in a legible size, none overlapping the next.
        ticks = got["ticks"]
        assert [t["text"] for t in ticks] == arms[::4], m
        assert all(t["size"] >= 8 for t in ticks), m
        ticks.sort(key=lambda t: t["top"])
        assert all(b["top"] - a["bottom"] >= 2 for a, b in itertools.pairwise(ticks)), m
        if m == "pass_partial":
            assert got["values"] and all(0 <= v <= 1 for v in got["values"])
            assert max(got["values"]) - min(got["values"]) > 0.5  # arms out of reach and saturated: ~0; learning: most
    # Hover over an unlabelled row names its arm; the profile's cell reads as a share with its min and max.
    for m, k in (("accuracy", 137), ("pass_partial", 201)):
        el = page.locator(f"#heat-{m}")
        el.scroll_into_view_if_needed()
        x, y = page.evaluate("""([m, k]) => {
            const el = document.getElementById('heat-' + m), fl = el._fullLayout, b = el.getBoundingClientRect();
            return [b.left + fl.xaxis._offset + fl.xaxis._length / 2, b.top + fl.yaxis._offset + fl.yaxis.l2p(k)];
        }""", [m, k])
        page.mouse.move(x, y)
        tip = page.locator(f"#heat-{m} .heat-tip")
        expect(tip).to_be_visible(timeout=WAIT_MS)
        assert tip.locator("b").inner_text() == arms[k]
        if m == "pass_partial":
            assert "%" in tip.inner_text() and "min " in tip.inner_text() and "max " in tip.inner_text()
    page.mouse.move(0, 0)
    # A live step extends the profile (its share from the step's pass_hist).
    live = {"v": 1, "type": "step", "run": run, "seq": steps + 2, "ts": 1_700_000_000.0 + steps, "step": steps,
            "metrics": {}, "dropped": 0,
            "arms": [{"arm": a, "p": 1 / n_arms, "n_step": 0, "n_total": 0, "pass_hist": [1, 2, 3, 4, 5]}
                     for a in arms]}
    xadd(rds, settings, live)
    page.wait_for_function(
        "(s) => { const h = document.getElementById('heat-pass_partial')._heat;"
        " return h.g.custom[0][h.g.x.length - 1][1] >= s; }", arg=steps, timeout=WAIT_MS)
    assert pages.errors == []
    page.locator("#heatmaps").screenshot(path="test-output/screenshots/heatmaps_256_arms.png")


def test_heatmaps_follow_the_arms_shown(app_server: LiveServer, pages: PageWatch, engine: Engine) -> None:  # noqa: F811
    """Unchecking an arm, "none" and "all" redraw the heatmaps at once with the arms shown, their boxes
    the height of the rows drawn (no gap), and after "none" (a note) the heatmaps draw again."""
    n_arms = 16
    arms = curriculum_run(engine, "heat-toggle", n_arms, 300)
    page = pages.new_page()
    page.goto("/runs/heat-toggle")
    heatmaps_drawn(page, n_arms, ["probability"])
    rows = "() => { const h = document.getElementById('heat-probability')._heat; return h ? h.arms : null; }"
    page.locator(f'input.arm-toggle[value="{arms[3]}"]').uncheck()
    page.wait_for_function(f"() => ({rows})()?.length === {n_arms - 1}", timeout=WAIT_MS)
    assert arms[3] not in page.evaluate(rows)
    box = page.evaluate("() => { const el = document.getElementById('heat-probability'),"
                        " svg = el.querySelector('.main-svg');"
                        " return [el.getBoundingClientRect().height, svg.getBoundingClientRect().height]; }")
    assert box[0] <= box[1] + 2  # the box is the chart's height: nothing reserved for the hidden arm
    page.click("#arms-none")
    expect(page.locator("#heat-probability")).to_have_text("no arm shown", timeout=WAIT_MS)
    page.click("#arms-all")
    page.wait_for_function(f"() => ({rows})()?.length === {n_arms}", timeout=WAIT_MS)
    assert page.locator("#heat-probability .main-svg").count() > 0  # drawn again, not left as the note
