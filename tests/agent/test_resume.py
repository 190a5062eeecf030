"""Resuming a run: `start_step`, and `state_dict()` / `load_state_dict()` for every scheduler."""

from __future__ import annotations

import copy
import io
import json
import time
from typing import Any

import numpy as np
import pytest
import redis
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.agent.test_transport import messages, post_command, wait_for
from tests.conftest import REDIS_URL
from trainer_agent import ConfigError, CurriculumAgent, StepStats

ARMS = ["a", "b", "c", "d", "e"]
SCHEDULERS = ["uniform", "fixed", "dump", "sec", "learning_progress", "balanced"]
# Small DUMP windows so that they wrap within a test.
PARAMS: dict[str, dict[str, Any]] = {"fixed": {"weights": [1.0, 0.0, 2.0, 3.0, 0.5]}, "dump": {"window": 6}}


def make(scheduler: str, seed: int = 0, **kw: Any) -> CurriculumAgent:
    return CurriculumAgent("resume", ARMS, scheduler=scheduler, scheduler_params=PARAMS.get(scheduler), seed=seed,
                           **kw)


def observe_random(agent: CurriculumAgent, rng: np.random.Generator, prompts: int = 8, g: int = 4) -> None:
    arms = agent.sample(prompts)
    comp = [a for a in arms for _ in range(g)]
    agent.observe(comp, rng.random(len(comp)), groups=np.repeat(np.arange(prompts), g))


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """Through JSON, as a checkpoint would keep it (and proof that it is JSON)."""
    return json.loads(json.dumps(state, allow_nan=False))


def assert_plain(x: Any, path: str = "state") -> None:
    """Only dict / list / str / int / float / bool / None, all the way down: no numpy scalars or arrays."""
    if isinstance(x, dict):
        for k, v in x.items():
            assert type(k) is str, f"{path}: key {k!r}"
            assert_plain(v, f"{path}.{k}")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            assert_plain(v, f"{path}[{i}]")
    else:
        assert x is None or type(x) in (str, int, float, bool), f"{path}: {type(x).__name__}"


def same_step(s1: StepStats, s2: StepStats) -> None:
    assert s1.step == s2.step
    assert np.array_equal(s1.p, s2.p)
    assert s1.records() == s2.records()
    # Ids differ where each agent was given its own command; what they answered may not.
    assert [(a.status, a.applied_step, a.message) for a in s1.acks] == [
        (a.status, a.applied_step, a.message) for a in s2.acks]
    assert s1.expired == s2.expired


# -- start_step ----------------------------------------------------------------------------------


def test_start_step_numbers_steps_acks_and_boost_expiry():
    agent = CurriculumAgent("start", ["a", "b"], scheduler="uniform", start_step=7)
    assert agent.step == 7
    cid = agent.boost("a", 3.0, steps=2)
    stats = agent.end_step()
    assert stats.step == 7 and [(a.id, a.applied_step) for a in stats.acks] == [(cid, 7)]
    assert agent.probabilities()["a"] == pytest.approx(0.75)
    assert agent.end_step().step == 8 and agent.probabilities()["a"] == pytest.approx(0.75)
    stats = agent.end_step()  # in force for two steps (8 and 9), as from step 0
    assert stats.step == 9 and stats.expired == ["a"] and agent.probabilities()["a"] == 0.5
    assert agent.step == 10


@pytest.mark.parametrize("bad", [-1, 1.5, 2.0, "3", True, None, 2**31])
def test_start_step_must_be_a_non_negative_integer(bad):
    with pytest.raises(ConfigError, match=r"start_step must be an integer in \[0, 2147483647\]"):
        CurriculumAgent("bad-start", ["a"], start_step=bad)


def test_start_step_accepts_numpy_integers():
    agent = CurriculumAgent("np-start", ["a"], start_step=np.int64(4))
    assert agent.end_step().step == 4 and type(agent.step) is int


def test_start_step_on_the_wire_heartbeat_steps_and_run_end(key_prefix, tmp_path):
    r = redis.Redis.from_url(REDIS_URL)
    kw = dict(redis_url=REDIS_URL, key_prefix=key_prefix, spool_dir=tmp_path, heartbeat_s=0.05)
    # A resumed job that has not completed a step yet: its heartbeats and run_end name the run's
    # last completed step, the one before start_step.
    idle = CurriculumAgent("t-start", ["a", "b"], start_step=5, **kw)
    wait_for(lambda: any(m["type"] == "heartbeat" for m in messages(r, key_prefix)))
    idle.close()
    rng = np.random.default_rng(0)
    with CurriculumAgent("t-start", ["a", "b"], start_step=5, **kw) as agent:
        for _ in range(3):
            observe_random(agent, rng, prompts=2, g=2)
            agent.end_step()
        cid = post_command(r, key_prefix, "t-start", kind="pin", arm="a", value=0.25)
        wait_for(lambda: len(agent._transport._commands) == 1)
        agent.end_step()
        time.sleep(0.15)  # a heartbeat after the steps
    msgs = messages(r, key_prefix)
    r.close()
    beats = [m["step"] for m in msgs if m["type"] == "heartbeat"]
    assert beats[0] == 4 and set(beats) <= {4, 5, 6, 7, 8} and beats[-1] == 8
    assert [m["step"] for m in msgs if m["type"] == "step"] == [5, 6, 7, 8]
    assert [(m["id"], m["applied_step"]) for m in msgs if m["type"] == "command_ack"] == [(cid, 8)]
    assert [m["step"] for m in msgs if m["type"] == "run_end"] == [4, 8]


# -- state_dict round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_state_dict_round_trip_continues_exactly(scheduler):
    rng = np.random.default_rng(1)
    agent = make(scheduler, seed=3)
    for t in range(15):
        observe_random(agent, rng)
        if t == 4:
            agent.pin("c", 0.3)
            agent.boost("b", 2.5, steps=6)  # still in force at the save, 2 steps left then
        if t == 9:
            agent.retire("e")
        agent.end_step()
    restore_id = agent.restore("e")  # queued, not applied yet: the state carries it
    state = agent.state_dict()
    assert_plain(state)
    state = roundtrip(state)
    fresh = make(scheduler, seed=99)  # another seed: the saved generator state must win
    fresh.load_state_dict(state)
    assert fresh.step == agent.step == 15
    p0, p1 = agent.probabilities(), fresh.probabilities()
    assert max(abs(p0[a] - p1[a]) for a in ARMS) <= 1e-12
    assert p0 == p1
    # The same observations give the same steps from here on, bit for bit: statistics, generator,
    # overrides (the boost expires at the same step, the queued restore is applied by both).
    for t in range(4):
        arms = agent.sample(8)
        assert fresh.sample(8) == arms
        comp = [a for a in arms for _ in range(4)]
        rewards, groups = rng.random(len(comp)), np.repeat(np.arange(8), 4)
        agent.observe(comp, rewards, groups=groups)
        fresh.observe(comp, rewards, groups=groups)
        s0, s1 = agent.end_step(), fresh.end_step()
        same_step(s0, s1)
        if t == 0:
            assert [a.id for a in s0.acks] == [a.id for a in s1.acks] == [restore_id]
    assert agent._overrides.answered == fresh._overrides.answered


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_state_survives_torch_save_with_weights_only_load(scheduler):
    rng = np.random.default_rng(2)
    agent = make(scheduler)
    for _ in range(5):
        observe_random(agent, rng)
        agent.end_step()
    buf = io.BytesIO()
    torch.save({"model": {}, "curriculum": agent.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["curriculum"]
    fresh = make(scheduler)
    fresh.load_state_dict(state)
    assert fresh.probabilities() == agent.probabilities() and fresh.step == 5


step_st = st.lists(
    st.tuples(
        st.integers(0, 12),  # prompts sampled (0: an empty step)
        st.lists(st.tuples(st.sampled_from(["pin", "boost", "retire", "restore", "release"]),
                           st.sampled_from(ARMS), st.floats(0.05, 0.45), st.one_of(st.none(), st.integers(1, 5))),
                 max_size=2),
    ),
    min_size=1, max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(scheduler=st.sampled_from(SCHEDULERS), steps=step_st, after=step_st, seed=st.integers(0, 2**16))
def test_any_history_saved_and_loaded_continues_like_the_original(scheduler, steps, after, seed):
    rng = np.random.default_rng(seed)

    def play(agents: list[CurriculumAgent], plan: list[Any]) -> None:
        for prompts, cmds in plan:
            arms = agents[0].sample(prompts)
            for other in agents[1:]:
                assert other.sample(prompts) == arms
            rewards = rng.random(2 * len(arms))
            for ag in agents:
                if arms:
                    ag.observe([a for a in arms for _ in range(2)], rewards, groups=np.repeat(np.arange(len(arms)), 2))
                for kind, arm, value, n in cmds:
                    getattr(ag, kind)(arm, *((value,) if kind == "pin" else (1 + 4 * value, n) if kind == "boost"
                                             else ()))
            stats = [ag.end_step() for ag in agents]
            for s in stats[1:]:
                same_step(stats[0], s)

    agent = make(scheduler, seed=seed)
    play([agent], steps)
    fresh = make(scheduler, seed=seed + 1)
    fresh.load_state_dict(roundtrip(agent.state_dict()))
    assert fresh.step == agent.step == len(steps)
    assert fresh.probabilities() == agent.probabilities()
    play([agent, fresh], after)


def test_loaded_step_wins_over_start_step():
    agent = make("sec")
    agent.end_step()
    agent.end_step()
    again = make("sec", start_step=40)
    again.load_state_dict(roundtrip(agent.state_dict()))
    assert again.end_step().step == 2


def test_local_only_pins_and_retirements_resume_without_redis():
    agent = make("dump", redis_url=None)
    agent.pin("a", 0.5)
    agent.retire("d")
    agent.end_step()
    fresh = make("dump", redis_url=None)
    fresh.load_state_dict(roundtrip(agent.state_dict()))
    p = fresh.probabilities()
    assert p["a"] == 0.5 and p["d"] == 0.0 and p == agent.probabilities()
    rec = {r["arm"]: r for r in fresh.end_step().records()}
    assert rec["a"]["pin"] == 0.5 and rec["d"]["state"] == "retired"


def test_state_between_observe_and_end_step_is_saved_without_them(caplog):
    agent = make("sec")
    agent.observe(["a"], [1.0], advantages=[1.0])
    state = agent.state_dict()
    assert "not saved" in caplog.text
    assert state["scheduler"]["q"] == [0.0] * len(ARMS)


# -- states that do not fit ----------------------------------------------------------------------


def saved(scheduler: str = "dump", **kw: Any) -> dict[str, Any]:
    agent = make(scheduler, **kw)
    rng = np.random.default_rng(0)
    for _ in range(4):
        observe_random(agent, rng)
        agent.end_step()
    return roundtrip(agent.state_dict())


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        (["a", "b", "c", "d"], "other arms than this agent's: only in the state: e"),
        (["a", "b", "c", "d", "e", "f"], "other arms than this agent's: not in the state: f"),
        (["e", "d", "c", "b", "a"], "the same arms in another order"),
    ],
)
def test_loading_into_other_arms_is_a_config_error(arms, message):
    agent = CurriculumAgent("other-arms", arms, scheduler="dump")
    with pytest.raises(ConfigError, match=message):
        agent.load_state_dict(saved())


def test_loading_into_another_scheduler_is_a_config_error():
    with pytest.raises(ConfigError, match="saved with scheduler 'dump'; this agent runs 'sec'"):
        make("sec").load_state_dict(saved("dump"))


def test_dump_window_must_match_and_other_parameter_changes_are_logged(caplog):
    agent = CurriculumAgent("w", ARMS, scheduler="dump", scheduler_params={"window": 50})
    with pytest.raises(ConfigError, match="windows of 6 values; this scheduler's window is 50"):
        agent.load_state_dict(saved("dump"))
    hot = CurriculumAgent("w", ARMS, scheduler="dump", scheduler_params={"window": 6, "temperature": 0.5})
    hot.load_state_dict(saved("dump"))
    assert "temperature 0.1 -> 0.5" in caplog.text


def _corrupt(state: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    state = copy.deepcopy(state)
    *parents, last = path.split(".")
    node: Any = state
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return state


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("version", 7, "unknown version 7"),
        ("step", -3, "step: expected an integer"),
        ("step", "12", "step: expected an integer"),
        ("n_total", [1, 2], "n_total: expected 5 values, got 2"),
        ("rng", KeyError, "missing 'rng'"),
        ("rng.bit_generator", "MT19937", "saved from a 'MT19937' generator"),
        ("rng.state", {"state": "x", "inc": "1"}, "malformed generator state"),
        ("scheduler", KeyError, "missing 'scheduler'"),
        ("scheduler.n", [1, 2, 3, 4, "5"], r"dump state: n: expected integers >= 0"),
        ("scheduler.windows", [[0.5]] * 4, "windows must be a list of 5 lists"),
        ("scheduler.windows.0", [0.1, float("nan")], "window of 'a'"),
        ("scheduler.head", [6, 0, 0, 0, 0], "window of 'a' is inconsistent"),
        ("overrides.active", [False] * 5, "every arm is retired"),
        ("overrides.pin", [0.7, 0.6, None, None, None], "pins sum to more than 1"),
        ("overrides.pin", [1.5, None, None, None, None], "pin of 'a' is 1.5"),
        ("overrides.boost", [1.0, 0.0, 1.0, 1.0, 1.0], "boost factors must be positive"),
        ("overrides.boost_left", [None, 0, None, None, None], "boost_left of 'b'"),
        ("overrides.answered", [{"id": 3}], "malformed answer"),
        ("pending_commands", [{"kind": "pin", "arm": "zz", "id": "x", "value": 0.5}], "has no arm 'zz'; its arms"),
    ],
)
def test_malformed_state_is_a_config_error_and_changes_nothing(path, value, message):
    state = saved("dump")
    agent = make("dump", seed=5)
    rng = np.random.default_rng(9)
    observe_random(agent, rng)
    agent.end_step()
    before = (agent.step, agent.probabilities(), agent.state_dict())
    with pytest.raises(ConfigError, match=message):
        agent.load_state_dict(_corrupt(state, path, value))
    assert (agent.step, agent.probabilities(), agent.state_dict()) == before


@pytest.mark.parametrize("scheduler", ["sec", "learning_progress", "balanced"])
def test_scheduler_statistics_out_of_range_are_config_errors(scheduler):
    key = {"sec": "q", "learning_progress": "fast", "balanced": "accuracy_ema"}[scheduler]
    bad = [1.0, float("inf"), 0.0, 0.0, 0.0] if scheduler == "sec" else [0.2, 1.5, 0.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match=f"{scheduler} state: {key}"):
        make(scheduler).load_state_dict(_corrupt(saved(scheduler), f"scheduler.{key}", bad))


def test_balanced_checkpoint_of_an_earlier_release_loads():
    # Before 0.2 the balanced scheduler saved its accuracy EMA as "acc".
    state = saved("balanced")
    state["scheduler"]["acc"] = state["scheduler"].pop("accuracy_ema")
    again = make("balanced")
    again.load_state_dict(state)
    assert again.scheduler.accuracy_ema.tolist() == state["scheduler"]["acc"]


def test_not_a_state_is_a_config_error():
    with pytest.raises(ConfigError, match="agent state: expected a dict, got list"):
        make("dump").load_state_dict([1, 2])  # type: ignore[arg-type]


def test_custom_scheduler_without_state_methods_warns_once(caplog):
    from trainer_agent import Scheduler

    class Learner(Scheduler):
        name = "test_learner_no_state"

        def _init_state(self, k: int) -> None:
            self.w = np.ones(k)

        def update(self, obs: Any) -> None:
            self.w[obs.seen] += 1

        def probabilities(self, active: Any = None) -> Any:
            w = np.where(self._mask(active), self.w, 0.0)
            return w / w.sum()

    agent = CurriculumAgent("custom", ARMS, scheduler=Learner())
    agent.state_dict()
    agent.state_dict()
    assert caplog.text.count("does not implement state_dict/load_state_dict") == 1


# -- with Redis: commands restored from the control stream and the loaded state agree ----------------


def test_loaded_state_and_commands_replayed_from_redis_are_applied_once(key_prefix, tmp_path):
    r = redis.Redis.from_url(REDIS_URL)
    run = "t-resume"
    arms = [f"arm{i:02d}" for i in range(8)]
    kw = dict(scheduler="uniform", redis_url=REDIS_URL, key_prefix=key_prefix, spool_dir=tmp_path)
    rng = np.random.default_rng(4)

    def step(agent: CurriculumAgent) -> StepStats:
        sampled = agent.sample(4)
        agent.observe(sampled, rng.random(4), advantages=rng.standard_normal(4))
        return agent.end_step()

    with CurriculumAgent(run, arms, **kw) as first:
        step(first)
        c1 = post_command(r, key_prefix, run, kind="boost", arm="arm01", value=2.0, steps=3)
        wait_for(lambda: len(first._transport._commands) == 1)
        assert [a.id for a in step(first).acks] == [c1]  # applied at step 1, in force for steps 2-4
        state = roundtrip(first.state_dict())  # the checkpoint: at step 2, boost with 3 steps left
        step(first)
        c2 = post_command(r, key_prefix, run, kind="retire", arm="arm03")
        wait_for(lambda: len(first._transport._commands) == 1)
        assert [a.id for a in step(first).acks] == [c2]
    # The job dies and resumes from the checkpoint. Redis replays c1 and c2 (answered before): c1 is
    # in the loaded state, so its boost keeps the steps it had left; c2 came after the checkpoint
    # and is applied again. Neither is acknowledged twice.
    with CurriculumAgent(run, arms, **kw) as again:
        again.load_state_dict(state)
        wait_for(lambda: len(again._transport._commands) == 2)
        stats = [step(again) for _ in range(3)]
    assert [s.step for s in stats] == [2, 3, 4]
    assert all(s.acks == [] for s in stats)
    assert stats[0].probabilities["arm03"] == 0.0
    assert stats[0].probabilities["arm01"] == pytest.approx(2 / 8)
    assert [s.expired for s in stats] == [[], [], ["arm01"]]
    acks = [m["id"] for m in messages(r, key_prefix) if m["type"] == "command_ack"]
    assert sorted(acks) == sorted([c1, c2])
    r.close()
