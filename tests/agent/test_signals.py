"""The agent's per-arm signals: zero-variance groups and the pass-rate profile of prompts, checked
against plain Python recomputations of their definitions (trainer_agent/signals.py)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from trainer_agent import CurriculumAgent
from trainer_agent.protocol import ARM_RECORD_FIELDS, PASS_HIST_BINS
from trainer_agent.signals import DENSE_KEYS


def _bin(att: int, suc: int) -> int:
    if suc == 0:
        return 0
    if suc == att:
        return 4
    rate = suc / att
    return 1 if rate < 1 / 3 else 2 if rate < 2 / 3 else 3


def test_zero_variance_share_per_arm_from_groups() -> None:
    agent = CurriculumAgent("zv", ["a", "b", "c"], redis_url=None)
    # a: groups 0 (all 1), 1 (mixed), 2 (all 0.1: equal, though their mean is not exact); b: group 3 of one
    # completion; c: not sampled.
    arms = ["a"] * 4 + ["a"] * 4 + ["a"] * 3 + ["b"]
    rewards = [1, 1, 1, 1, 0, 1, 0, 1, 0.1, 0.1, 0.1, 0.7]
    groups = [0] * 4 + [1] * 4 + [2] * 3 + [3]
    agent.observe(arms, rewards, groups=groups)
    stats = agent.end_step()
    assert stats.zero_var == {"a": pytest.approx(2 / 3), "b": 1.0, "c": None}
    rec = {r["arm"]: r for r in stats.records()}
    assert (rec["a"]["n_groups"], rec["b"]["n_groups"], rec["c"]["n_groups"]) == (3, 1, 0)
    assert rec["c"]["zero_var"] is None and rec["a"]["pass_hist"] is None
    assert [tuple(r) for r in stats.records()] == [ARM_RECORD_FIELDS] * 3


def test_zero_variance_with_given_advantages_and_without_groups() -> None:
    agent = CurriculumAgent("zv2", ["a"], redis_url=None)
    agent.observe(["a"] * 4, [1, 1, 0, 1], advantages=[0.1, 0.1, -0.3, 0.1], groups=[0, 0, 1, 1])
    assert agent.end_step().zero_var == {"a": 0.5}
    agent.observe(["a"] * 2, [1, 0], advantages=[0.5, -0.5])
    stats = agent.end_step()
    assert stats.zero_var == {"a": None} and stats.records()[0]["n_groups"] is None


def test_nonfinite_rewards_are_left_out_of_the_groups() -> None:
    agent = CurriculumAgent("zv3", ["a"], redis_url=None)
    agent.observe(["a"] * 4, [1, float("nan"), 0, 0], groups=[0, 0, 1, 1])
    stats = agent.end_step()
    # The NaN makes its whole group's advantages NaN (its mean is NaN): both are dropped, as before.
    assert stats.n_invalid == 2
    assert stats.records()[0]["n_groups"] == 1 and stats.zero_var == {"a": 1.0}


@pytest.mark.parametrize("ids", ["dense", "large", "strings"])
def test_pass_rate_profile_matches_its_definition(ids: str) -> None:
    arms = ["a", "b", "c"]
    window, G = 7, 4
    agent = CurriculumAgent(f"pr-{ids}", arms, redis_url=None, prompt_window=window, seed=1)
    rng = np.random.default_rng(0)
    history: list[list[tuple[str, object, int, int]]] = []  # per step: (arm, prompt, attempts, successes)
    for step in range(40):
        n_prompts = 12
        chosen = rng.integers(0, 3, n_prompts)
        # Few prompts per arm, so prompts recur within the window and across arms' steps.
        raw = chosen * 10 + rng.integers(0, 10, n_prompts)
        if ids == "large":
            # Past the dense range from step 20 on: the window switches layout mid-run.
            raw = raw + (DENSE_KEYS * 3 if step >= 20 else 0)
        prompt = [f"p{x}" for x in raw] if ids == "strings" else raw.tolist()
        rates = rng.choice([0.0, 0.3, 0.7, 1.0], n_prompts)
        comp_arms = [arms[i] for i in np.repeat(chosen, G)]
        rewards = (rng.random(n_prompts * G) < np.repeat(rates, G)).astype(float)
        comp_prompts = [p for p in prompt for _ in range(G)]
        agent.observe(comp_arms, rewards, prompts=comp_prompts)
        stats = agent.end_step()
        history.append([(arms[chosen[i]], prompt[i], G, int(rewards[i * G:(i + 1) * G].sum()))
                        for i in range(n_prompts)])
        counts: dict[object, list[int]] = defaultdict(lambda: [0, 0])
        arm_of: dict[object, str] = {}
        for rows in history[-window:]:
            for arm, p, att, suc in rows:
                counts[p][0] += att
                counts[p][1] += suc
                arm_of[p] = arm
        want = {a: [0] * len(PASS_HIST_BINS) for a in arms}
        for p, (att, suc) in counts.items():
            want[arm_of[p]][_bin(att, suc)] += 1
        assert stats.pass_hist == want, step
        assert [r["pass_hist"] for r in stats.records()] == [want[a] for a in arms]


def test_the_profile_is_kept_through_steps_without_prompt_ids() -> None:
    agent = CurriculumAgent("pr-gap", ["a"], redis_url=None, prompt_window=2)
    agent.observe(["a"] * 2, [1, 1], prompts=[5, 5])
    assert agent.end_step().pass_hist == {"a": [0, 0, 0, 0, 1]}
    agent.observe(["a"] * 2, [1, 0], groups=[0, 0])
    assert agent.end_step().pass_hist == {"a": [0, 0, 0, 0, 1]}
    agent.observe(["a"] * 2, [1, 0], groups=[0, 0])
    assert agent.end_step().pass_hist == {"a": [0, 0, 0, 0, 0]}  # prompt 5 left the window
