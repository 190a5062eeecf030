"""What comparing runs reads: the completion-weighted train accuracy of each step (run_steps), the
unweighted mean of the arms' train accuracies (arm_steps, or the rollups for long runs), and the
evaluations (evals)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import ROLLUP_WIDTHS, arm_rollups
from server.store.sql import ARM_STEPS, EVALS, RUN_STEPS, fetch_array

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class Curve:
    """A run's points of one quantity: `steps` and `values` side by side (no NaN unless stated), and
    `bucket`, the steps each point stands for when read through the rollups (None: one point a step)."""

    steps: Array
    values: Array
    bucket: int | None = None


def graded_steps(session: Session, rid: int) -> tuple[Array, Array]:
    """Per stored step: the step, and the run's train accuracy there weighted by completions
    (sum_j acc_j n_j / sum_j n_j over the arms graded at that step; NaN where none was). One run_steps
    row per step, read straight from the driver."""
    t = RUN_STEPS.c
    rows = fetch_array(
        session.connection(), select(t.step, t.graded, t.correct).where(t.run_id == rid).order_by(t.step), 3,
    )
    graded = rows[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = np.where(graded > 0, rows[:, 2] / graded, np.nan)
    return rows[:, 0].astype(np.int64), overall


def mean_arm_accuracy(session: Session, rid: int, last_step: int, max_points: int) -> Curve:
    """The unweighted mean over arms of their train accuracies: at each step, (1/K) sum_j acc_j over the
    K arms observed so far, an arm not graded at that step counting with its last accuracy (so the mix
    the scheduler chose does not move it, only what each arm has reached).

    A run of at most `max_points` steps: one point per step with a graded arm, from arm_steps. Longer:
    one point per rollup bucket, each arm counting with its mean accuracy over the bucket, placed at the
    bucket's last step, from the finest of ROLLUP_WIDTHS that gives at most `max_points // 4` buckets (a
    mean over arms and steps is smooth; it needs fewer points than one noisy series' min/max envelope):
    a 100,000-step run of 64 arms reads 25,000 rollup rows (256-step buckets), no arm_steps.
    """
    span = last_step + 1
    if span <= 0:
        return Curve(np.zeros(0, dtype=np.int64), np.zeros(0))
    conn = session.connection()
    if span <= max_points:
        s = ARM_STEPS.c
        rows = fetch_array(conn, select(s.step, s.arm_id, s.accuracy)
                           .where(s.run_id == rid, s.accuracy.is_not(None)).order_by(s.step, s.arm_id), 3)
        return _carried_mean(rows[:, 0].astype(np.int64), rows[:, 1], rows[:, 2], None)
    width = next((w for w in ROLLUP_WIDTHS if -(-span // w) <= max(1, max_points // 4)), ROLLUP_WIDTHS[-1])
    t = arm_rollups.c
    rows = fetch_array(conn, select(t.bucket, t.arm_id, t.accuracy_sum / t.accuracy_n)
                       .where(t.run_id == rid, t.width == width, t.accuracy_n > 0), 3)
    ends = np.minimum(rows[:, 0].astype(np.int64) * width + width - 1, last_step)
    return _carried_mean(ends, rows[:, 1], rows[:, 2], width)


def _carried_mean(steps: Array, arms: Array, values: Array, bucket: int | None) -> Curve:
    """Per distinct step of (step, arm, value) rows, any order: the mean over arms seen so far of each
    arm's latest value."""
    xs, xi = np.unique(steps, return_inverse=True)
    _, ai = np.unique(arms, return_inverse=True)
    grid = np.full((xs.size, int(ai.max()) + 1 if ai.size else 0), np.nan)
    grid[xi, ai] = values
    # Carry each arm's last value down its column: the index of the latest row with a value.
    rows = np.where(np.isnan(grid), 0, np.arange(xs.size)[:, None])
    np.maximum.accumulate(rows, axis=0, out=rows)
    carried = grid[rows, np.arange(grid.shape[1])[None, :]]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(carried, axis=1) if grid.shape[1] else np.zeros(0)
    return Curve(xs, mean, bucket)


@dataclass(frozen=True, slots=True)
class EvalSet:
    """One evaluation set of a run: the unweighted mean over the arms evaluated at each step, and each
    arm's points."""

    name: str
    mean: Curve
    by_arm: dict[str, Curve]


def eval_names(session: Session, rids: list[int]) -> dict[int, list[str]]:
    """The evaluation sets each run has, by name."""
    e = EVALS.c
    out: dict[int, list[str]] = defaultdict(list)
    for rid, name in session.execute(
        select(e.run_id, e.name).where(e.run_id.in_(rids)).distinct().order_by(e.run_id, e.name)
    ):
        out[int(rid)].append(str(name))
    return out


def eval_set(session: Session, rid: int, name: str) -> EvalSet:
    """The run's points of evaluation set `name` (read in key order: by arm, then step)."""
    e = EVALS.c
    rows = session.execute(
        select(e.arm, e.step, e.accuracy).where(e.run_id == rid, e.name == name).order_by(e.arm, e.step)
    ).all()
    by_arm: dict[str, tuple[list[int], list[float]]] = {}
    for arm, step, acc in rows:
        got = by_arm.setdefault(str(arm), ([], []))
        got[0].append(int(step))
        got[1].append(float(acc))
    steps = np.array([r[1] for r in rows], dtype=np.int64)
    acc = np.array([r[2] for r in rows], dtype=np.float64)
    xs, xi = np.unique(steps, return_inverse=True)
    mean = np.bincount(xi, weights=acc, minlength=xs.size) / np.maximum(np.bincount(xi, minlength=xs.size), 1)
    return EvalSet(
        name=name, mean=Curve(xs, mean),
        by_arm={a: Curve(np.array(st, dtype=np.int64), np.array(v)) for a, (st, v) in by_arm.items()},
    )
