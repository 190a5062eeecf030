"""A run's per-arm statistics as another run starts its scheduler from them (`trainer_agent.recent.WarmStart`,
`GET /api/runs/{run}/warm-start`): per arm, its completions so far and, over the run's last `steps` stored
steps, its completions, accuracy and mean |A| (completion-weighted, as the agent's own recent statistics)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.store.sql import ARM_STEPS, ARMS, RUNS, run_row


@dataclass(frozen=True, slots=True)
class ArmStatistics:
    arm: str
    n_total: int
    n_recent: int
    accuracy: float | None
    mean_abs_adv: float | None


@dataclass(frozen=True, slots=True)
class RunStatistics:
    run: str
    scheduler: str
    last_step: int
    steps: int
    arms: list[ArmStatistics]


def warm_start(session: Session, run: str, steps: int) -> RunStatistics:
    r = run_row(session, run, RUNS.c.id, RUNS.c.scheduler, RUNS.c.last_step)
    t = ARM_STEPS.c
    graded = func.sum(func.coalesce(t.n_step, 0)).filter(t.accuracy.is_not(None))
    scored = func.sum(func.coalesce(t.n_step, 0)).filter(t.mean_abs_adv.is_not(None))
    q = (
        select(ARMS.c.name, func.max(t.n_total), func.sum(t.n_step), graded, func.sum(t.accuracy * t.n_step), scored,
               func.sum(t.mean_abs_adv * t.n_step))
        .join(ARMS, ARMS.c.id == t.arm_id)
        .where(t.run_id == r.id, t.step > r.last_step - steps)
        .group_by(ARMS.c.name)
    )
    arms = []
    for name, n_total, n, n_graded, correct, n_scored, abs_sum in session.execute(q):
        arms.append(ArmStatistics(
            str(name), int(n_total or 0), int(n or 0),
            float(correct) / n_graded if n_graded else None,
            float(abs_sum) / n_scored if n_scored else None,
        ))
    return RunStatistics(run, str(r.scheduler), int(r.last_step), steps, sorted(arms, key=lambda a: a.arm))
