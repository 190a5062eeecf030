"""agent.sampler(within_arm="pass_rate"): prompts near the target pass rate, re-measured as the model changes.

Simulated pools where each prompt's true pass rate is known: a third never solved, a third always
solved, a third at 0.5. Completions are Bernoulli draws of the true rate; the agent learns each prompt's
pass rate from `observe(prompts=...)`.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from trainer_agent import CurriculumAgent
from trainer_agent.errors import ConfigError

G = 8  # completions per prompt
PER_STEP = 32  # prompts per step


def _pool(n_per_arm: int, arms: list[str]) -> tuple[list[str], np.ndarray]:
    """Dataset arms and each prompt's true pass rate: thirds at 0, 1 and 0.5 within every arm."""
    ds_arms = [a for a in arms for _ in range(n_per_arm)]
    third = np.repeat([0.0, 1.0, 0.5], n_per_arm // 3 + 1)[:n_per_arm]
    return ds_arms, np.tile(third, len(arms))


def _train(agent: CurriculumAgent, draws, truth: np.ndarray, steps: int, rng: np.random.Generator,
           ds_arms: list[str]) -> list[np.ndarray]:
    """`steps` GRPO steps of PER_STEP prompts; returns each step's prompt indices."""
    drawn = []
    for _ in range(steps):
        idx = np.array(list(itertools.islice(draws, PER_STEP * G)))
        rewards = (rng.random(idx.size) < truth[idx]).astype(float)
        agent.observe([ds_arms[i] for i in idx], rewards, groups=np.repeat(np.arange(PER_STEP), G), prompts=idx)
        agent.end_step()
        drawn.append(idx[::G])
    return drawn


@pytest.mark.parametrize("seed", range(3))
def test_pass_rate_draws_prompts_near_the_target_and_uniform_does_not(seed: int) -> None:
    arms = ["a", "b"]
    ds_arms, truth = _pool(300, arms)
    shares = {}
    zero_var = {}
    for within in ("uniform", "pass_rate"):
        agent = CurriculumAgent(f"pr-{within}", arms, redis_url=None, seed=seed)
        draws = iter(agent.sampler(ds_arms, G, num_samples=10**9, within_arm=within))
        drawn = _train(agent, draws, truth, 120, np.random.default_rng(seed), ds_arms)
        late = np.concatenate(drawn[-40:])
        shares[within] = float(np.mean(truth[late] == 0.5))
        zero_var[within] = float(np.mean((truth[late] == 0.0) | (truth[late] == 1.0)))
        if within == "pass_rate":
            rates = agent.pass_rates
            assert rates is not None
            measured = ~np.isnan(rates.rate)
            # Every prompt was measured (the pool is drawn uniformly while unseen); estimates near the truth.
            assert measured.mean() > 0.95
            assert np.abs(rates.rate[measured] - truth[measured]).mean() < 0.2
    assert 0.25 < shares["uniform"] < 0.42  # a third of the pool
    assert shares["pass_rate"] > 0.75, shares
    # Prompts whose groups give no gradient (rate 0 or 1): two thirds under uniform, a small share here.
    assert zero_var["pass_rate"] < 0.25 < 0.55 < zero_var["uniform"]


def test_exploration_re_measures_prompts_written_off_when_they_become_learnable() -> None:
    """ADCL: the never-solved third turns learnable at step 80; explore draws find them again."""
    arms = ["a"]
    ds_arms, truth = _pool(150, arms)
    agent = CurriculumAgent("pr-adcl", arms, redis_url=None, seed=1)
    draws = iter(agent.sampler(ds_arms, G, num_samples=10**9, within_arm="pass_rate", explore=0.1))
    rng = np.random.default_rng(1)
    _train(agent, draws, truth, 80, rng, ds_arms)
    was_hard = truth == 0.0
    early = np.concatenate(_train(agent, draws, truth, 1, rng, ds_arms))
    truth = np.where(was_hard, 0.5, truth)  # the model learnt them
    drawn = _train(agent, draws, truth, 150, rng, ds_arms)
    late = np.concatenate(drawn[-30:])
    assert np.mean(was_hard[early]) < 0.2
    # Half the learnable prompts are now the formerly hard ones: drawn about as often as the others.
    assert np.mean(was_hard[late]) > 0.35


def test_without_prompt_ids_the_draw_stays_uniform_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    agent = CurriculumAgent("pr-strings", ["a"], redis_url=None)
    s = agent.sampler(["a"] * 30, 1, num_samples=3000, within_arm="pass_rate")
    agent.observe(["a", "a"], [1.0, 0.0], prompts=["p1", "p2"])
    assert "needs dataset indices" in caplog.text
    counts = np.bincount(list(s), minlength=30)
    assert counts.min() > 50  # uniform over 30 prompts: 100 each


def test_pass_rates_survive_a_checkpoint_and_bad_state_is_refused() -> None:
    ds_arms, truth = _pool(60, ["a"])
    agent = CurriculumAgent("pr-ckpt", ["a"], redis_url=None, seed=2)
    draws = iter(agent.sampler(ds_arms, G, num_samples=10**9, within_arm="pass_rate"))
    _train(agent, draws, truth, 20, np.random.default_rng(2), ds_arms)
    state = json.loads(json.dumps(agent.state_dict()))
    again = CurriculumAgent("pr-ckpt", ["a"], redis_url=None, seed=2)
    again.load_state_dict(state)
    assert again.pass_rates is not None and agent.pass_rates is not None
    np.testing.assert_array_equal(again.pass_rates.rate, agent.pass_rates.rate)
    np.testing.assert_array_equal(again.pass_rates.seen, agent.pass_rates.seen)
    # A new sampler of the resumed agent draws from the restored rates.
    s = again.sampler(ds_arms, 1, num_samples=2000, within_arm="pass_rate", explore=0.0)
    assert np.mean(truth[np.array(list(s))] == 0.5) > 0.8
    for bad, says in ((1.5, r"rate: expected finite numbers in \[0.0, 1.0\]"), ("x", "rate: expected numbers")):
        broken = json.loads(json.dumps(state))
        broken["pass_rates"]["rate"][0] = bad
        with pytest.raises(ConfigError, match="pass_rates: " + says):
            CurriculumAgent("pr-ckpt", ["a"], redis_url=None).load_state_dict(broken)
    broken = json.loads(json.dumps(state))
    broken["pass_rates"]["seen"] = broken["pass_rates"]["seen"][:-1]
    with pytest.raises(ConfigError, match="pass rates but"):
        CurriculumAgent("pr-ckpt", ["a"], redis_url=None).load_state_dict(broken)


@pytest.mark.parametrize("kwargs, says", [
    ({"within_arm": "hardest"}, "within_arm must be one of"),
    ({"within_arm": "pass_rate", "pass_rate_target": 1.5}, "pass_rate_target"),
    ({"within_arm": "pass_rate", "explore": -0.1}, "explore"),
    ({"within_arm": "pass_rate", "pass_rate_width": 0}, "pass_rate_width"),
    ({"within_arm": "pass_rate", "pass_rate_ema": "fast"}, "pass_rate_ema"),
])
def test_bad_within_arm_settings_are_refused(kwargs: dict[str, object], says: str) -> None:
    agent = CurriculumAgent("pr-bad", ["a"], redis_url=None)
    with pytest.raises(ConfigError, match=says):
        agent.sampler(["a"], 1, **kwargs)  # type: ignore[arg-type]


def test_profile_bins_the_measured_prompts() -> None:
    agent = CurriculumAgent("pr-prof", ["a"], redis_url=None)
    agent.sampler(["a"] * 5, 1, within_arm="pass_rate")
    ids = [0, 0, 1, 1, 2, 2, 3, 3]
    agent.observe(["a"] * 8, [0, 0, 1, 1, 1, 0, 1, 1], groups=ids, prompts=ids)
    assert agent.pass_rates is not None
    # prompt 0: 0/2 never; 1: 2/2 always; 2: 1/2 middle; 3: 2/2 always; prompt 4 unseen
    assert agent.pass_rates.profile(np.arange(5)) == [1, 0, 1, 0, 2]
