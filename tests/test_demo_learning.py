"""The demo trainer really learns, and feeds the curriculum agent per-arm statistics every step.

A short real run (warm-up + GRPO on CPU, ~20 s on two idle cores): nothing is mocked, the policy is a
torch model trained from scratch, and the agent is the real `CurriculumAgent` running DUMP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trainer_agent import CurriculumAgent, StepStats  # noqa: E402
from trainer_agent.demo import DemoConfig, group_advantages, train  # noqa: E402

ARMS = ("rev4", "sort4", "rev10")  # two learnable arms and one out of reach


class RecordingAgent:
    """The real agent, with every observe() and end_step() kept for the assertions."""

    def __init__(self, agent: CurriculumAgent) -> None:
        self.agent = agent
        self.observed: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        self.stats: list[StepStats] = []

    def sample(self, n: int) -> list[str]:
        return self.agent.sample(n)

    def observe(self, arms: Any, rewards: Any, advantages: Any = None, groups: Any = None) -> None:
        self.observed.append((list(arms), np.asarray(rewards), np.asarray(advantages)))
        self.agent.observe(arms, rewards, advantages=advantages, groups=groups)

    def end_step(self, metrics: dict[str, float] | None = None) -> StepStats:
        stats = self.agent.end_step(metrics=metrics)
        self.stats.append(stats)
        return stats

    def probabilities(self) -> dict[str, float]:
        return self.agent.probabilities()

    def log_eval(self, results: Any, *, n: Any = None, name: str = "eval", step: int | None = None) -> Any:
        return self.agent.log_eval(results, n=n, name=name, step=step)

    def close(self, status: Any = None) -> None:
        self.agent.close(status)


def test_group_advantages_follow_the_design_rule() -> None:
    r = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(r, 4)
    g = r[:4]
    np.testing.assert_allclose(adv[:4], (g - g.mean()) / (g.std(ddof=1) + 1e-6))
    np.testing.assert_array_equal(adv[4:], 0.0)  # all correct: no signal
    np.testing.assert_array_equal(group_advantages(r, 1), 0.0)  # groups of one


def test_grpo_run_learns_and_reports_every_step() -> None:
    cfg = DemoConfig(
        run="test-demo-learning",
        scheduler="dump",
        arms=ARMS,
        roles={"rev4": "learnable", "sort4": "learnable", "rev10": "hard"},
        # A smaller warm-up than the demo's (only these families, 250 steps) keeps the test short;
        # it leaves sort4 near 0.6 and rev4 near 0.1-0.25 greedy accuracy, room for RL to show.
        warmup_arms=("rev3", "sort3", "rev4", "sort4"),
        warmup_weights=(1.0, 1.0, 0.05, 0.05),
        warmup_steps=250,
        seed=0,
        steps=50,
        n_prompts=32,
        group_size=8,
        eval_every=25,
        eval_per_arm=200,
        threads=2,
        device="cpu",
    )
    agent = RecordingAgent(CurriculumAgent(run=cfg.run, arms=list(ARMS), scheduler="dump", redis_url=None, seed=0))
    result = train(cfg, agent=agent)

    # It learns: greedy accuracy on held-out prompts of a learnable arm rises well above its start.
    start, end = result.eval_accuracy[0], result.eval_accuracy[-1]
    gains = {a: end[a] - start[a] for a in result.arms_with_role("learnable")}
    assert max(gains.values()) >= 0.12, (start, end)
    assert result.eval_steps[0] == 0 and result.eval_steps[-1] == cfg.steps

    # The agent got every step's completions and answered with per-arm statistics each time.
    n = cfg.n_prompts * cfg.group_size
    assert len(agent.observed) == len(agent.stats) == cfg.steps == result.steps_done
    for i, ((arms, rewards, adv), stats) in enumerate(zip(agent.observed, agent.stats, strict=True)):
        assert len(arms) == rewards.size == adv.size == n
        assert set(np.unique(rewards)) <= {0.0, 1.0}
        counts = {a: arms.count(a) for a in ARMS}
        assert stats.n_step == counts, f"step {i}"
        for a in ARMS:
            if counts[a]:
                sel = np.array(arms) == a
                assert stats.accuracy[a] == pytest.approx(rewards[sel].mean())
                assert stats.mean_abs_adv[a] == pytest.approx(np.abs(adv[sel]).mean())
        assert sum(stats.probabilities.values()) == pytest.approx(1.0)

    # DUMP moved away from the arm nobody can solve yet: its groups are all wrong, so |A| = 0.
    assert all(a == 0.0 for arms, _, adv in agent.observed for a, arm in zip(adv, arms, strict=True) if arm == "rev10")
    assert result.probabilities[-1]["rev10"] < 1 / len(ARMS)
