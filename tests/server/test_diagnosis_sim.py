"""Diagnoses on simulated runs whose truth is known (server/diagnosis.py, docs/diagnosis.md).

A real CurriculumAgent samples arms (uniform scheduler), Bernoulli rewards in GRPO groups of 8 come from
a pass rate per arm that follows a known script, and the agent's wire records are folded by the
server's rules in batches of random sizes, as ingest would. Each truth is diagnosed within a stated
number of steps; stationary noisy arms raise no alarm over many seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from server.diagnosis import INPUTS, ArmCarry, Change, Thresholds, fold
from trainer_agent import CurriculumAgent

G, PROMPTS = 8, 64
ALARMS = {"saturated", "too_hard", "starved", "unstable", "regressing"}


def simulate(rates: dict[str, Callable[[int], float]], steps: int, seed: int,
             pin: tuple[int, str, float] | None = None) -> list[Change | tuple[str, Change]]:
    arms = list(rates)
    agent = CurriculumAgent(f"sim-{seed}", arms, scheduler="uniform", redis_url=None, seed=seed)
    rng = np.random.default_rng(seed)
    th = Thresholds()
    carry = [ArmCarry() for _ in arms]
    buf: list[dict[str, list[float]]] = []
    out: list[tuple[str, Change]] = []
    next_flush = int(rng.integers(1, 40))
    for step in range(steps):
        if pin is not None and step == pin[0]:
            agent.pin(pin[1], pin[2])
        chosen = agent.sample(PROMPTS)
        q = np.array([rates[a](step) for a in chosen])
        rewards = (rng.random((PROMPTS, G)) < q[:, None]).astype(float).ravel()
        agent.observe([a for a in chosen for _ in range(G)], rewards, groups=np.repeat(np.arange(PROMPTS), G))
        stats = agent.end_step()
        recs = stats.records()
        buf.append({
            "p": [r["p"] for r in recs], "n": [r["n_step"] for r in recs],
            "acc": [np.nan if r["accuracy"] is None else r["accuracy"] for r in recs],
            "mab": [np.nan if r["mean_abs_adv"] is None else r["mean_abs_adv"] for r in recs],
            "zv": [np.nan if r["zero_var"] is None else r["zero_var"] for r in recs],
            "ng": [r["n_groups"] for r in recs], "retired": [float(r["state"] == "retired") for r in recs],
        })
        if step + 1 == next_flush or step == steps - 1:
            m = {k: np.array([b[k] for b in buf], dtype=np.float64) for k in INPUTS}
            idx = np.arange(step + 1 - len(buf), step + 1)
            out.extend((arms[c.arm], c) for c in fold(carry, idx, m, [], th))
            buf.clear()
            next_flush = step + 1 + int(rng.integers(1, 40))
    return out  # type: ignore[return-value]


def first(changes: list, arm: str, diagnosis: str) -> Change | None:
    return next((c for a, c in changes if a == arm and c.diagnosis == diagnosis), None)


@pytest.mark.parametrize("seed", range(3))
def test_each_truth_is_diagnosed_within_its_stated_steps(seed: int) -> None:
    sat_at, regress_at, pin_at = 150, 200, 250
    rates = {
        # climbs from 0.4 to 1.0, reaching >= 0.97 (96 % zero-variance groups) at step sat_at
        "sat": lambda s: min(1.0, 0.4 + 0.6 * s / sat_at * (0.97 / 1.0) / 0.97) if s < sat_at else 1.0,
        "hard": lambda s: 0.0,  # cannot be learned
        "regress": lambda s: 0.8 if s < regress_at else 0.35,  # forgets at regress_at
        "starve": lambda s: 0.5,  # learnable; starved from pin_at by a pin elsewhere
        "steady": lambda s: 0.5,
    }
    changes = simulate(rates, 400, seed, pin=(pin_at, "steady", 0.96))
    th = Thresholds()
    lag = th.window + th.confirm_steps  # the stated bound, in steps
    sat = first(changes, "sat", "saturated")
    assert sat is not None and sat_at - lag <= sat.since and sat.step <= sat_at + lag, sat
    hard = first(changes, "hard", "too_hard")
    assert hard is not None and hard.step <= lag, hard  # from the first confident window
    reg = first(changes, "regress", "regressing")
    assert reg is not None and regress_at <= reg.since and reg.step <= regress_at + lag, reg
    st = first(changes, "starve", "starved")
    assert st is not None and pin_at <= st.since and st.step <= pin_at + th.confirm_steps + 1, st
    # Before its truth, no arm had an alarm it did not deserve.
    for arm, c in changes:
        if c.diagnosis in ALARMS:
            assert (arm, c.diagnosis) in {("sat", "saturated"), ("hard", "too_hard"), ("regress", "regressing"),
                                          ("starve", "starved"), ("steady", "saturated")} or c.step >= pin_at, (arm, c)


def test_no_false_alarm_on_stationary_noisy_arms_over_many_seeds() -> None:
    rates = {f"q{q}": (lambda s, q=q: q) for q in (0.2, 0.35, 0.5, 0.65, 0.8)}
    alarms = []
    for seed in range(30):
        for arm, c in simulate(rates, 300, 1000 + seed):
            if c.diagnosis in ALARMS:
                alarms.append((seed, arm, c.diagnosis, c.step, c.figures))
            else:
                assert c.diagnosis == "learning", (arm, c)
    assert alarms == []
