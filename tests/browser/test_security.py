"""Issue 16 in the browser: every page works under the Content-Security-Policy (no inline script; the
`pages` fixture fails a test on any CSP report), a run whose name holds '/' and other characters opens and
draws, and another site cannot frame the steering forms."""

from __future__ import annotations

import re
from urllib.parse import quote

import redis
from playwright.sync_api import expect

from server.settings import Settings
from tests.pages.helpers import ARMS
from tests.server.conftest import LiveServer, run_start, step_msg, wait_for, xadd

from .conftest import PageWatch
from .test_dashboard import WAIT_MS, charts_loaded

ODD = "team/exp 1?#%"


def test_every_page_works_under_the_csp(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                        pages: PageWatch) -> None:
    for run in (ODD, "plain"):
        xadd(rds, settings, run_start(run, 1, ARMS), *(step_msg(run, s + 2, s, ARMS) for s in range(6)))
    wait_for(lambda: all(app_server.client.get(f"/api/runs/{quote(r, safe='')}").status_code == 200
                         for r in (ODD, "plain")))
    page = pages.new_page()
    page.goto("/")
    expect(page.locator("#runs-table tbody tr[data-run]")).to_have_count(2, timeout=WAIT_MS)
    page.locator("td.run-name a", has_text=ODD).click()  # the runs table's own link
    expect(page.locator("#run-header h1")).to_contain_text(ODD, timeout=WAIT_MS)
    charts_loaded(page)
    expect(page.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    # A pin from the page (htmx, its confirm dialog) reaches the run with the odd name.
    page.on("dialog", lambda d: d.accept())
    form = page.locator('form[data-arm="kk4"][data-kind="pin"]')
    form.locator("input[name=value]").fill("0.5")
    form.locator("button[type=submit]").click()
    expect(page.locator('form[data-arm="kk4"][data-kind="pin"] .form-message')).to_have_attribute(
        "data-command-id", re.compile(r"^[0-9a-f-]{36}$"), timeout=WAIT_MS)
    for path in (f"/runs/{quote(ODD, safe='')}/manage", f"/runs/{quote(ODD, safe='')}/delete", "/login"):
        page.goto(path)
        expect(page.locator("main")).to_be_visible()
    page.goto(f"/compare?runs={quote(ODD, safe='')},plain")
    page.wait_for_function(
        "() => { const el = document.getElementById('chart-overlay'); return el && el.data && el.data.length >= 2; }",
        timeout=WAIT_MS,
    )
    assert pages.outside() == []


def test_another_site_cannot_frame_the_run_page(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                                pages: PageWatch) -> None:
    xadd(rds, settings, run_start("framed", 1, ARMS), step_msg("framed", 2, 0, ARMS))
    wait_for(lambda: app_server.client.get("/api/runs/framed").status_code == 200)
    page = pages.new_page()
    page.set_content(f'<iframe id="f" src="{app_server.url}/runs/framed" width="800" height="600"></iframe>')
    page.wait_for_timeout(1500)
    (child,) = page.frames[1:]
    assert child.locator("#run-header").count() == 0 and child.locator("form.cmd").count() == 0
    # Chromium says why: the refusal is a CSP report, the one this test expects.
    assert any("frame-ancestors" in m for m in pages.blocked), pages.blocked
    pages.blocked.clear()


def test_the_api_browser_runs_from_the_package_under_the_csp(app_server: LiveServer, pages: PageWatch) -> None:
    page = pages.new_page()
    page.goto("/docs")
    # Swagger UI drew the API from /openapi.json: its title and an operation of the runs list.
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Steerboard", timeout=WAIT_MS)
    expect(page.locator(".opblock-summary-path", has_text="/api/runs/{run}/metrics").first).to_be_visible()
    assert pages.outside() == []  # nothing from a CDN
    r = app_server.client.get("/docs")
    assert "script-src 'self';" in r.headers["content-security-policy"] + ";"
    assert "'unsafe-inline'" not in r.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    assert app_server.client.get("/redoc").status_code == 404
