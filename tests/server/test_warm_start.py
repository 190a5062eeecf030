"""Warm start from a past run (issue 14): an agent's recent per-arm statistics, the same read back from the
server (`GET /api/runs/{run}/warm-start`, `SteerboardClient.warm_start`), and a new run's scheduler
started from them, which the run page names. Real agents, Redis, ingest, SQLite/PostgreSQL and HTTP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.settings import Settings
from tests.server.conftest import BACKENDS, REDIS_URL, LiveServer, wait_for
from trainer_agent import CurriculumAgent, WarmStart
from trainer_agent.client import ClientError, SteerboardClient

from .test_diagnoses_api import PROMPTS, G, step_bernoulli

RATES = {"easy": 0.95, "mid": 0.5, "hard": 0.05}


def train(agent: CurriculumAgent, steps: int, seed: int = 0) -> None:
    step_bernoulli(agent, RATES, np.random.default_rng(seed), steps)


def test_a_warm_started_scheduler_starts_where_the_earlier_run_was() -> None:
    earlier = CurriculumAgent("earlier", list(RATES), scheduler="dump", seed=0)
    train(earlier, 60)
    ws = earlier.warm_start_summary()
    assert ws.run == "earlier" and set(ws.n_total) == set(RATES) and all(ws.n_recent[a] > 0 for a in RATES)

    cold = CurriculumAgent("cold", list(RATES), scheduler="dump", seed=1)
    warm = CurriculumAgent("warm", [*RATES, "new-arm"], scheduler="dump", seed=1, warm_start=ws)
    assert warm.config["warm_start_from"] == "earlier"
    # Cold, DUMP has no estimate: every arm gets the same (maximal) bonus, so p is uniform.
    assert np.allclose(list(cold.probabilities().values()), 1 / 3)
    # Warm, each arm's estimate is the earlier run's recent mean |A|; an arm it did not have starts cold.
    mu = warm._control.scheduler.parts()["mu"]
    assert mu[:3] == pytest.approx([ws.abs_adv[a] for a in RATES]) and mu[3] == 0
    assert warm._control.scheduler.n.tolist()[:3] == [ws.n_total[a] for a in RATES]
    # The mid arm (the most |A|: pass rate 0.5) is favoured from the first step; the never-seen arm keeps
    # its exploration bonus.
    p = warm.probabilities()
    assert p["mid"] > max(p["easy"], p["hard"])
    assert not np.allclose(list(p.values()), 1 / 4)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_the_server_gives_the_runs_statistics_and_the_page_names_the_source(
    app_server: LiveServer, settings: Settings
) -> None:
    with CurriculumAgent("ws-source", list(RATES), scheduler="dump", redis_url=REDIS_URL,
                         key_prefix=settings.key_prefix, seed=0) as source:
        train(source, 30)
        local = source.warm_start_summary()
    wait_for(lambda: app_server.client.get("/api/runs/ws-source").json().get("last_step") == 29)
    client = SteerboardClient(app_server.url)
    got = client.warm_start("ws-source")
    assert isinstance(got, WarmStart) and got.run == "ws-source"
    # The server pools the run's last 20 stored steps as the agent pooled its last 20: the same figures.
    for arm in RATES:
        assert got.n_total[arm] == local.n_total[arm] and got.n_recent[arm] == local.n_recent[arm]
        for mine, theirs in ((got.accuracy[arm], local.accuracy[arm]), (got.abs_adv[arm], local.abs_adv[arm])):
            assert (math.isnan(theirs) and mine is None) or mine == pytest.approx(theirs, rel=1e-9)
    short = client.warm_start("ws-source", steps=1)
    assert sum(short.n_recent.values()) == PROMPTS * G  # one step's completions

    with CurriculumAgent("ws-target", list(RATES), scheduler="dump", redis_url=REDIS_URL,
                         key_prefix=settings.key_prefix, seed=1, warm_start=got) as target:
        train(target, 2, seed=1)
    wait_for(lambda: app_server.client.get("/api/runs/ws-target").json().get("last_step") == 1)
    assert app_server.client.get("/api/runs/ws-target").json()["config"]["warm_start_from"] == "ws-source"
    page = app_server.client.get("/runs/ws-target").text
    assert 'id="run-warm-start"' in page and 'href="/runs/ws-source"' in page

    with pytest.raises(ClientError) as e:
        client.warm_start("no-such-run")
    assert e.value.status == 404
    assert app_server.client.get("/api/runs/ws-source/warm-start", params={"steps": 0}).status_code == 422
