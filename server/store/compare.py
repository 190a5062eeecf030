"""What comparing runs reads: the overall accuracy of each step (from run_steps), each arm's final
accuracy (through the rollups)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.models import ROLLUP_BUCKET, arm_rollups
from server.store.sql import ARM_STEPS, ARMS, RUN_STEPS, fetch_array


def graded_steps(session: Session, rid: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per stored step: the step, and the run's overall accuracy there (completion-weighted over arms;
    NaN where no arm had a graded completion). One run_steps row per step, read straight from the driver."""
    t = RUN_STEPS.c
    rows = fetch_array(
        session.connection(), select(t.step, t.graded, t.correct).where(t.run_id == rid).order_by(t.step), 3,
    )
    graded = rows[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        overall = np.where(graded > 0, rows[:, 2] / graded, np.nan)
    return rows[:, 0].astype(np.int64), overall


def final_accuracy(session: Session, rid: int) -> dict[str, float | None]:
    """Each arm's last accuracy (None if it never had one), found through the finest rollups: the arm's
    last bucket with an accuracy, then that bucket's rows only."""
    t = arm_rollups.c
    last_bucket = session.execute(
        select(t.arm_id, func.max(t.bucket))
        .where(t.run_id == rid, t.width == ROLLUP_BUCKET, t.accuracy_n > 0)
        .group_by(t.arm_id)
    ).all()
    arms_in: dict[int, list[int]] = defaultdict(list)
    for arm_id, bucket in last_bucket:
        arms_in[int(bucket)].append(int(arm_id))
    got: dict[int, float] = {}
    s = ARM_STEPS.c
    for bucket, ids in arms_in.items():
        q = (
            select(s.arm_id, s.accuracy)
            .where(s.run_id == rid, s.step.between(bucket * ROLLUP_BUCKET, (bucket + 1) * ROLLUP_BUCKET - 1),
                   s.arm_id.in_(ids), s.accuracy.is_not(None))
            .order_by(s.step)
        )
        for arm_id, acc in session.execute(q):
            if acc is not None:
                got[arm_id] = acc  # the latest step's wins
    names = session.execute(
        select(ARMS.c.id, ARMS.c.name).where(ARMS.c.run_id == rid).order_by(ARMS.c.position, ARMS.c.id)
    )
    return {name: got.get(i) for i, name in names}
