"""CSV exports of a run, read in chunks: every (step, arm) row, and the audit log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from server.store.sql import ARM_STEPS, ARMS, COMMANDS, RUN_STEPS

ARM_COLUMNS = (
    "step", "ts", "arm", "probability", "score", "n_step", "n_total", "mean_abs_adv", "mean_reward", "accuracy",
)
COMMAND_COLUMNS = (
    "created_at", "id", "actor", "kind", "arm", "value", "steps", "reason", "status", "applied_step",
    "message", "acked_at",
)


def iter_arm_rows(session: Session, rid: int, parts: Sequence[str], chunk: int = 2000) -> Iterator[list[Any]]:
    """Every (step, arm) of a run: ARM_COLUMNS then one column per score part."""
    s, a, r = ARM_STEPS.c, ARMS.c, RUN_STEPS.c
    q = (
        select(
            s.step, r.ts, a.name, s.probability, s.score, s.n_step, s.n_total, s.mean_abs_adv, s.mean_reward,
            s.accuracy, s.parts,
        )
        .join(ARMS, a.id == s.arm_id)
        .outerjoin(RUN_STEPS, and_(r.run_id == s.run_id, r.step == s.step))
        .where(s.run_id == rid)
        .order_by(s.step, a.position, a.id)
        .execution_options(yield_per=chunk)
    )
    for row in session.execute(q):
        got: dict[str, Any] = row[-1] or {}
        yield [*row[:-1], *(got.get(p) for p in parts)]


def iter_command_rows(session: Session, rid: int, chunk: int = 1000) -> Iterator[list[Any]]:
    """The audit log, oldest first, in COMMAND_COLUMNS order."""
    q = (
        select(*(COMMANDS.c[name] for name in COMMAND_COLUMNS))
        .where(COMMANDS.c.run_id == rid)
        .order_by(COMMANDS.c.created_at)
        .execution_options(yield_per=chunk)
    )
    for row in session.execute(q):
        yield list(row)
