"""Commands on the scheduler itself (set_params, switch, freeze, unfreeze): applied at a step boundary,
acknowledged with that step, refused with the reason, kept in the checkpoint state."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from trainer_agent import CurriculumAgent, available_schedulers, make_scheduler
from trainer_agent.errors import CommandError
from trainer_agent.schedulers import softmax

ARMS = ["easy", "mid", "hard"]
# Per arm: success rate of its completions.
RATES = {"easy": 0.9, "mid": 0.5, "hard": 0.1}


def _observe(agent: CurriculumAgent, step: int, n: int = 8) -> None:
    rng = np.random.default_rng(step)
    arms = [a for a in ARMS for _ in range(n)]
    rewards = [float(rng.random() < RATES[a]) for a in arms]
    groups = [i // 4 for i in range(len(arms))]
    agent.observe(arms, rewards, groups=groups)


def _trained(scheduler: str = "dump", steps: int = 6, **params: Any) -> CurriculumAgent:
    agent = CurriculumAgent("sc", ARMS, scheduler=scheduler, scheduler_params=params or None, redis_url=None)
    for s in range(steps):
        _observe(agent, s)
        agent.end_step()
    return agent


def test_every_scheduler_declares_a_schema_for_each_of_its_parameters() -> None:
    for name in available_schedulers():
        sched = make_scheduler(name, ARMS)
        assert set(type(sched).param_schema) == set(sched.params()), name


def test_set_params_is_applied_at_the_next_step_and_acknowledged_with_it() -> None:
    agent = _trained()
    cid = agent.set_scheduler_params(temperature=0.5, c=0.5, reason="calmer")
    stats = agent.end_step()
    [ack] = stats.acks
    assert (ack.id, ack.status, ack.applied_step) == (cid, "applied", stats.step)
    assert "temperature 0.1 -> 0.5" in ack.message and "c 1.0 -> 0.5" in ack.message
    assert agent.scheduler.params() == {"window": 300, "c": 0.5, "temperature": 0.5}
    expected = softmax(agent.scheduler.scores(), np.ones(3, dtype=bool), 0.5)
    np.testing.assert_allclose(stats.p, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(("params", "reason"), [
    ({"tau": 1.0}, "scheduler 'dump' has no parameter 'tau'; its parameters: c, temperature, window"),
    ({"temperature": 0.0}, "temperature must be in (0, inf), got 0.0"),
    ({"window": 0}, "window must be in [1, 100000], got 0"),
    ({"window": 2.5}, "window must be an integer, got 2.5"),
    ({"c": "big"}, "c must be a number, got 'big'"),
    ({"temperature": 0.1}, "dump already has temperature=0.1; set_params would change nothing"),
])
def test_bad_set_params_are_rejected_with_the_reason(params: dict[str, Any], reason: str) -> None:
    agent = _trained()
    before = agent.probabilities()
    agent.set_scheduler_params(**params)
    [ack] = agent.end_step().acks
    assert (ack.status, ack.applied_step, ack.message) == ("rejected", None, reason)
    assert agent.scheduler.params() == {"window": 300, "c": 1.0, "temperature": 0.1}
    assert agent.probabilities() == before


def test_a_switch_to_an_unknown_scheduler_is_refused_when_asked() -> None:
    agent = _trained(steps=0)
    with pytest.raises(CommandError, match=r"unknown scheduler 'dmup'; available: balanced, .*dump"):
        agent.switch_scheduler("dmup")
    with pytest.raises(CommandError, match="scheduler 'sec' has no parameter 'c'"):
        agent.switch_scheduler("sec", c=1.0)
    with pytest.raises(CommandError, match=r"alpha must be in \(0, 1\], got 2"):
        agent.switch_scheduler("sec", alpha=2)


def test_switch_dump_to_sec_carries_the_abs_adv_estimates_over() -> None:
    agent = _trained()
    mu = agent.scheduler.parts()["mu"]
    agent.switch_scheduler("sec", temperature=0.2)
    stats = agent.end_step()
    assert stats.acks[0].message == "switched dump -> sec (dump's per-arm abs_adv estimates carried over)"
    assert agent.scheduler.name == "sec" and agent.scheduler.params()["temperature"] == 0.2
    np.testing.assert_array_equal(agent.scheduler.scores(), mu)
    np.testing.assert_allclose(stats.p, softmax(mu, np.ones(3, dtype=bool), 0.2), atol=1e-15)


def test_switch_sec_to_dump_starts_each_window_from_q() -> None:
    agent = _trained("sec")
    q = agent.scheduler.scores().copy()
    agent.switch_scheduler("dump")
    agent.end_step()
    np.testing.assert_array_equal(agent.scheduler.parts()["mu"], q)
    assert agent.scheduler.state_dict()["n"] == [48, 48, 48]  # the run's completions, not 1


def test_switch_across_signals_warm_starts_from_the_recent_statistics() -> None:
    agent = _trained()
    agent.switch_scheduler("balanced")
    [ack] = agent.end_step().acks
    assert "warm-started from the run's recent per-arm statistics" in ack.message
    acc = agent.scheduler.parts()["acc_ema"]
    # The recent accuracy: easy arms solved most, hard arms least.
    assert acc[0] > acc[1] > acc[2]
    agent.switch_scheduler("uniform")
    agent.end_step()
    assert agent.probabilities() == pytest.approx(dict.fromkeys(ARMS, 1 / 3))
    agent.switch_scheduler("uniform")
    [ack] = agent.end_step().acks
    assert ack.message == "the run already uses uniform; set_params changes its parameters"


def test_a_smaller_dump_window_keeps_the_newest_values() -> None:
    agent = _trained(window=20)
    ring = agent.scheduler.state_dict()
    agent.set_scheduler_params(window=5)
    agent.end_step()
    sd = agent.scheduler.state_dict()
    assert sd["n"] == ring["n"] and [len(w) for w in sd["windows"]] == [5, 5, 5]
    for j in range(3):
        fifo = np.roll(np.array(ring["windows"][j]), -ring["head"][j])
        assert sorted(sd["windows"][j]) == sorted(fifo[-5:].tolist())


def test_freeze_holds_the_probabilities_while_learning_goes_on_and_overrides_still_apply() -> None:
    agent = _trained()
    agent.freeze()
    held = agent.end_step().p.copy()
    scores = agent.scheduler.scores().copy()
    for s in range(10, 14):
        _observe(agent, s)
        np.testing.assert_array_equal(agent.end_step().p, held)
    assert not np.array_equal(agent.scheduler.scores(), scores)  # it kept learning
    agent.pin("hard", 0.5)
    p = agent.end_step().p
    assert p[2] == 0.5 and p[:2] == pytest.approx(held[:2] / held[:2].sum() * 0.5)
    agent.freeze()
    [ack] = agent.end_step().acks
    assert ack.message == "the scheduler (dump) is already frozen"
    agent.release("hard")
    agent.retire("easy")
    p = agent.end_step().p
    assert p[0] == 0 and p[1:] == pytest.approx(held[1:] / held[1:].sum())
    agent.unfreeze()
    stats = agent.end_step()
    assert stats.acks[0].message == "unfroze dump"
    np.testing.assert_allclose(stats.p, agent.scheduler.probabilities(np.array([False, True, True])))
    agent.unfreeze()
    assert agent.end_step().acks[0].message == "the scheduler (dump) is not frozen; there is nothing to unfreeze"


def test_scheduler_commands_are_kept_in_the_checkpoint_state() -> None:
    agent = _trained()
    agent.switch_scheduler("sec", alpha=0.3)
    agent.end_step()
    agent.freeze()
    agent.end_step()
    state = json.loads(json.dumps(agent.state_dict()))
    # The training script still says dump: the state says a command switched it, and it wins.
    again = CurriculumAgent("sc", ARMS, scheduler="dump", redis_url=None)
    again.load_state_dict(state)
    assert (again.scheduler.name, again.scheduler.params()["alpha"]) == ("sec", 0.3)
    assert again.probabilities() == agent.probabilities()
    for s in range(20, 24):
        _observe(agent, s)
        _observe(again, s)
        np.testing.assert_array_equal(agent.end_step().p, again.end_step().p)
    agent.unfreeze()
    again.unfreeze()
    _observe(agent, 30)
    _observe(again, 30)
    np.testing.assert_array_equal(agent.end_step().p, again.end_step().p)
    np.testing.assert_array_equal(agent.scheduler.scores(), again.scheduler.scores())


def test_a_state_without_scheduler_commands_still_needs_the_same_scheduler() -> None:
    state = _trained().state_dict()
    with pytest.raises(Exception, match="saved with scheduler 'dump'; this agent runs 'sec'"):
        CurriculumAgent("sc", ARMS, scheduler="sec", redis_url=None).load_state_dict(state)
    del state["scheduler_control"]  # a state saved before scheduler commands existed
    again = CurriculumAgent("sc", ARMS, scheduler="dump", redis_url=None)
    again.load_state_dict(state)
    assert again.step == 6
