"""CSV exports of a run, read in chunks: every (step, arm) row, the trainer metrics of every step, the
evaluations, and the audit log."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, and_, select, text
from sqlalchemy.orm import Session

from server.store.sql import ARM_STEPS, ARMS, COMMANDS, EVALS, RUN_STEPS

ARM_COLUMNS = (
    "step", "ts", "arm", "probability", "score", "n_step", "n_total", "mean_abs_adv", "mean_reward", "accuracy",
    "n_groups", "zero_var", "pass_hist",
)
STEP_COLUMNS = ("step", "ts")  # then one column per trainer metric
EVAL_COLUMNS = ("name", "step", "arm", "accuracy", "correct", "total", "ts")
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
            s.accuracy, s.n_groups, s.zero_var, s.pass_hist, s.parts,
        )
        .join(ARMS, a.id == s.arm_id)
        .outerjoin(RUN_STEPS, and_(r.run_id == s.run_id, r.step == s.step))
        .where(s.run_id == rid)
        .order_by(s.step, a.position, a.id)
        .execution_options(yield_per=chunk)
    )
    for row in session.execute(q):
        got: dict[str, Any] = row[-1] or {}
        hist = row[-2]  # counts per trainer_agent.protocol.PASS_HIST_BINS, written as 1/2/3/4/5
        yield [*row[:-2], None if hist is None else "/".join(str(x) for x in hist), *(got.get(p) for p in parts)]


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


def metric_names(conn: Connection, rid: int) -> list[str]:
    """Every trainer metric name the run's steps carry (a step may lack some), sorted."""
    if conn.dialect.name == "postgresql":
        q = text("SELECT DISTINCT json_object_keys(metrics) FROM run_steps WHERE run_id = :rid")
    else:
        q = text("SELECT DISTINCT j.key FROM run_steps AS s, json_each(s.metrics) AS j WHERE s.run_id = :rid")
    return sorted(str(n) for n in conn.execute(q, {"rid": rid}).scalars())


def iter_step_rows(session: Session, rid: int, metrics: Sequence[str], chunk: int = 2000) -> Iterator[list[Any]]:
    """Every step of a run: STEP_COLUMNS then the value of each of `metrics` (None where the step has none)."""
    t = RUN_STEPS.c
    q = select(t.step, t.ts, t.metrics).where(t.run_id == rid).order_by(t.step).execution_options(yield_per=chunk)
    for step, ts, got in session.execute(q):
        values: dict[str, Any] = got or {}
        yield [step, ts, *(values.get(m) for m in metrics)]


def iter_eval_rows(session: Session, rid: int, chunk: int = 2000) -> Iterator[list[Any]]:
    """The run's evaluations by name, step and arm, in EVAL_COLUMNS order."""
    q = (
        select(*(EVALS.c[name] for name in EVAL_COLUMNS))
        .where(EVALS.c.run_id == rid)
        .order_by(EVALS.c.name, EVALS.c.step, EVALS.c.arm)
        .execution_options(yield_per=chunk)
    )
    for row in session.execute(q):
        yield list(row)
