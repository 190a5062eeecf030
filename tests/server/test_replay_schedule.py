"""A `replay` scheduler fed from the server (issue 14): a real agent streams a DUMP run through Redis and
ingest into SQLite; `SteerboardClient.replay_schedule` reads its arms CSV export back, and a new agent
replaying it puts the same probabilities in force, step by step."""

from __future__ import annotations

import numpy as np
import pytest

from server.settings import Settings
from tests.server.conftest import REDIS_URL, LiveServer, wait_for
from trainer_agent import CurriculumAgent
from trainer_agent.client import ClientError, SteerboardClient

RATES = {"easy": 0.95, "mid": 0.5, "hard": 0.05}
G, PROMPTS, STEPS = 4, 8, 12


def step(agent: CurriculumAgent, rng: np.random.Generator) -> list[float]:
    chosen = agent.sample(PROMPTS)
    q = np.repeat([RATES[a] for a in chosen], G)
    agent.observe([a for a in chosen for _ in range(G)], (rng.random(q.size) < q).astype(float),
                  groups=np.repeat(np.arange(PROMPTS), G))
    return agent.end_step().p.tolist()


def test_a_run_replayed_from_the_server_repeats_its_probabilities(app_server: LiveServer, settings: Settings) -> None:
    rng = np.random.default_rng(0)
    with CurriculumAgent("replay-source", list(RATES), scheduler="dump", scheduler_params={"temperature": 0.3},
                         redis_url=REDIS_URL, key_prefix=settings.key_prefix, seed=0) as source:
        original = [step(source, rng) for _ in range(STEPS)]
    wait_for(lambda: app_server.client.get("/api/runs/replay-source").json().get("last_step") == STEPS - 1)
    sb = SteerboardClient(app_server.url)
    schedule = sb.replay_schedule("replay-source")
    assert schedule["steps"] == list(range(STEPS)) and schedule["arms"] == list(RATES)
    replayed = CurriculumAgent("replayed", list(RATES), scheduler="replay", scheduler_params={"schedule": schedule},
                               redis_url=None, seed=1)
    rng = np.random.default_rng(1)
    # To the last bits: the agent renormalises the exported probabilities.
    np.testing.assert_allclose([step(replayed, rng) for _ in range(STEPS + 2)], [*original, original[-1], original[-1]],
                               rtol=0, atol=1e-15)
    assert sb.replay_schedule("replay-source", every=5)["steps"] == [0, 5, 10, 11]
    with pytest.raises(ClientError, match="404"):
        sb.replay_schedule("no-such-run")
