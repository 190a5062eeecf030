"""Managing runs in headless Chromium: tags, note and archive from the run page, the runs table's filter
and sort, deleting a run through its confirmation; the runs page on a phone and on a desktop."""

from __future__ import annotations

import time

import pytest
import redis
from playwright.sync_api import Page, expect

from server.settings import Settings
from tests.pages.helpers import start_run
from tests.server.conftest import LiveServer, wait_for, xadd

from .conftest import SCREENSHOTS, PageWatch, screenshot

pytestmark = pytest.mark.browser

WAIT_MS = 20_000


def finish(srv: LiveServer, rds: redis.Redis, settings: Settings, run: str, step: int,
           status: str = "finished") -> None:
    xadd(rds, settings, {"v": 1, "type": "run_end", "run": run, "seq": 1000, "ts": time.time(), "status": status,
                         "step": step})
    wait_for(lambda: srv.client.get(f"/api/runs/{run}").json()["status"] == status)


def evaluate(rds: redis.Redis, settings: Settings, run: str, seq: int, step: int, accs: list[float]) -> None:
    xadd(rds, settings, {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": time.time(), "name": "heldout",
                         "step": step, "arms": [{"arm": f"kk{3 + i}", "accuracy": a} for i, a in enumerate(accs)]})


def test_manage_a_run_then_delete_it(
    app_server: LiveServer, rds: redis.Redis, settings: Settings, pages: PageWatch
) -> None:
    start_run(app_server, rds, settings, "br-keep", steps=3)
    start_run(app_server, rds, settings, "br-del", steps=6, config={"tags": ["from-config"]})
    finish(app_server, rds, settings, "br-keep", 2)
    page = pages.new_page()
    page.goto("/runs/br-del")

    # Folded under the header, which shows the tags and note: opened to edit them.
    assert not page.locator(".manage-tags input[name=tags]").is_visible()
    page.click("details.manage-box > summary")
    page.fill(".manage-tags input[name=tags]", "ablation, keep-me")
    page.click(".manage-tags button[type=submit]")
    # The header, swapped out of band, shows the chips at once.
    expect(page.locator("#run-header .tag")).to_have_text(["from-config", "ablation", "keep-me"], timeout=WAIT_MS)
    page.click('button.chip[aria-label="remove tag ablation"]')
    expect(page.locator("#run-header .tag")).to_have_text(["from-config", "keep-me"], timeout=WAIT_MS)
    page.fill(".manage-note textarea", "diverged at step 4")
    page.click(".manage-note button[type=submit]")
    expect(page.locator("#run-note")).to_have_text("diverged at step 4", timeout=WAIT_MS)
    page.click(".manage-archive button[type=submit]")
    expect(page.locator("#run-archived")).to_have_text("archived", timeout=WAIT_MS)
    expect(page.locator(".manage-archive button")).to_have_text("Unarchive")
    screenshot(page, "run_page_manage")
    # The header's own refresh keeps them.
    page.wait_for_timeout(5500)
    expect(page.locator("#run-header .tag")).to_have_text(["from-config", "keep-me"])

    # The runs list hides the archived run; the filter shows it, and the URL says so.
    page.goto("/")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(1)
    page.select_option("select[name=archived]", "only")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator('tr[data-run="br-del"] td.note')).to_have_text("diverged at step 4")
    assert "archived=only" in page.url
    page.select_option("select[name=archived]", "all")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(2, timeout=WAIT_MS)
    page.click('th[data-sort="steps"] a')
    expect(page.locator('th[data-sort="steps"]')).to_have_attribute("aria-sort", "descending", timeout=WAIT_MS)
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(2)
    assert [page.locator("#runs-table tbody tr[data-run]").nth(i).get_attribute("data-run") for i in (0, 1)] == [
        "br-del", "br-keep"]
    assert "sort=steps" in page.url and "archived=all" in page.url
    page.click('th[data-sort="steps"] a')
    expect(page.locator('th[data-sort="steps"]')).to_have_attribute("aria-sort", "ascending", timeout=WAIT_MS)
    expect(page.locator("#runs-table tbody tr[data-run]").first).to_have_attribute("data-run", "br-keep")
    # A refresh of the table keeps the sort and the filter.
    page.wait_for_timeout(3500)
    expect(page.locator("#runs-table tbody tr[data-run]").first).to_have_attribute("data-run", "br-keep")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(2)

    # Delete: the run page's link, a confirmation that names the run and what goes, then the list.
    page.goto("/runs/br-del")
    page.click("details.manage-box > summary")
    page.click("#delete-link")
    expect(page.locator("#delete-confirm h1")).to_have_text("Delete run br-del?")
    expect(page.locator('#delete-what li[data-kind="arm step rows"]')).to_have_text("24 arm step rows")
    expect(page.locator("#delete-running")).to_contain_text("This run is running.")
    screenshot(page, "run_delete_confirm")
    page.click("#delete-confirm-button")
    expect(page.locator("#deleted-notice")).to_have_text("Run br-del was deleted.", timeout=WAIT_MS)
    assert page.url.endswith("/?deleted=br-del")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(1)
    assert app_server.client.get("/api/runs/br-del").status_code == 404
    assert rds.exists(settings.keys.control("br-del"), settings.keys.control_applied("br-del")) == 0
    assert pages.outside() == []


def phone_and_desktop(pages: PageWatch, width: int, height: int) -> Page:
    ctx = pages.browser.new_context(base_url=pages.base_url, viewport={"width": width, "height": height})
    pages.contexts.append(ctx)
    page = ctx.new_page()
    page.on("pageerror", lambda err: pages.errors.append(str(err)))
    return page


def test_runs_page_on_a_phone_and_a_desktop(
    app_server: LiveServer, rds: redis.Redis, settings: Settings, pages: PageWatch
) -> None:
    c = app_server.client
    for i, (scheduler, status) in enumerate([("dump", "finished"), ("uniform", "finished"), ("sec", "failed"),
                                            ("learning_progress", "interrupted"), ("balanced", None),
                                            ("dump", None)]):
        run = f"shot-{scheduler}-{i}"
        start_run(app_server, rds, settings, run, steps=4 + 3 * i, scheduler=scheduler, project="grpo-math",
                  config={"tags": ["qwen2.5-0.5b", "gsm8k"] if i % 2 else ["qwen2.5-1.5b"]})
        evaluate(rds, settings, run, 500, 0, [0.2 + 0.05 * i, 0.1, 0.05, 0.01])
        evaluate(rds, settings, run, 501, 3 + 3 * i, [0.5 + 0.05 * i, 0.4, 0.2, 0.1])
        if status:
            finish(app_server, rds, settings, run, 3 + 3 * i, status)
        if i % 3 == 0:
            c.patch(f"/api/runs/{run}", json={"add_tags": ["baseline"],
                                              "note": "learning rate 1e-6, 8 generations per prompt; compare to run 3"})
    wait_for(lambda: all(x["final_eval"] is not None for x in c.get("/api/runs").json()))
    for width, height in ((390, 844), (1440, 900)):
        page = phone_and_desktop(pages, width, height)
        page.goto("/?sort=final&order=desc")
        expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(6)
        # The page never scrolls sideways; on a phone the table scrolls inside itself.
        page_width = page.evaluate("() => document.documentElement.scrollWidth")
        assert page_width <= width, (width, page_width)
        scroll = page.evaluate("() => { const s = document.querySelector('.table-scroll');"
                               " return [s.scrollWidth, s.clientWidth]; }")
        if width == 390:
            assert scroll[0] > scroll[1], scroll
            page.evaluate("() => { document.querySelector('.table-scroll').scrollLeft = 10000; }")
            assert page.evaluate("() => window.scrollX") == 0
            page.evaluate("() => { document.querySelector('.table-scroll').scrollLeft = 0; }")
        else:
            assert scroll[0] <= scroll[1] + 1, scroll
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"runs_{width}x{height}.png"), full_page=True)
        if width == 390:  # scrolled to the right: the run's name stays
            page.evaluate("() => { document.querySelector('.table-scroll').scrollLeft = 600; }")
            page.screenshot(path=str(SCREENSHOTS / f"runs_{width}x{height}_scrolled.png"), full_page=True)
