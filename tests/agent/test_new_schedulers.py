"""The plan-following schedulers: staged, cyclical and replay (trainer_agent/staged_schedulers.py,
docs/formulas.md): their formulas, commands on them, switches to and from them, checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.routes.exports import _csv_lines
from server.store.exports import ARM_COLUMNS
from trainer_agent import Command, CommandError, ConfigError, CurriculumAgent, StepStats, make_scheduler
from trainer_agent.scheduler_control import SchedulerControl
from trainer_agent.schedulers import softmax, uniform_over
from trainer_agent.staged_schedulers import MAX_SCHEDULE_VALUES, schedule_from_csv
from trainer_agent.stats import ObservationBuffer, StepObservations

ARMS = ["easy", "mid", "hard"]
RATES = {"easy": 0.9, "mid": 0.5, "hard": 0.1}
ALL = np.ones(3, dtype=bool)


def _observe(agent: CurriculumAgent, step: int, n: int = 8) -> None:
    rng = np.random.default_rng(step)
    p = agent.probabilities()
    arms = [a for a in ARMS for _ in range(n) if p[a] > 0] or ARMS
    rewards = [float(rng.random() < RATES[a]) for a in arms]
    agent.observe(arms, rewards, groups=[i // 4 for i in range(len(arms))])


def _agent(scheduler: str, **params: Any) -> CurriculumAgent:
    return CurriculumAgent("new", ARMS, scheduler=scheduler, scheduler_params=params or None, redis_url=None)


def _run(agent: CurriculumAgent, steps: int, first: int = 0) -> list[StepStats]:
    out = []
    for s in range(first, first + steps):
        _observe(agent, s)
        out.append(agent.end_step())
    return out


def _obs(per_arm: dict[str, tuple[int, int]]) -> StepObservations:
    """One step: per arm (completions, correct), |A| 0.5 each."""
    buf = ObservationBuffer(len(ARMS), 0.5)
    idx = [ARMS.index(a) for a, (n, _) in per_arm.items() for _ in range(n)]
    rewards = [float(i < c) for a, (n, c) in per_arm.items() for i in range(n)]
    buf.add(np.array(idx, dtype=np.int64), np.array(rewards), np.full(len(idx), 0.5))
    return buf.reduce()


def _same_after_resume(scheduler: str, steps: int, more: int, **params: Any) -> None:
    agent = _agent(scheduler, **params)
    _run(agent, steps)
    fresh = _agent(scheduler, **params)
    fresh.load_state_dict(json.loads(json.dumps(agent.state_dict(), allow_nan=False)))
    assert fresh.scheduler.state_dict() == agent.scheduler.state_dict()
    for a, b in zip(_run(agent, more, steps), _run(fresh, more, steps), strict=True):
        assert a.p.tolist() == b.p.tolist()
        assert set(a.parts) == set(b.parts)
        for name, values in a.parts.items():
            np.testing.assert_array_equal(values, b.parts[name])


# -- staged ------------------------------------------------------------------------------------------------
def test_staged_advances_at_the_given_steps_with_a_replay_share_and_shows_the_stage_in_the_records() -> None:
    agent = _agent("staged", stages=[["easy"], ["mid"], ["hard"]], at_steps=[3, 5], gate=None, replay=0.2)
    assert agent.probabilities() == {"easy": 1.0, "mid": 0.0, "hard": 0.0}
    stats = _run(agent, 7)
    # Step s's record holds the probabilities in force from step s + 1: stage 1 from step 3, stage 2 from 5.
    assert [s.p.tolist() for s in stats[:2]] == [[1.0, 0.0, 0.0]] * 2
    assert [s.p.tolist() for s in stats[2:4]] == [[0.2, 0.8, 0.0]] * 2
    np.testing.assert_allclose(stats[4].p, [0.1, 0.1, 0.8], rtol=0, atol=1e-15)
    assert [s.parts["stage"][0] for s in stats] == [0, 0, 1, 1, 2, 2, 2]
    assert [rec["parts"]["stage"] for rec in stats[2].records()] == [1.0, 1.0, 1.0]


def test_staged_gate_opens_on_the_stages_accuracy_over_its_last_steps() -> None:
    s = make_scheduler("staged", ARMS, {"stages": [["easy", "mid"], ["hard"]], "gate": 0.75, "gate_steps": 3})
    s.update(_obs({"easy": (4, 4), "mid": (4, 2)}))  # 6/8
    s.update(_obs({"easy": (4, 4), "mid": (4, 2), "hard": (4, 4)}))  # hard is not in the stage
    assert s.stage == 0 and s.parts()["stage_accuracy"][0] == 0.75  # two steps of three: still closed
    s.update(_obs({"hard": (4, 4)}))  # the stage not observed: no step of the stage
    assert s.stage == 0
    s.update(_obs({"easy": (4, 3), "mid": (4, 3)}))  # 18/24 = 0.75 over three steps: open
    assert s.stage == 1 and np.isnan(s.stage_accuracy())
    assert s.probabilities().tolist() == [0.05, 0.05, 0.9]


def test_staged_with_a_base_scheduler_samples_by_it_within_the_stage() -> None:
    s = make_scheduler("staged", ARMS, {"stages": [["easy", "mid"], ["hard"]], "at_steps": [1], "gate": None,
                                        "replay": 0.0, "base": "dump", "base_params": {"temperature": 0.5}})
    dump = make_scheduler("dump", ARMS, {"temperature": 0.5})
    obs = _obs({"easy": (4, 4), "mid": (2, 1)})
    s.update(obs)
    dump.update(obs)
    assert s.stage == 1
    assert s.probabilities().tolist() == [0.0, 0.0, 1.0]
    # The base learned from stage 0's arms too; its scores and parts are the staged scheduler's.
    np.testing.assert_array_equal(s.scores(), dump.scores())
    np.testing.assert_array_equal(s.parts()["mu"], dump.parts()["mu"])
    early = make_scheduler("staged", ARMS, {"stages": [["easy", "mid"], ["hard"]], "gate": None, "base": "dump"})
    early.update(obs)
    stage0 = np.array([True, True, False])
    np.testing.assert_array_equal(early.probabilities(), softmax(dump.scores(), stage0, 0.1))


def test_staged_whose_stage_is_retired_falls_back_to_the_earlier_stages() -> None:
    s = make_scheduler("staged", ARMS, {"stages": [["easy"], ["mid", "hard"]], "at_steps": [1], "gate": None})
    s.update(_obs({"easy": (2, 2)}))
    assert s.probabilities(np.array([True, True, False])).tolist() == [0.1, 0.9, 0.0]
    assert s.probabilities(np.array([True, False, False])).tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(("params", "message"), [
    ({"stages": [["easy"], ["nope"]]}, "stages name unknown arms: nope"),
    ({"stages": [["easy"], ["easy", "mid"]]}, "more than one stage"),
    ({"stages": [["easy"], []]}, "non-empty lists"),
    ({"at_steps": [5, 5]}, "at_steps must be increasing"),
    ({"stages": [["easy"], ["mid"]], "at_steps": [2, 4]}, "at_steps gives 2 steps for 1 stage changes"),
    ({"gate": 1.5}, "gate must be null or a number in [0, 1], got 1.5"),
    ({"replay": 1.0}, "replay must be in [0, 1)"),
    ({"base": "staged"}, "base must be one of uniform, fixed, dump, sec, learning_progress, balanced"),
    ({"base": "dump", "base_params": {"tau": 1}}, "scheduler 'dump' has no parameter 'tau'"),
])
def test_staged_refuses_bad_parameters(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_scheduler("staged", ARMS, params)


def test_staged_resumes_from_a_checkpoint_where_it_was() -> None:
    _same_after_resume("staged", 6, 8, gate=0.6, gate_steps=2, base="sec")
    _same_after_resume("staged", 4, 6, at_steps=[3], gate=None, base="dump")


def test_switch_to_staged_skips_the_stages_the_run_already_passes_and_carries_dump_over() -> None:
    agent = _agent("dump")
    _run(agent, 10)
    dump_mu = agent.scheduler.parts()["mu"]
    agent.switch_scheduler("staged", gate=0.7, base="dump")
    [ack] = agent.end_step().acks
    assert ack.status == "applied" and "dump's per-arm abs_adv estimates carried over" in ack.message
    staged = agent.scheduler
    # easy (0.9) passes the gate on the recent statistics; mid (about 0.5) does not.
    assert staged.name == "staged" and staged.stage == 1 and staged.parts()["stage"][0] == 1.0
    np.testing.assert_allclose(staged.learner().parts()["mu"][dump_mu > 0], dump_mu[dump_mu > 0], atol=0.2)
    agent.switch_scheduler("sec")
    [ack] = agent.end_step().acks
    assert "dump's per-arm abs_adv estimates carried over" in ack.message


def test_set_params_on_staged_keeps_its_stage_and_base() -> None:
    agent = _agent("staged", at_steps=[2], gate=None, base="dump")
    _run(agent, 4)
    n_before = agent.scheduler.learner().n.copy()
    agent.set_scheduler_params(replay=0.3)
    [stats] = _run(agent, 1, 4)
    assert stats.acks[0].message == "set staged replay 0.1 -> 0.3"
    assert agent.scheduler.stage == 1 and stats.parts["stage"][0] == 1.0
    assert (agent.scheduler.learner().n >= n_before).all() and agent.scheduler.learner().n.sum() > n_before.sum()


# -- cyclical ----------------------------------------------------------------------------------------------
def test_cyclical_alternates_the_base_and_uniform_and_the_base_keeps_learning() -> None:
    c = make_scheduler("cyclical", ARMS, {"curriculum_steps": 2, "uniform_steps": 3})
    dump = make_scheduler("dump", ARMS)
    phases = []
    for step in range(10):
        obs = _obs({"easy": (4, 4), "mid": (4 + step, 2), "hard": (1, 0)})
        c.update(obs)
        dump.update(obs)
        phases.append(c.parts()["phase"][0])
        expected = dump.probabilities(ALL) if phases[-1] else uniform_over(ALL)
        np.testing.assert_array_equal(c.probabilities(), expected)
        np.testing.assert_array_equal(c.parts()["mu"], dump.parts()["mu"])
    # Steps 0-1 curriculum, 2-4 uniform, 5-6 curriculum...; phase after step s is the phase of step s + 1.
    assert phases == [1, 0, 0, 0, 1, 1, 0, 0, 0, 1]
    u = make_scheduler("cyclical", ARMS, {"curriculum_steps": 1, "uniform_steps": 2, "start": "uniform"})
    seen = []
    for _ in range(6):
        seen.append(u.parts()["phase"][0])
        u.update(_obs({"easy": (1, 1)}))
    assert seen == [0, 0, 1, 0, 0, 1]


def test_cyclical_switch_carries_dumps_window_both_ways_and_resumes() -> None:
    agent = _agent("dump")
    _run(agent, 5)
    mu = agent.scheduler.parts()["mu"]
    agent.switch_scheduler("cyclical", curriculum_steps=3, uniform_steps=2)
    [ack] = agent.end_step().acks
    assert "dump's per-arm abs_adv estimates carried over" in ack.message
    np.testing.assert_allclose(agent.scheduler.learner().parts()["mu"], mu, atol=0.3)
    agent.set_scheduler_params(uniform_steps=4)
    [stats] = _run(agent, 1, 6)
    assert stats.acks[0].message == "set cyclical uniform_steps 2 -> 4" and agent.scheduler.t == 1
    agent.set_scheduler_params(base="sec")  # another base without its parameters: its defaults, afresh
    [stats] = _run(agent, 1, 7)
    assert stats.acks[0].message == "set cyclical base 'dump' -> 'sec'"
    assert agent.scheduler.params()["base_params"] == {"alpha": 0.5, "temperature": 1.0, "decay_absent": False}
    _same_after_resume("cyclical", 7, 9, curriculum_steps=2, uniform_steps=3, base="balanced")


@pytest.mark.parametrize(("params", "reason"), [
    ({"uniform_steps": 0}, "uniform_steps must be in [1, 1e+09], got 0"),
    ({"start": "middle"}, "start must be one of curriculum, uniform, got 'middle'"),
    ({"base": "replay"}, "base must be one of"),
])
def test_switch_to_cyclical_with_bad_parameters_is_refused_with_the_reason(params: dict[str, Any], reason: str) -> None:
    agent = _agent("dump")
    with pytest.raises(CommandError, match=re.escape(reason)):
        agent.switch_scheduler("cyclical", **params)
    assert agent.scheduler.name == "dump" and not agent.end_step().acks


# -- replay ------------------------------------------------------------------------------------------------
def _export(stats: list[StepStats], path: Path) -> Path:
    """The run's arms export as the server writes it (server/routes/exports.py)."""
    rows = ([s.step, s.ts, rec["arm"], rec["p"], rec["score"], *([None] * (len(ARM_COLUMNS) - 5))]
            for s in stats for rec in s.records())
    path.write_text("".join(_csv_lines(ARM_COLUMNS, rows)))
    return path


def test_replay_reproduces_an_exported_runs_probabilities_step_by_step(tmp_path: Path) -> None:
    original = _run(_agent("dump", temperature=0.3), 12)
    schedule = schedule_from_csv(_export(original, tmp_path / "run-arms.csv"))
    agent = _agent("replay", schedule=schedule)
    replayed = _run(agent, 15)
    # To the last bits (the replay renormalises what the export lists); past the schedule's end its last row holds.
    np.testing.assert_allclose([s.p for s in replayed], [*(s.p for s in original), *[original[-1].p] * 3],
                               rtol=0, atol=1e-15)
    assert replayed[-1].parts["replay_step"][0] == 11
    thinned = schedule_from_csv(tmp_path / "run-arms.csv", every=5)
    assert thinned["steps"] == [0, 5, 10, 11]


def test_replay_given_as_a_list_holds_each_row_and_gives_missing_arms_zero() -> None:
    rows = [(0, "easy", 0.5), (0, "mid", 0.5), (4, "easy", 1.0), (4, "mid", 3.0), (4, "other", 9.0)]
    r = make_scheduler("replay", ARMS, {"schedule": rows})
    got = []
    for _ in range(6):
        got.append(r.probabilities().tolist())
        r.update(_obs({"easy": (1, 1)}))
    assert got == [[0.5, 0.5, 0.0]] * 5 + [[0.25, 0.75, 0.0]]
    assert r.probabilities(np.array([False, False, True])).tolist() == [0.0, 0.0, 1.0]
    shifted = make_scheduler("replay", ARMS, {"schedule": {"4": {"easy": 1.0, "mid": 3.0}}, "start_step": 4})
    assert shifted.probabilities().tolist() == [0.25, 0.75, 0.0]


@pytest.mark.parametrize(("schedule", "message"), [
    ([(0, "x", 1.0), (1, "y", 1.0)], "names none of this run's arms (easy, mid, hard); it names x, y"),
    ([(0, "easy", 0.0)], "every arm has probability 0 at step 0"),
    ([(0, "easy", -1.0)], "schedule: probability of 'easy' at step 0"),
    ([(0, "easy", 1.0), (0, "easy", 2.0)], "step 0 gives arm 'easy' twice"),
    ({"steps": list(range(MAX_SCHEDULE_VALUES)), "arms": ["easy", "mid"],
      "probabilities": [[1.0, 1.0]] * MAX_SCHEDULE_VALUES}, "every k-th step"),
])
def test_replay_refuses_a_schedule_it_cannot_follow(schedule: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        make_scheduler("replay", ARMS, {"schedule": schedule})
    assert message in str(e.value)


def test_replay_resumes_and_switches(tmp_path: Path) -> None:
    schedule = schedule_from_csv(_export(_run(_agent("sec"), 6), tmp_path / "a.csv"))
    _same_after_resume("replay", 3, 5, schedule=schedule)
    agent = _agent("dump")
    _run(agent, 3)
    # Applied at the end of step 3: its first update is step 4's, and row 3 is in force at once.
    agent.switch_scheduler("replay", schedule=schedule, start_step=4)
    [stats] = _run(agent, 1, 3)
    assert stats.acks[0].status == "applied"
    assert stats.p.tolist() == schedule["probabilities"][3]


@pytest.mark.parametrize(("name", "params"), [
    ("staged", {"gate": 0.7, "base": "dump"}),
    ("cyclical", {"curriculum_steps": 2, "uniform_steps": 1}),
    ("replay", {"schedule": [(0, "easy", 1.0), (0, "hard", 3.0)]}),
])
def test_a_switch_previewed_from_the_snapshot_is_what_the_agent_applies(name: str, params: dict[str, Any]) -> None:
    agent = _agent("dump")
    _run(agent, 6)
    snapshot = agent._control.snapshot(5)["state"]
    rebuilt = SchedulerControl.from_state(json.loads(json.dumps(snapshot)), ARMS)
    cmd = Command("switch", "", scheduler=name, params=params, id="c1")
    rebuilt.apply(cmd, ALL)
    agent.switch_scheduler(name, **params)
    stats = agent.end_step()  # no observation in between
    assert stats.acks[0].status == "applied"
    assert stats.p.tolist() == rebuilt.probabilities(ALL).tolist()
    assert rebuilt.scheduler.state_dict() == agent.scheduler.state_dict()
