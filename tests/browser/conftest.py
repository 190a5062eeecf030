"""Browser tests: real headless Chromium (Debian's, through Playwright) against the real server
(uvicorn, in-process ingest worker), real Redis, and a real CurriculumAgent stepping in a thread."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from server.settings import Settings
from tests.server.conftest import (  # noqa: F401 (fixtures used by the tests here)
    REDIS_URL,
    ROOT,
    LiveServer,
    app_server,
    db_url,
    empty_db,
    engine,
    prefix,
    rds,
    settings,
    wait_for,
)
from trainer_agent import CurriculumAgent

SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# Pass rate of each arm: the agent's completions are Bernoulli draws of these.
PASS_RATE = {"kk3": 0.8, "kk4": 0.55, "kk5": 0.3, "kk6": 0.1}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (make browser)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class PageWatch:
    """Pages opened by a test, and every URL they requested (to prove none left 127.0.0.1)."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.browser, self.base_url = browser, base_url
        self.urls: list[str] = []
        self.errors: list[str] = []  # uncaught JavaScript errors
        self.blocked: list[str] = []  # what the Content-Security-Policy refused (an inline script, eval...)
        self.contexts: list[Any] = []

    def new_page(self) -> Page:
        ctx = self.browser.new_context(base_url=self.base_url, viewport={"width": 1400, "height": 1000})
        self.contexts.append(ctx)
        page = ctx.new_page()

        def record(req: Request) -> None:
            self.urls.append(req.url)

        page.on("request", record)
        page.on("pageerror", lambda err: self.errors.append(str(err)))
        page.on("console", lambda m: self.blocked.append(m.text) if "Content Security Policy" in m.text else None)
        return page

    def outside(self) -> list[str]:
        return [u for u in self.urls if not (u.startswith(self.base_url + "/") or u.startswith(("data:", "blob:")))]


@pytest.fixture
def pages(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageWatch]:
    watch = PageWatch(browser, request.getfixturevalue("app_server").url)
    yield watch
    for ctx in watch.contexts:
        ctx.close()
    assert watch.errors == []
    assert watch.blocked == []


class AgentLoop:
    """A CurriculumAgent streaming to the test's Redis prefix, stepping in a thread at ~`hz`."""

    def __init__(self, server_settings: Settings, run: str, spool: Path, hz: float = 7.0, steps: int | None = None,
                 scheduler: str = "dump", params: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.agent = CurriculumAgent(
            run=run, arms=list(PASS_RATE), scheduler=scheduler, scheduler_params=params or {},
            redis_url=REDIS_URL, key_prefix=server_settings.key_prefix, spool_dir=spool, seed=seed,
            config={"tags": ["browser-test"], "group_size": 4}, project="browser", heartbeat_s=1.0,
        )
        self.hz, self.steps = hz, steps
        self.stop = threading.Event()
        self.rng = random.Random(seed)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        try:
            n = 0
            while not self.stop.is_set() and (self.steps is None or n < self.steps):
                prompts = self.agent.sample(6)
                arms = [a for a in prompts for _ in range(4)]
                groups = [i for i in range(len(prompts)) for _ in range(4)]
                rewards = [float(self.rng.random() < PASS_RATE[a]) for a in arms]
                self.agent.observe(arms, rewards, groups=groups)
                self.agent.end_step(metrics={
                    "loss": 1.0 / (n + 1), "kl": 0.001 * n, "grad_norm": 1.0 + self.rng.random(),
                    "reward_mean": sum(rewards) / len(rewards), "zero_adv_frac": self.rng.random() / 2,
                })
                n += 1
                if self.hz:
                    self.stop.wait(1.0 / self.hz)
        except BaseException as e:  # surfaced by the test at teardown
            self.errors.append(e)

    def start(self) -> AgentLoop:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.agent.close()
        assert not self.errors, self.errors


@pytest.fixture
def agents(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., AgentLoop]]:
    """Start agents on the test's Redis prefix: agents(run, hz=7.0, steps=None, scheduler="dump")."""
    server_settings: Settings = request.getfixturevalue("settings")
    made: list[AgentLoop] = []

    def make(run: str, **kw: Any) -> AgentLoop:
        loop = AgentLoop(server_settings, run, tmp_path / f"spool-{run}", **kw)
        made.append(loop)
        return loop.start()

    yield make
    for loop in made:
        loop.close()


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def live_page(server: LiveServer, pages: PageWatch, run: str, viewport: dict[str, int] | None = None) -> Page:
    """The run page of a run that has stored a step or two, once its live stream is up."""
    wait_for(lambda: server.client.get(f"/api/runs/{run}").status_code == 200
             and server.client.get(f"/api/runs/{run}").json()["last_step"] >= 1)
    if viewport is None:
        page = pages.new_page()
    else:
        ctx = pages.browser.new_context(base_url=pages.base_url, viewport=viewport)
        pages.contexts.append(ctx)
        page = ctx.new_page()
    page.goto(f"/runs/{run}")
    expect(page.locator("#live-state")).to_contain_text("live", timeout=20_000)
    return page
