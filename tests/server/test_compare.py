"""Comparing long runs: overall accuracy from run_steps, arm series from the rollups, final accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server import compare

from .conftest import ingest_docs, run_start

ARMS = ["a", "b", "c"]
STEPS = 3000


def record(arm: str, i: int, step: int) -> dict:
    """Arm c is never graded after step 2000; arm b has no completions on every 3rd step; one spike."""
    n = 0 if (i == 1 and step % 3 == 0) or (i == 2 and step > 2000) else 4 + i
    acc = min(1.0, step / (1500.0 + 700 * i)) * (0.9 + 0.1 * math.sin(step / 37.0 + i))
    if i == 0 and step == 1777:
        acc = 0.0  # one bad batch: the overlay must still show it
    return {"arm": arm, "p": 1 / 3, "score": 0.0, "parts": {}, "n_step": n, "n_total": 0,
            "mean_abs_adv": None, "mean_reward": None, "accuracy": acc if n else None, "state": "active",
            "pin": None, "boost": None}


def fill(engine: Engine, run: str) -> None:
    ingest_docs(engine, [run_start(run, 1, ARMS)] + [
        {"v": 1, "type": "step", "run": run, "seq": step + 2, "ts": 1.7e9 + step, "step": step, "metrics": {},
         "dropped": 0, "arms": [record(a, i, step) for i, a in enumerate(ARMS)]}
        for step in range(STEPS)
    ], batch=400)


def truth() -> tuple[np.ndarray, dict[str, float]]:
    overall = []
    final: dict[str, float] = {}
    for step in range(STEPS):
        recs = [record(a, i, step) for i, a in enumerate(ARMS)]
        graded = [(r["accuracy"], r["n_step"]) for r in recs if r["accuracy"] is not None]
        overall.append(sum(a * n for a, n in graded) / sum(n for _, n in graded))
        final.update({r["arm"]: r["accuracy"] for r in recs if r["accuracy"] is not None})
    return np.array(overall), final


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_compare_long_runs_reads_per_step_totals_and_rollups(engine: Engine) -> None:
    fill(engine, "cmp-a")
    fill(engine, "cmp-b")
    overall, final = truth()
    smooth = [float(np.mean(overall[max(0, s - 9): s + 1])) for s in range(STEPS)]
    with Session(engine) as session:
        res = compare.compare(session, ["cmp-a", "cmp-b"], "overall_accuracy", None, 0.8, 60.0, max_points=200,
                              small_points=100)
        arm = compare.compare(session, ["cmp-a", "cmp-b"], "accuracy", "a", 0.8, 60.0, max_points=200)
    first = next(s for s, v in enumerate(smooth) if v >= 0.8)
    for summ in res.summaries:
        assert summ.steps_to_target == first
        assert summ.final_overall == pytest.approx(smooth[-1], abs=1e-9)
        assert summ.final_by_arm == pytest.approx(final)  # arm c's last accuracy is at step 2000
        assert summ.final_by_arm["c"] == pytest.approx(record("c", 2, 2000)["accuracy"])
    for t in res.overlay:
        assert len(t.steps) <= 200 and t.steps[0] == 0 and t.steps[-1] == STEPS - 1
        assert np.allclose(t.values, overall[t.steps], atol=1e-12)
        assert min(t.values) == pytest.approx(overall.min()) and max(t.values) == pytest.approx(overall.max())
    # one arm's accuracy: downsampled through the rollups, the bad batch at step 1777 kept
    for t in arm.overlay:
        assert len(t.steps) <= 200 and 0.0 in t.values
    assert sorted(res.small) == ARMS and all(len(ts) == 2 for ts in res.small.values())
    assert all(len(t.steps) <= 100 for ts in res.small.values() for t in ts)
