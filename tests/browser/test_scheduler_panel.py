"""The scheduler panel of the run page (templates/_scheduler_panel.html, static/js/run/scheduler.js) in headless
Chromium against the real server and a real agent: a DUMP temperature change previewed, sent with its
confirmation, and the agent's probabilities then exactly the previewed ones; the panel on a phone."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from server.settings import Settings
from tests.server.conftest import REDIS_URL, LiveServer, ingest_docs, run_start, step_msg, wait_for
from trainer_agent import CurriculumAgent, StepStats

from .conftest import SCREENSHOTS, AgentLoop, PageWatch, live_page
from .test_dashboard import add_operator_and_viewer, log_in

pytestmark = pytest.mark.browser

WAIT_MS = 20_000


def _preview_rows(page: Page) -> dict[str, tuple[float, float]]:
    """arm -> (p now, p after) as the preview table holds them (full precision in its data attributes)."""
    rows = page.eval_on_selector_all(
        "#sched-preview-rows tr", "(rs) => rs.map((r) => [r.dataset.schedArm, +r.dataset.current, +r.dataset.preview])")
    return {arm: (now, after) for arm, now, after in rows}


def _send(page: Page) -> list[str]:
    """Click Send, accepting its confirmation; the confirmations' texts."""
    dialogs: list[str] = []

    def accept(d: Any) -> None:
        dialogs.append(d.message)
        d.accept()

    page.on("dialog", accept)
    page.locator("#sched-send").click()
    return dialogs


def _until_acked(loop: AgentLoop, command_id: str) -> StepStats:
    """Step without observations (the scheduler learns nothing) until the command's ack comes back."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = loop.agent.end_step()
        if any(a.id == command_id for a in stats.acks):
            return stats
        time.sleep(0.05)
    raise AssertionError(f"command {command_id} never applied")


def _snapshot_step(app_server: LiveServer, run: str) -> int:
    """The step of the run's latest scheduler snapshot on the server (-2 before the run is stored)."""
    r = app_server.client.get(f"/api/runs/{run}/scheduler")
    return int(r.json()["step"]) if r.status_code == 200 else -2


def _quiet_agent(app_server: LiveServer, agents: Callable[..., AgentLoop], run: str) -> AgentLoop:
    """An agent that learned for 30 steps and stopped, its latest scheduler state on the server."""
    loop = agents(run, hz=12.0, steps=30)
    wait_for(lambda: not loop.thread.is_alive(), timeout=30)
    # The state is streamed at most once a second: one more step, with nothing observed (nothing changes),
    # sends the state the preview then starts from.
    time.sleep(1.1)
    loop.agent.end_step()
    wait_for(lambda: _snapshot_step(app_server, run) == loop.agent.step - 1)
    return loop


def test_a_temperature_change_moves_the_probabilities_as_previewed(
    app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "sched-panel"
    loop = _quiet_agent(app_server, agents, run)
    agent = loop.agent
    page = live_page(app_server, pages, run)
    expect(page.locator("#sched-now")).to_contain_text("dump (", timeout=WAIT_MS)
    expect(page.locator("#sched-now")).to_contain_text("temperature=0.1")
    temperature = page.locator("#sched-param-temperature")
    expect(temperature).to_have_value("0.1")
    expect(page.locator("#sched-send")).to_be_disabled()  # nothing previewed yet

    temperature.fill("0.3")
    page.locator("#sched-reason").fill("flatter: kk6 starves")
    page.locator("#sched-preview-btn").click()
    preview = page.locator("#sched-preview")
    expect(preview).to_be_visible(timeout=WAIT_MS)
    assert int(preview.get_attribute("data-ms") or "99999") < 1000  # asked and answered within a second
    assert int(preview.get_attribute("data-snapshot-step") or "-1") == agent.step - 1
    expect(page.locator("#sched-preview-caption")).to_contain_text("Set dump's temperature to 0.3")
    rows = _preview_rows(page)
    now = agent.probabilities()
    assert set(rows) == set(now)
    for arm, (current, _) in rows.items():
        assert current == pytest.approx(now[arm], abs=1e-12)
    # A hotter softmax is flatter: the favourite loses, the least likely arm gains.
    top, bottom = max(now, key=lambda a: now[a]), min(now, key=lambda a: now[a])
    assert rows[top][1] < rows[top][0] - 0.01 and rows[bottom][1] > rows[bottom][0] + 0.01
    expect(page.locator("#sched-send")).to_be_enabled()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#sched").screenshot(path=str(SCREENSHOTS / "scheduler-panel-desktop.png"))

    dialogs = _send(page)
    status = page.locator("#sched-status")
    expect(status).to_have_text("sent; pending until the trainer applies it", timeout=WAIT_MS)
    assert dialogs == ["Set dump's temperature to 0.3?\nReason: flatter: kk6 starves\nApplied at the next step."]
    command_id = status.get_attribute("data-command-id")
    assert command_id

    # Nothing learned between the preview and the command: the agent puts exactly the previewed numbers in
    # force, in the record of the step that applied it.
    stats = _until_acked(loop, command_id)
    applied = dict(zip(agent.arms, stats.p.tolist(), strict=True))
    for arm, (_, after) in rows.items():
        assert after == pytest.approx(applied[arm], abs=1e-12)
        assert after == pytest.approx(agent.probabilities()[arm], abs=1e-12)
    assert agent.scheduler.params()["temperature"] == 0.3

    # The page follows: the step's p in the arms table, what is in force, the history.
    for arm, (_, after) in rows.items():
        expect(page.locator(f'tr[data-arm="{arm}"] .arm-p')).to_have_text(f"{after:.3f}", timeout=WAIT_MS)
    expect(page.locator("#sched-now")).to_contain_text("temperature=0.3", timeout=WAIT_MS)
    first = page.locator("#sched-history tr").first
    expect(first).to_contain_text("set temperature=0.3")
    expect(first).to_contain_text(f"applied at step {stats.step}")
    expect(first).to_contain_text("flatter: kk6 starves")
    expect(status).to_contain_text(f"applied at step {stats.step}")
    expect(temperature).to_have_value("0.3")  # the form starts again from what is in force
    page.locator("#sched").screenshot(path=str(SCREENSHOTS / "scheduler-panel-desktop-applied.png"))


def test_the_panel_on_a_phone(app_server: LiveServer, pages: PageWatch, agents: Callable[..., AgentLoop]) -> None:
    run = "sched-phone"
    _quiet_agent(app_server, agents, run)
    page = live_page(app_server, pages, run, viewport={"width": 390, "height": 844})
    expect(page.locator("#sched-param-temperature")).to_have_value("0.1", timeout=WAIT_MS)
    page.locator("#sched-kind").select_option("switch")
    expect(page.locator("#sched-target")).to_have_value("balanced")
    page.locator("#sched-target").select_option("sec")
    expect(page.locator("#sched-param-alpha")).to_have_value("")
    page.locator("#sched-param-alpha").fill("0.5")
    page.locator("#sched-preview-btn").click()
    expect(page.locator("#sched-preview")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#sched-preview-caption")).to_contain_text("switched dump -> sec")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#sched").screenshot(path=str(SCREENSHOTS / "scheduler-panel-phone.png"))
    page.emulate_media(color_scheme="dark")  # the theme follows the system's (static/js/theme.js)
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    page.locator("#sched").screenshot(path=str(SCREENSHOTS / "scheduler-panel-phone-dark.png"))


def test_an_ended_run_shows_its_scheduler_and_history_but_no_command(app_server: LiveServer, pages: PageWatch,
                                                                     engine: Engine) -> None:
    arms = ["kk3", "kk4"]
    steps = [step_msg("sched-ended", 2 + s, s, arms) for s in range(5)]
    ingest_docs(engine, [run_start("sched-ended", 1, arms), *steps,
                         {"v": 1, "type": "run_end", "run": "sched-ended", "seq": 9, "ts": time.time(),
                          "status": "finished", "step": 4}])
    page = pages.new_page()
    page.goto("/runs/sched-ended")
    expect(page.locator("#sched-note")).to_have_text(
        "This run has ended (finished): the scheduler can no longer be changed.")
    expect(page.locator("#sched-form")).to_be_hidden()
    expect(page.locator("#sched-now")).to_contain_text("dump")
    expect(page.locator("#sched-history")).to_contain_text("no scheduler command yet")


def test_a_stale_run_shows_the_panel_disabled_with_the_reason(app_server: LiveServer, pages: PageWatch,
                                                              engine: Engine) -> None:
    arms = ["kk3", "kk4"]
    # Stored from stream entries of 1970 (ingest_docs' ids): not heard from since, so stale.
    ingest_docs(engine, [run_start("sched-quiet", 1, arms),
                         *[step_msg("sched-quiet", 2 + s, s, arms) for s in range(5)]])
    page = pages.new_page()
    page.goto("/runs/sched-quiet")
    expect(page.locator("#run-status")).to_have_text("stale")
    expect(page.locator("#sched-note")).to_contain_text("stale): scheduler commands are off until it sends a step")
    expect(page.locator("#sched-preview-btn")).to_be_disabled()
    expect(page.locator("#sched-send")).to_be_disabled()
    assert "stale" in (page.locator("#sched-preview-btn").get_attribute("title") or "")


def test_the_preview_of_64_arms_stays_readable_on_a_phone(app_server: LiveServer, pages: PageWatch,
                                                          settings: Settings, tmp_path: Path) -> None:
    run = "sched-64"
    arms = [f"arith{i:02d}" if i % 2 else f"logic{i:02d}" for i in range(64)]
    rates = np.linspace(0.02, 0.98, 64)
    agent = CurriculumAgent(run, arms, scheduler="dump", redis_url=REDIS_URL, key_prefix=settings.key_prefix,
                            spool_dir=tmp_path / "spool", heartbeat_s=0.5, scheduler_snapshot_s=0.0)
    try:
        rng = np.random.default_rng(0)
        for _ in range(6):
            picked = [a for a in arms for _ in range(4)]
            rewards = [float(rng.random() < rates[arms.index(a)]) for a in picked]
            agent.observe(picked, rewards, groups=[i // 4 for i in range(len(picked))])
            agent.end_step()
        wait_for(lambda: _snapshot_step(app_server, run) == agent.step - 1)
        page = live_page(app_server, pages, run, viewport={"width": 390, "height": 844})
        temperature = page.locator("#sched-param-temperature")
        expect(temperature).to_have_value("0.1", timeout=WAIT_MS)
        temperature.fill("0.05")
        page.locator("#sched-preview-btn").click()
        preview = page.locator("#sched-preview")
        expect(preview).to_be_visible(timeout=WAIT_MS)
        assert int(preview.get_attribute("data-ms") or "99999") < 1000
        rows = _preview_rows(page)
        now = agent.probabilities()
        assert set(rows) == set(arms)
        assert all(current == pytest.approx(now[arm], abs=1e-12) for arm, (current, _) in rows.items())
        # 64 rows scroll inside the preview's box, which keeps to the screen's width.
        box = page.locator(".sched-preview-scroll")
        size = box.evaluate("(el) => [el.scrollHeight, el.clientHeight, el.getBoundingClientRect().right]")
        assert size[0] > size[1] and size[1] < 844 and size[2] <= 390
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#sched").screenshot(path=str(SCREENSHOTS / "scheduler-panel-64-arms-phone.png"))
    finally:
        agent.close()


def test_a_logged_in_operator_freezes_from_the_panel_and_a_viewer_only_reads_it(
    app_server: LiveServer, settings: Settings, pages: PageWatch, agents: Callable[..., AgentLoop]
) -> None:
    run = "sched-login"
    add_operator_and_viewer(app_server, settings)
    agents(run, hz=6.0)
    wait_for(lambda: _snapshot_step(app_server, run) >= 0)

    page = pages.new_page()
    log_in(page, "olga", "olga-password")
    page.goto(f"/runs/{run}")
    expect(page.locator("#live-state")).to_contain_text("live", timeout=WAIT_MS)
    expect(page.locator("#sched-kind option[value=unfreeze]")).to_be_disabled(timeout=WAIT_MS)
    page.locator("#sched-kind").select_option("freeze")
    page.locator("#sched-preview-btn").click()
    expect(page.locator("#sched-preview-caption")).to_contain_text("Freeze the dump scheduler", timeout=WAIT_MS)
    dialogs = _send(page)
    # The cookie session's post carries the page's CSRF token (the JSON API refuses it otherwise).
    expect(page.locator("#sched-history tr").first).to_contain_text(re.compile(r"applied at step \d+"),
                                                                    timeout=WAIT_MS)
    assert dialogs == ["Freeze the dump scheduler (hold the probabilities in force)?\nApplied at the next step."]
    [entry] = app_server.client.get(f"/api/runs/{run}/scheduler").json()["history"]
    assert (entry["kind"], entry["actor"], entry["status"]) == ("freeze", "olga", "applied")
    expect(page.locator("#sched-now")).to_contain_text("frozen", timeout=WAIT_MS)
    expect(page.locator("#sched-kind option[value=freeze]")).to_be_disabled()

    viewer = pages.new_page()
    log_in(viewer, "vera", "vera-password")
    viewer.goto(f"/runs/{run}")
    expect(viewer.locator("#sched-now")).to_contain_text("frozen", timeout=WAIT_MS)
    expect(viewer.locator("#sched-history tr").first).to_contain_text("freeze")
    assert viewer.locator("#sched-form").count() == 0
