"""TRL's real GRPOTrainer steered through the server: a pin POSTed over HTTP reaches the next generation."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest

# Skip only where TRL is not installed; an installed TRL that fails to import is a failure.
if importlib.util.find_spec("trl") is None:
    pytest.skip("TRL is not installed (the `trl` extra; make install puts it in .venv)", allow_module_level=True)
pytestmark = pytest.mark.filterwarnings("ignore:.*checkpointing.*:FutureWarning")

from transformers import TrainerCallback  # noqa: E402

from server.settings import Settings  # noqa: E402
from tests.server.conftest import REDIS_URL, LiveServer, wait_for  # noqa: E402
from trainer_agent import CurriculumAgent, StepStats  # noqa: E402
from trainer_agent.integrations.trl import CurriculumGRPOTrainer  # noqa: E402

from .tiny_grpo import ARMS, make_args, make_dataset, make_model, make_tokenizer, target_reward  # noqa: E402


class KeepingAgent(CurriculumAgent):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[StepStats] = []

    def end_step(self, metrics: Any = None) -> StepStats:
        stats = super().end_step(metrics)
        self.steps.append(stats)
        return stats


class PinOverHttp(TrainerCallback):  # type: ignore[misc]
    """After optimizer step 1, an operator pins an arm through the server's API."""

    def __init__(self, server: LiveServer, agent: KeepingAgent, run: str) -> None:
        self.server, self.agent, self.run = server, agent, run
        self.command_id: str | None = None
        self.seen_at_step: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step != 1:
            return
        wait_for(lambda: self.server.client.get(f"/api/runs/{self.run}").status_code == 200)
        resp = self.server.client.post(f"/api/runs/{self.run}/commands",
                                       json={"kind": "pin", "arm": "mul", "value": 1.0, "reason": "trl test"})
        assert resp.status_code == 202, resp.text
        self.command_id = resp.json()["id"]
        # The operator's command reaches the agent's transport within its poll interval; wait for it so
        # the step it lands in is known (training itself never waits on the network).
        transport = self.agent._transport
        assert transport is not None
        deadline = time.monotonic() + 10
        while not any(c.id == self.command_id for c in transport._commands):
            assert time.monotonic() < deadline, "the command did not reach the agent"
            time.sleep(0.01)
        self.seen_at_step = self.agent.step


def test_pin_posted_to_server_changes_what_trl_draws_next(app_server: LiveServer, settings: Settings,
                                                           tmp_path: Path) -> None:
    run = "trl-over-http"
    tok = make_tokenizer()
    calls: list[list[str]] = []

    def reward(completions: list[str], data_source: list[str], **kw: Any) -> list[float]:
        calls.append(list(data_source))
        return target_reward(completions, data_source)

    agent = KeepingAgent(run=run, arms=list(ARMS), scheduler="dump", redis_url=REDIS_URL,
                         key_prefix=settings.key_prefix, spool_dir=tmp_path, seed=0)
    pin = PinOverHttp(app_server, agent, run)
    trainer = CurriculumGRPOTrainer(
        model=make_model(tok), reward_funcs=reward, processing_class=tok, train_dataset=make_dataset(per_arm=8),
        args=make_args(max_steps=5), callbacks=[pin], agent=agent,
    )
    trainer.train()
    agent.close()

    applied = [(s.step, a) for s in agent.steps for a in s.acks if a.id == pin.command_id]
    assert len(applied) == 1 and applied[0][1].status == "applied"
    k = applied[0][0]
    assert k == pin.seen_at_step  # applied at the first step boundary after it arrived
    # TRL's very next generation batch draws from the pinned arm only; the ones before did not.
    assert all(set(c) == {"mul"} for c in calls[k + 1:]) and len(calls) > k + 1
    assert set().union(*map(set, calls[: k + 1])) != {"mul"}
    # The server's audit log says the same.
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "applied")
    rec = app_server.client.get(f"/api/runs/{run}/commands").json()[0]
    assert (rec["id"], rec["status"], rec["applied_step"]) == (pin.command_id, "applied", k)
