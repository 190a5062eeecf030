"""Override semantics (DESIGN.md §1): hand cases and hypothesis properties over random sequences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer_agent import CommandError, CurriculumAgent
from trainer_agent.overrides import Command, Overrides

ARMS = ["a", "b", "c", "d", "e"]


def test_pin_exact_and_rest_shares_in_proportion():
    ov = Overrides(["a", "b", "c"])
    assert ov.apply(Command("pin", "a", 0.5), 0).status == "applied"
    p = ov.resolve(np.array([0.2, 0.6, 0.2]))
    assert p[0] == 0.5
    assert abs(p[1] - 0.5 * 0.75) < 1e-15 and abs(p[2] - 0.5 * 0.25) < 1e-15


def test_boost_then_renormalise_and_expiry():
    ov = Overrides(["a", "b"])
    ov.apply(Command("boost", "a", 3.0, steps=2), 0)
    p = ov.resolve(np.array([0.25, 0.75]))
    assert abs(p[0] - 0.5) < 1e-15
    assert ov.tick() == []
    assert ov.tick() == ["a"]
    assert ov.resolve(np.array([0.25, 0.75]))[0] == 0.25


def test_snapshot_is_shared_until_the_state_changes_and_never_changes_itself():
    ov = Overrides(["a", "b", "c"])
    s0 = ov.snapshot()
    assert ov.snapshot() is s0  # no change, no copy
    with pytest.raises(ValueError):
        s0.pin[0] = 0.5  # read-only: steps sharing it cannot alter each other's record
    ov.apply(Command("pin", "a", 0.5), 0)
    s1 = ov.snapshot()
    assert s1.arm_state(0)["pin"] == 0.5 and s0.arm_state(0)["pin"] is None
    ov.apply(Command("boost", "b", 2.0, steps=2), 1)
    s2 = ov.snapshot()
    assert s2.boost_left == (None, 2, None) and s1.arm_state(1)["boost"] is None
    ov.tick()
    s3 = ov.snapshot()
    assert s3 is not s2 and s3.boost_left == (None, 1, None) and s2.boost_left == (None, 2, None)
    ov.tick()
    assert ov.snapshot().arm_state(1)["boost"] is None and s3.arm_state(1)["boost"] == 2.0
    ov.apply(Command("retire", "c"), 3)
    assert ov.snapshot().arm_state(2)["state"] == "retired" and s3.arm_state(2)["state"] == "active"
    rejected = ov.apply(Command("retire", "c", id="again"), 4)
    assert rejected.status == "rejected" and ov.snapshot().arm_state(2)["state"] == "retired"
    ov.set_reported("c", "active", None, None)
    assert ov.snapshot().arm_state(2)["state"] == "active"
    ov.load_state_dict(Overrides(["a", "b", "c"]).state_dict())
    assert ov.snapshot().arm_state(0)["pin"] is None


def test_retire_is_exact_zero_and_last_arm_rejected():
    ov = Overrides(["a", "b"])
    assert ov.apply(Command("retire", "a"), 3).applied_step == 3
    p = ov.resolve(np.array([0.9, 0.1]))
    assert p.tolist() == [0.0, 1.0]
    ack = ov.apply(Command("retire", "b"), 3)
    assert ack.status == "rejected" and "last active arm" in ack.message
    assert ov.apply(Command("restore", "a"), 4).status == "applied"
    assert ov.resolve(np.array([0.9, 0.1])).tolist() == [0.9, 0.1]


def test_pins_over_one_rejected_and_all_pinned_scaled():
    ov = Overrides(["a", "b"])
    ov.apply(Command("pin", "a", 0.7), 0)
    ack = ov.apply(Command("pin", "b", 0.5), 0)
    assert ack.status == "rejected" and "sum to 1.2" in ack.message
    ack = ov.apply(Command("pin", "b", 0.2), 0)
    assert ack.status == "applied" and "scaled to sum to 1" in ack.message
    p = ov.resolve(np.array([0.5, 0.5]))
    assert abs(p[0] - 0.7 / 0.9) < 1e-15 and abs(p.sum() - 1) < 1e-12
    ack = ov.apply(Command("pin", "a", 0.0), 0)
    assert ack.status == "applied"
    ack = ov.apply(Command("pin", "b", 0.0), 0)
    assert ack.status == "rejected" and "pinned to 0" in ack.message


def test_pin_sum_tolerance_covers_float_noise_only():
    ov = Overrides(["a", "b", "c", "d"])
    for arm, p in (("a", 0.1), ("b", 0.2), ("c", 0.7)):  # sums to 1.0000000000000002
        assert ov.apply(Command("pin", arm, p), 0).status == "applied"
    assert abs(ov.resolve(np.full(4, 0.25)).sum() - 1.0) < 1e-12
    ov = Overrides(["a", "b", "c"])
    ov.apply(Command("pin", "a", 1e-9), 0)
    ack = ov.apply(Command("pin", "b", 1.0), 0)  # found by hypothesis: 1 + 1e-9 is not float noise
    assert ack.status == "rejected" and "> 1" in ack.message


def test_commands_on_retired_arm_and_release():
    ov = Overrides(["a", "b", "c"])
    ov.apply(Command("pin", "a", 0.3), 0)
    ack = ov.apply(Command("retire", "a"), 0)
    assert "pin/boost cleared" in ack.message
    ack = ov.apply(Command("boost", "a", 2.0), 0)
    assert ack.status == "rejected" and "restore it" in ack.message
    ov.apply(Command("restore", "a"), 1)
    ov.apply(Command("pin", "b", 0.5), 1)
    ov.apply(Command("release", "b"), 2)
    assert not ov.pinned.any()


def test_static_validation_errors_raise_on_the_agent():
    agent = CurriculumAgent("val", ["a", "b"])
    with pytest.raises(CommandError, match="this run has no arm 'z'; its arms are: a, b"):
        agent.pin("z", 0.5)
    with pytest.raises(CommandError, match=r"in \[0, 1\]"):
        agent.pin("a", 1.5)
    with pytest.raises(CommandError, match=r"boost factor must be > 0 \(use retire to exclude an arm\), got 0"):
        agent.boost("a", 0.0)
    with pytest.raises(CommandError, match="steps must be at least 1, got 0"):
        agent.boost("a", 2.0, steps=0)


def test_unknown_kind_is_rejected_with_reason():
    ack = Overrides(["a"]).apply(Command("explode", "a"), 0)
    assert ack.status == "rejected" and "unknown command kind 'explode'" in ack.message


# -- properties --------------------------------------------------------------------------------

command_st = st.builds(
    lambda kind, arm, value, steps, reuse: (kind, arm, value, steps, reuse),
    st.sampled_from(["pin", "boost", "retire", "restore", "release"]),
    st.sampled_from(ARMS),
    st.one_of(st.floats(0, 1), st.floats(0.01, 20), st.sampled_from([0.0, 1.0, 0.5, 2.0])),
    st.one_of(st.none(), st.integers(1, 4)),
    st.booleans(),
)
step_st = st.lists(command_st, max_size=4)


def snapshot(ov: Overrides):
    return (ov.active.copy(), ov.pin.copy(), ov.boost.copy(), list(ov.boost_left))


def same(a, b) -> bool:
    return (np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1], equal_nan=True)
            and np.array_equal(a[2], b[2]) and a[3] == b[3])


@settings(max_examples=300, deadline=None)
@given(
    scheduler=st.sampled_from(["uniform", "dump", "sec", "learning_progress", "balanced", "fixed"]),
    steps=st.lists(step_st, min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_invariants_hold_for_random_observations_and_commands(scheduler, steps, seed):
    params = {"weights": [1, 0, 2, 0, 3]} if scheduler == "fixed" else {}
    agent = CurriculumAgent("prop", ARMS, scheduler=scheduler, scheduler_params=params, seed=seed)
    rng = np.random.default_rng(seed)
    ov = agent._overrides
    issued: list[Command] = []
    observed = np.zeros(len(ARMS), dtype=np.int64)
    for cmds in steps:
        arms = agent.sample(int(rng.integers(0, 24)))
        if arms:
            agent.observe(arms, rng.random(len(arms)), groups=rng.integers(0, 4, len(arms)))
            observed += np.bincount([ARMS.index(a) for a in arms], minlength=len(ARMS))
        sampled_retired = [a for a in arms if not ov.active[ARMS.index(a)]]
        assert sampled_retired == []
        queued = 0
        for kind, arm, value, nsteps, reuse in cmds:
            if reuse and issued:
                agent._local_commands.append(issued[int(rng.integers(len(issued)))])
                queued += 1
                continue
            cmd = Command(kind, arm, value if kind in ("pin", "boost") else None,
                          nsteps if kind == "boost" else None)
            if kind == "boost" and not value > 0:
                continue
            issued.append(cmd)
            agent._local_commands.append(cmd)
            queued += 1
        stats = agent.end_step()
        p = stats.p
        # probabilities sum to 1; retired arms exactly 0
        assert abs(p.sum() - 1.0) < 1e-9
        assert np.all(p[~ov.active] == 0.0)
        assert np.all(p >= 0)
        # feasible pins are exact
        pinned = ov.pinned & ov.active
        if (ov.active & ~pinned).any():
            assert np.array_equal(p[pinned], ov.pin[pinned])
        # the last active arm is never retired
        assert ov.active.any()
        # every command answered; a repeated id gets its first answer again and changes nothing
        assert len(stats.acks) == queued
        for ack in stats.acks:
            assert ack.status in ("applied", "rejected")
            assert (ack.applied_step is None) == (ack.status == "rejected")
            if ack.status == "rejected":
                assert ack.message
        # repeating every command seen so far changes nothing
        state = snapshot(ov)
        for cmd in issued:
            first = ov.answered[cmd.id]
            assert ov.apply(cmd, agent.step + 100) == first
        assert same(state, snapshot(ov))
        # the scheduler keeps learning from what it observes, overrides or not
        if scheduler == "dump":
            assert np.array_equal(agent.scheduler.n, observed)


@settings(max_examples=300, deadline=None)
@given(
    q=st.lists(st.floats(0.001, 1.0), min_size=5, max_size=5),
    cmds=st.lists(command_st, max_size=8),
    arm=st.sampled_from(ARMS),
    factor=st.floats(1.0, 50.0),
)
def test_boost_never_lowers_an_arm(q, cmds, arm, factor):
    qa = np.array(q) / sum(q)
    ov = Overrides(ARMS)
    for kind, a, value, nsteps, _ in cmds:
        if kind == "boost" and not value > 0:
            continue
        ov.apply(Command(kind, a, value if kind in ("pin", "boost") else None,
                         nsteps if kind == "boost" else None), 0)
    i = ARMS.index(arm)
    if not ov.active[i]:
        return
    without = ov.resolve(qa)[i]
    ov.apply(Command("boost", arm, factor * float(ov.boost[i])), 1)
    assert ov.resolve(qa)[i] >= without - 1e-12


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(ARMS))
def test_last_active_arm_cannot_be_retired(order):
    ov = Overrides(ARMS)
    for arm in order[:-1]:
        assert ov.apply(Command("retire", arm), 0).status == "applied"
    ack = ov.apply(Command("retire", order[-1]), 0)
    assert ack.status == "rejected" and "last active arm" in ack.message
    assert ov.active.sum() == 1
