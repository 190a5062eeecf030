"""Each scheduler's probabilities computed by hand on small cases (DESIGN.md §1 table)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer_agent import ConfigError, CurriculumAgent, Scheduler, available_schedulers, make_scheduler
from trainer_agent.stats import ObservationBuffer

TOL = 1e-12


def obs_of(arms: list[str], names: list[str], rewards: list[float], advantages: list[float]):
    acc = ObservationBuffer(len(names), threshold=0.5)
    idx = np.array([names.index(a) for a in arms], dtype=np.int64)
    acc.add(idx, np.array(rewards, dtype=float), np.array(advantages, dtype=float))
    return acc, acc.reduce()


def softmax_ref(xs: list[float], tau: float) -> list[float]:
    m = max(xs)
    e = [math.exp((x - m) / tau) for x in xs]
    return [v / sum(e) for v in e]


def test_registry_lists_the_six_schedulers():
    assert {"uniform", "fixed", "dump", "sec", "learning_progress", "balanced"} <= set(available_schedulers())


def test_unknown_scheduler_and_bad_params_are_config_errors():
    with pytest.raises(ConfigError, match="unknown scheduler 'dumpp'"):
        make_scheduler("dumpp", ["a"])
    with pytest.raises(ConfigError, match="bad parameters"):
        make_scheduler("dump", ["a"], {"tau": 1})
    with pytest.raises(ConfigError, match="temperature"):
        make_scheduler("dump", ["a"], {"temperature": 0})


def test_uniform_over_active_arms():
    s = make_scheduler("uniform", ["a", "b", "c", "d"])
    p = s.probabilities(np.array([True, False, True, True]))
    assert p.tolist() == [1 / 3, 0.0, 1 / 3, 1 / 3]


def test_fixed_weights_renormalised_over_active():
    s = make_scheduler("fixed", ["a", "b", "c"], {"weights": {"a": 1.0, "b": 3.0, "c": 4.0}})
    assert s.probabilities().tolist() == [1 / 8, 3 / 8, 4 / 8]
    assert s.probabilities(np.array([True, False, True])).tolist() == [1 / 5, 0.0, 4 / 5]
    with pytest.raises(ConfigError, match="unknown arms"):
        make_scheduler("fixed", ["a"], {"weights": {"z": 1.0}})
    with pytest.raises(ConfigError, match="not all zero"):
        make_scheduler("fixed", ["a", "b"], {"weights": [0.0, 0.0]})


def test_dump_two_arms_by_hand():
    names = ["a", "b"]
    s = make_scheduler("dump", names)  # window 300, c 1, tau 0.1
    _, obs = obs_of(["a", "a", "b", "a"], names, [1, 0, 1, 1], [0.5, -1.5, 0.2, 1.0])
    s.update(obs)
    mu_a, mu_b = (0.5 + 1.5 + 1.0) / 3, 0.2
    n_a, n_b = 3, 1
    big_n = n_a + n_b
    ucb_a = mu_a + 1.0 * math.sqrt(2 * math.log(big_n + 1) / (n_a + 1))
    ucb_b = mu_b + 1.0 * math.sqrt(2 * math.log(big_n + 1) / (n_b + 1))
    expected = softmax_ref([ucb_a, ucb_b], 0.1)
    p = s.probabilities()
    assert abs(p[0] - expected[0]) < TOL and abs(p[1] - expected[1]) < TOL
    assert abs(s.parts()["mu"][0] - mu_a) < TOL
    assert abs(s.parts()["bonus"][1] - math.sqrt(2 * math.log(5) / 2)) < TOL


def test_dump_unseen_arms_use_zero_mu_and_biggest_bonus():
    s = make_scheduler("dump", ["a", "b"])
    p0 = s.probabilities()
    # N = max(1, 0) = 1, both bonuses sqrt(2 ln 2 / 1): equal scores.
    assert p0.tolist() == [0.5, 0.5]
    _, obs = obs_of(["a"] * 4, ["a", "b"], [1] * 4, [0.0] * 4)
    s.update(obs)
    ucb_a = 0 + math.sqrt(2 * math.log(5) / 5)
    ucb_b = 0 + math.sqrt(2 * math.log(5) / 1)
    expected = softmax_ref([ucb_a, ucb_b], 0.1)
    assert abs(s.probabilities()[1] - expected[1]) < TOL


def test_dump_window_is_a_fifo_across_steps():
    names = ["a", "b"]
    s = make_scheduler("dump", names, {"window": 3, "c": 0.0, "temperature": 1.0})
    history = [[1.0, 2.0], [3.0, 4.0, 5.0, 6.0, 7.0], [8.0]]
    flat: list[float] = []
    for vals in history:
        _, obs = obs_of(["a"] * len(vals), names, [0] * len(vals), vals)
        s.update(obs)
        flat += vals
        window = flat[-3:]
        assert abs(s.parts()["mu"][0] - sum(window) / len(window)) < TOL
    assert s.n.tolist() == [8, 0]
    # c = 0: the score is mu alone; arm b has mu 0.
    expected = softmax_ref([sum(flat[-3:]) / 3, 0.0], 1.0)
    assert abs(s.probabilities()[0] - expected[0]) < TOL


def test_sec_td0_updates_seen_arms_only_and_optionally_decays():
    names = ["a", "b", "c"]
    for decay in (False, True):
        s = make_scheduler("sec", names, {"alpha": 0.5, "temperature": 1.0, "decay_absent": decay})
        _, obs = obs_of(["a", "a", "b"], names, [1, 0, 1], [1.0, -0.5, 0.4])
        s.update(obs)
        _, obs = obs_of(["a"], names, [1], [0.2])
        s.update(obs)
        q_a = 0.5 * 0.2 + 0.5 * (0.5 * 0.75)
        q_b = 0.5 * 0.4 * (0.5 if decay else 1.0)
        q = [q_a, q_b, 0.0]
        assert np.allclose(s.q, q, atol=TOL, rtol=0)
        p = s.probabilities()
        assert max(abs(x - y) for x, y in zip(p, softmax_ref(q, 1.0), strict=True)) < TOL


def test_learning_progress_fast_slow_emas():
    names = ["a", "b"]
    s = make_scheduler("learning_progress", names)  # beta 0.1, tau 0.05, eps 0.05
    f = s_ = 0.0
    for acc_a in (0.25, 0.75):
        n_right = int(acc_a * 4)
        _, obs = obs_of(["a"] * 4, names, [1] * n_right + [0] * (4 - n_right), [0.1] * 4)
        s.update(obs)
        f = 0.1 * acc_a + 0.9 * f
        s_ = 0.1 * f + 0.9 * s_
    lp = [abs(f - s_), 0.0]
    sm = softmax_ref(lp, 0.05)
    expected = [0.95 * sm[0] + 0.05 / 2, 0.95 * sm[1] + 0.05 / 2]
    p = s.probabilities()
    assert abs(p[0] - expected[0]) < TOL and abs(p[1] - expected[1]) < TOL


def test_balanced_prefers_arms_near_half():
    names = ["solved", "half", "hard"]
    s = make_scheduler("balanced", names)  # ema 0.1, eps 0.01, init 0.5
    _, obs = obs_of(["solved"] * 2 + ["half"] * 2 + ["hard"] * 2, names, [1, 1, 1, 0, 0, 0], [0.0] * 6)
    s.update(obs)
    accs = [0.1 * 1 + 0.9 * 0.5, 0.1 * 0.5 + 0.9 * 0.5, 0.1 * 0 + 0.9 * 0.5]
    w = [a * (1 - a) + 0.01 for a in accs]
    expected = [x / sum(w) for x in w]
    p = s.probabilities()
    assert max(abs(x - y) for x, y in zip(p, expected, strict=True)) < TOL
    assert p[1] > p[0] and p[1] > p[2]


def test_accuracy_threshold_and_mean_reward():
    _, obs = obs_of(["a", "a", "a", "b"], ["a", "b"], [0.9, 0.2, 0.6, 0.5], [0, 0, 0, 0])
    assert abs(obs.accuracy[0] - 2 / 3) < TOL
    assert obs.accuracy[1] == 0.0  # 0.5 is not above the 0.5 threshold
    assert abs(obs.mean_reward[0] - (0.9 + 0.2 + 0.6) / 3) < TOL


def test_schedulers_are_deterministic_given_observations():
    rng = np.random.default_rng(3)
    names = [f"arm{i}" for i in range(5)]
    for name in ("dump", "sec", "learning_progress", "balanced"):
        runs = []
        for _ in range(2):
            agent = CurriculumAgent(f"det-{name}", names, scheduler=name, seed=11)
            trace = []
            data = np.random.default_rng(5)
            for _step in range(20):
                arms = agent.sample(16)
                agent.observe(arms, data.random(16) > 0.5, groups=np.repeat(np.arange(4), 4))
                trace.append(agent.end_step().p.copy())
            runs.append(np.array(trace))
        assert np.array_equal(runs[0], runs[1]), name
    assert rng is not None


def test_third_party_scheduler_registered_and_used_by_name():
    from trainer_agent import register_scheduler

    @register_scheduler("test_first_arm")
    class FirstArm(Scheduler):
        def update(self, obs):
            self.seen_steps = getattr(self, "seen_steps", 0) + 1

        def probabilities(self, active=None):
            mask = self._mask(active)
            p = np.zeros(len(self.arms))
            p[int(np.flatnonzero(mask)[0])] = 1.0
            return p

    agent = CurriculumAgent("third-party", ["x", "y"], scheduler="test_first_arm")
    assert agent.sample(5) == ["x"] * 5
    agent.retire("x")
    agent.end_step()
    assert agent.sample(3) == ["y"] * 3
    # Instances work too.
    inst = FirstArm()
    agent2 = CurriculumAgent("third-party-2", ["x", "y"], scheduler=inst)
    agent2.end_step()
    assert inst.seen_steps == 1
