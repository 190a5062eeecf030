"""The run page's evaluation chart in headless Chromium, fed by a live agent's `log_eval`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.server.conftest import LiveServer, wait_for

from .conftest import SCREENSHOTS, AgentLoop, PageWatch, live_page, screenshot

pytestmark = pytest.mark.browser

WAIT_MS = 20_000
ARMS = ["kk3", "kk4", "kk5", "kk6"]
# The eval chart's traces: [name, x, y, line width, visible, showlegend].
TRACES = """() => (document.getElementById('chart-eval').data || []).map((t) =>
    [t.name, t.x, t.y, t.line.width, t.visible, t.showlegend])"""


# Notes the wall-clock time at which each step first has a point on the eval chart's mean line.
SEEN = """() => {
    window.__evalSeen = {};
    const el = document.getElementById('chart-eval');
    const look = () => {
        for (const t of el.data || []) {
            if (t.name !== 'mean over arms') continue;
            for (const x of t.x) if (!(x in window.__evalSeen)) window.__evalSeen[x] = Date.now();
        }
        requestAnimationFrame(look);
    };
    look();
}"""


def has_point(page: Page, name: str, step: int) -> None:
    page.wait_for_function(
        "([name, step]) => { const el = document.getElementById('chart-eval');"
        " return document.getElementById('eval-name').value === name && el.data"
        " && el.data.some((t) => t.name === 'mean over arms' && t.x.includes(step)); }",
        arg=[name, step], timeout=WAIT_MS, polling="raf",
    )


def test_empty_state_then_live_evaluations(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "br-eval"
    loop = agents(run, hz=5)
    page = live_page(app_server, pages, run)
    expect(page.locator("#eval-empty")).to_be_visible()
    expect(page.locator("#eval-empty")).to_have_text("no evaluation yet: send one with agent.log_eval(...)")
    expect(page.locator("#chart-eval")).to_be_hidden()
    expect(page.locator("#eval-picker")).to_be_hidden()

    # From the agent's call to the point on the chart, through Redis, the ingest worker, SQL, pub/sub
    # and SSE: a fresh evaluation each time, the first one also drawing the chart for the first time.
    # The page notes (wall clock, every frame) when each step's point is first in the chart: the
    # test's own wait for it returns later on a busy machine (this process also runs the server).
    page.evaluate(SEEN)
    waits = []
    for k in range(5):
        step = 10 * k
        accs = {"kk3": 0.5 + 0.1 * k, "kk4": (3 + k, 10), "kk5": {"correct": k, "total": 10}, "kk6": 0.05 * k}
        t0 = time.time()
        loop.agent.log_eval(accs, n=10, name="heldout", step=step)
        has_point(page, "heldout", step)
        waits.append(page.evaluate(f"() => window.__evalSeen[{step}]") / 1000 - t0)
    SCREENSHOTS.parent.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS.parent / "eval_latency.txt").write_text(
        f"log_eval to the point on the run page's chart: median {statistics.median(waits) * 1000:.0f} ms,"
        f" max {max(waits) * 1000:.0f} ms ({', '.join(f'{w * 1000:.0f}' for w in waits)} ms)\n"
    )
    assert max(waits) < 1.0, waits
    expect(page.locator("#eval-empty")).to_be_hidden()

    traces = page.evaluate(TRACES)
    assert [t[0] for t in traces] == [*ARMS, "mean over arms"]
    steps = [0, 10, 20, 30, 40]
    assert all(t[1] == steps for t in traces)
    want = {
        "kk3": [0.5, 0.6, 0.7, 0.8, 0.9], "kk4": [0.3, 0.4, 0.5, 0.6, 0.7], "kk5": [0.0, 0.1, 0.2, 0.3, 0.4],
        "kk6": [0.0, 0.05, 0.1, 0.15, 0.2],
    }
    for name, _, y, width, visible, showlegend in traces[:4]:
        assert y == pytest.approx(want[name]) and width == 1.5 and visible is True
        assert showlegend is False  # the page's "Arms shown" names the run's arms
    mean = traces[4]
    assert mean[2] == pytest.approx([sum(v[i] for v in want.values()) / 4 for i in range(5)])
    assert mean[3] == 3.5  # bold
    layout = page.evaluate("() => { const l = document.getElementById('chart-eval').layout;"
                           " return [l.xaxis.title.text, l.yaxis.title.text, l.yaxis.range, l.shapes.length]; }")
    assert layout == ["step", "accuracy", [0, 1.02], 0]
    # The run's arms have the colours of the page's legend.
    colours = page.evaluate("() => document.getElementById('chart-eval').data.slice(0, 4).map((t) => t.line.color)")
    assert colours == page.evaluate("() => [0, 1, 2, 3].map((i) => SB.color(i))")
    expect(page.locator("#eval-summary")).to_have_text("heldout at step 40: mean 0.550")

    # A target: a dashed line, and the summary says when the mean first reached it (0.4625 at step 30);
    # kept on reload.
    page.fill("#eval-target", "0.4")
    page.wait_for_function("() => document.getElementById('chart-eval').layout.shapes.length === 1", timeout=WAIT_MS)
    shape = page.evaluate("() => document.getElementById('chart-eval').layout.shapes[0]")
    assert (shape["y0"], shape["y1"], shape["line"]["dash"], shape["xref"]) == (0.4, 0.4, "dash", "paper")
    expect(page.locator("#eval-summary")).to_have_text("heldout at step 40: mean 0.550 · target 0.4 reached at step 30")
    page.fill("#eval-target", "1.5")  # refused: the line stays
    assert page.evaluate("() => document.getElementById('eval-target').validity.customError") is True
    assert page.evaluate("() => document.getElementById('chart-eval').layout.shapes[0].y0") == 0.4

    # Hiding an arm in "Arms shown" hides it here too; the mean is still over every arm.
    page.uncheck('.arm-toggle[value="kk6"]')
    assert [t[4] for t in page.evaluate(TRACES)] == [True, True, True, "legendonly", True]
    assert page.evaluate(TRACES)[4][2] == pytest.approx(mean[2])
    page.check('.arm-toggle[value="kk6"]')

    # A second evaluation set, with an arm that is no training arm: a picker appears; the page follows
    # the set evaluated last until one is chosen.
    loop.agent.log_eval({"kk3": 0.9, "held-out/kk8": 0.2}, name="greedy", step=50)
    has_point(page, "greedy", 50)
    expect(page.locator("#eval-picker")).to_be_visible()
    assert page.evaluate("() => [...document.getElementById('eval-name').options].map((o) => o.value)") == [
        "greedy", "heldout",
    ]
    traces = page.evaluate(TRACES)
    assert [(t[0], t[2], t[5]) for t in traces] == [
        ("kk3", [0.9], False), ("held-out/kk8", [0.2], True), ("mean over arms", [pytest.approx(0.55)], None),
    ]
    page.select_option("#eval-name", "heldout")
    page.wait_for_function("() => document.getElementById('chart-eval').data.length === 5", timeout=WAIT_MS)
    loop.agent.log_eval({"kk3": 0.95}, name="greedy", step=60)  # arrives, but the chosen set stays
    page.wait_for_function("() => [...document.getElementById('eval-name').options].length === 2", timeout=WAIT_MS)
    time.sleep(0.5)
    assert page.evaluate("() => document.getElementById('eval-name').value") == "heldout"
    assert page.evaluate("() => document.getElementById('chart-eval').data.length") == 5

    page.reload()
    page.wait_for_function("() => { const el = document.getElementById('chart-eval');"
                           " return el.data && el.layout.shapes.length === 1; }", timeout=WAIT_MS)
    assert page.input_value("#eval-target") == "0.4"
    # After a reload, the set evaluated last, with the points sent while the page was open.
    assert page.evaluate("() => document.getElementById('eval-name').value") == "greedy"
    assert page.evaluate(TRACES)[0][:2] == ["kk3", [50, 60]]

    for width, height in ((390, 844), (1440, 900)):
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(400)  # Plotly follows the window's size
        # On a phone as on a desktop, the chart fits the width and starts in the first screen.
        box = page.locator("#chart-eval").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width and box["y"] < height
        # And the drawing stays inside its figure after the resize.
        svg, figure = page.locator("#chart-eval .main-svg").first.bounding_box(), page.locator("#eval").bounding_box()
        assert svg is not None and figure is not None and svg["y"] + svg["height"] <= figure["y"] + figure["height"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"run_page_eval_{width}x{height}.png"))  # the first screen
    assert pages.outside() == []


def test_full_page_screenshot_with_evaluations(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "br-eval-shot"
    loop = agents(run, hz=0, steps=60)
    for step in range(0, 61, 10):
        loop.agent.log_eval({a: min(1.0, 0.2 * i + step / 150) for i, a in enumerate(ARMS)}, n=32, name="heldout",
                            step=step)
    wait_for(lambda: len(app_server.client.get(f"/api/runs/{run}/evals").json().get("evals", [])) == 28)
    page = live_page(app_server, pages, run)
    has_point(page, "heldout", 60)
    screenshot(page, "run_page_eval_full")
