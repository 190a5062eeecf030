"""CurriculumAgent public API, offline mode (redis_url=None)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from trainer_agent import ConfigError, CurriculumAgent, ObservationError, grpo_advantages


def test_import_is_light():
    code = "import sys, trainer_agent; print('torch' in sys.modules, 'redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_grpo_advantages_by_hand():
    r = np.array([1.0, 0.0, 1.0, 0.5, 0.7])
    g = np.array([0, 0, 0, 1, 2])
    a = grpo_advantages(r, g)
    mean = 2 / 3
    std = math.sqrt(((1 - mean) ** 2 * 2 + mean**2) / 2)  # unbiased
    assert abs(a[0] - (1 - mean) / (std + 1e-6)) < 1e-12
    assert abs(a[1] - (0 - mean) / (std + 1e-6)) < 1e-12
    assert a[3] == 0.0 and a[4] == 0.0  # groups of size 1


def test_grpo_equal_rewards_give_zero_advantage():
    a = grpo_advantages(np.ones(4), np.zeros(4, dtype=int))
    assert a.tolist() == [0.0] * 4


@pytest.mark.parametrize("kind", ["list", "numpy", "torch"])
def test_inputs_as_lists_numpy_or_torch_give_identical_stats(kind):
    arms = ["a", "a", "b", "b"]
    rewards = [1.0, 0.0, 1.0, 1.0]
    groups = [0, 0, 1, 1]
    conv = {"list": lambda x: x, "numpy": np.asarray, "torch": torch.tensor}[kind]
    agent = CurriculumAgent(f"in-{kind}", ["a", "b"], scheduler="sec")
    agent.observe(np.asarray(arms) if kind != "list" else arms, conv(rewards), groups=conv(groups))
    stats = agent.end_step()
    assert stats.n_step == {"a": 2, "b": 2}
    assert stats.accuracy == {"a": 0.5, "b": 1.0}
    expected_abs = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert abs(stats.mean_abs_adv["a"] - expected_abs) < 1e-12
    assert stats.mean_abs_adv["b"] == 0.0


def test_given_advantages_are_used_and_inputs_not_mutated():
    agent = CurriculumAgent("adv", ["a", "b"], scheduler="dump")
    adv = np.array([-2.0, 1.0, 0.5])
    rewards = [0.0, 1.0, 1.0]
    agent.observe(["a", "a", "b"], rewards, advantages=adv)
    stats = agent.end_step()
    assert adv.tolist() == [-2.0, 1.0, 0.5] and rewards == [0.0, 1.0, 1.0]
    assert stats.mean_abs_adv == {"a": 1.5, "b": 0.5}
    assert stats.n_total == {"a": 2, "b": 1}


def test_bad_inputs_raise_clear_errors():
    agent = CurriculumAgent("bad", ["a", "b"])
    with pytest.raises(ObservationError, match="unknown arm 'z'"):
        agent.observe(["z"], [1.0], groups=[0])
    with pytest.raises(ObservationError, match="2 arms but 1 rewards"):
        agent.observe(["a", "b"], [1.0], groups=[0, 1])
    with pytest.raises(ObservationError, match="give advantages"):
        agent.observe(["a"], [1.0])
    with pytest.raises(ConfigError, match="unique"):
        CurriculumAgent("dup", ["a", "a"])
    with pytest.raises(ConfigError, match="at least one arm"):
        CurriculumAgent("none", [])
    with pytest.raises(ConfigError, match="unknown scheduler"):
        CurriculumAgent("s", ["a"], scheduler="nope")
    with pytest.raises(ConfigError, match="may not contain"):
        CurriculumAgent("kk-{0}", ["a"])


def test_an_empty_observe_is_a_no_op():
    """A call with no completions (a rank with nothing this micro-step) changes nothing; it used to fail
    with a misleading "arm names must be strings"."""
    agent = CurriculumAgent("empty", ["a", "b"])
    agent.observe([], [], groups=[])
    agent.observe([], [], advantages=[])
    agent.observe(["a", "a"], [1.0, 0.0], groups=[0, 0])
    assert agent.end_step().n_step == {"a": 2, "b": 0}
    with pytest.raises(ObservationError, match="give advantages"):
        agent.observe([], [])


def test_non_finite_rewards_are_dropped_and_counted():
    agent = CurriculumAgent("nan", ["a"])
    agent.observe(["a", "a", "a"], [1.0, float("nan"), 0.0], advantages=[0.5, 0.5, -0.5])
    stats = agent.end_step()
    assert stats.n_invalid == 1 and stats.n_step == {"a": 2}


def test_sample_is_seeded_and_follows_probabilities():
    a1 = CurriculumAgent("seed", ["a", "b", "c"], scheduler="fixed", scheduler_params={"weights": [1, 2, 7]}, seed=4)
    a2 = CurriculumAgent("seed", ["a", "b", "c"], scheduler="fixed", scheduler_params={"weights": [1, 2, 7]}, seed=4)
    s1, s2 = a1.sample(20000), a2.sample(20000)
    assert s1 == s2
    freq = {k: s1.count(k) / len(s1) for k in "abc"}
    assert abs(freq["c"] - 0.7) < 0.02 and abs(freq["a"] - 0.1) < 0.01


def test_commands_take_effect_at_the_next_step_boundary():
    agent = CurriculumAgent("boundary", ["a", "b", "c"], scheduler="uniform")
    cid = agent.pin("b", 1.0)
    assert agent.probabilities()["b"] == pytest.approx(1 / 3)
    stats = agent.end_step()
    assert [(a.id, a.status, a.applied_step) for a in stats.acks] == [(cid, "applied", 0)]
    assert agent.probabilities() == {"a": 0.0, "b": 1.0, "c": 0.0}
    assert set(agent.sample(50)) == {"b"}
    agent.release("b")
    agent.retire("a")
    agent.end_step()
    assert agent.probabilities() == {"a": 0.0, "b": 0.5, "c": 0.5}
    rec = {r["arm"]: r for r in agent.end_step().records()}
    assert rec["a"]["state"] == "retired" and rec["a"]["p"] == 0.0 and rec["b"]["pin"] is None


def test_boost_expires_after_steps():
    agent = CurriculumAgent("boost", ["a", "b"], scheduler="uniform")
    agent.boost("a", 3.0, steps=2)
    agent.end_step()  # applied at step 0, in force for steps 1 and 2
    assert agent.probabilities()["a"] == pytest.approx(0.75)
    agent.end_step()
    assert agent.probabilities()["a"] == pytest.approx(0.75)
    stats = agent.end_step()
    assert stats.expired == ["a"] and agent.probabilities()["a"] == pytest.approx(0.5)


def test_step_records_match_wire_format():
    agent = CurriculumAgent("rec", {"easy": {"difficulty": 1}, "hard": {"difficulty": 5}}, scheduler="dump")
    agent.observe(["easy", "easy"], [1, 1], groups=[0, 0])
    stats = agent.end_step(metrics={"loss": torch.tensor(0.25), "bad": "x"})
    recs = stats.records()
    assert [r["arm"] for r in recs] == ["easy", "hard"]
    assert set(recs[0]) == {"arm", "p", "score", "parts", "n_step", "n_total", "mean_abs_adv", "mean_reward",
                            "accuracy", "n_groups", "zero_var", "pass_hist", "state", "pin", "boost"}
    assert (recs[0]["n_groups"], recs[0]["zero_var"], recs[0]["pass_hist"]) == (1, 1.0, None)  # one group, all equal
    assert recs[1]["accuracy"] is None and recs[0]["accuracy"] == 1.0
    assert set(recs[0]["parts"]) == {"mu", "bonus"}
    assert stats.metrics == {"loss": 0.25}
    assert agent.arm_metadata["hard"] == {"difficulty": 5}


def test_context_manager_closes():
    with CurriculumAgent("ctx", ["a"]) as agent:
        agent.end_step()
    assert agent._closed
