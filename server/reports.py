"""SQL reads of the dashboard beyond the JSON API's: the runs table, compare data, CSV.

Like `server.store`, functions take a Session and return plain dataclasses; pages and routes never
write SQL themselves.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from server import store
from server.errors import InvalidRequest, RunNotFound
from server.models import ROLLUP_BUCKET, Arm, ArmStep, Command, Run, RunStep, arm_rollups


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run_id(session: Session, name: str) -> int:
    rid = session.scalar(select(Run.id).where(Run.name == name))
    if rid is None:
        raise RunNotFound(f"no run named {name!r}", run=name)
    return int(rid)


def _arm_names(session: Session, rid: int) -> list[tuple[int, str]]:
    return [
        (i, n) for i, n in session.execute(
            select(Arm.id, Arm.name).where(Arm.run_id == rid).order_by(Arm.position, Arm.id)
        )
    ]


# ---------------------------------------------------------------------------------------------------
# The runs table
# ---------------------------------------------------------------------------------------------------

STATUSES = ("running", "stale", "finished", "failed", "interrupted")


@dataclass(frozen=True, slots=True)
class RunRow:
    name: str
    project: str
    scheduler: str
    status: str  # running | stale | finished | failed | interrupted
    last_step: int
    started_at: dt.datetime | None
    last_seen: dt.datetime | None
    tags: list[str]
    arms: int


def tags_of(config: dict[str, Any]) -> list[str]:
    """`config["tags"]` as a list of strings (a list, or one comma-separated string)."""
    raw = config.get("tags") if isinstance(config, dict) else None
    if isinstance(raw, str):
        return [t.strip() for t in raw.split(",") if t.strip()]
    if isinstance(raw, list | tuple):
        return [str(t) for t in raw]
    return []


def dashboard_runs(
    session: Session,
    stale_seconds: float,
    status: str | None = None,
    project: str | None = None,
    search: str | None = None,
    limit: int = 500,
) -> list[RunRow]:
    """Runs newest first, filtered by status (stale included), project and a name substring."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    arm_count = (
        select(Arm.run_id, func.count(Arm.id).label("n")).group_by(Arm.run_id).subquery()
    )
    q = (
        select(Run, func.coalesce(arm_count.c.n, 0))
        .outerjoin(arm_count, arm_count.c.run_id == Run.id)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    if project:
        q = q.where(Run.project == project)
    if search:
        q = q.where(func.lower(Run.name).contains(search.lower(), autoescape=True))
    if status in ("finished", "failed", "interrupted"):
        q = q.where(Run.status == status)
    elif status in ("running", "stale"):
        q = q.where(Run.status == "running")
    now = _now()
    out: list[RunRow] = []
    for r, n_arms in session.execute(q):
        shown = r.status
        if r.status == "running" and (
            r.last_seen is None or (now - r.last_seen).total_seconds() > stale_seconds
        ):
            shown = "stale"
        if status is not None and shown != status:
            continue
        out.append(RunRow(
            name=r.name, project=r.project, scheduler=r.scheduler, status=shown, last_step=r.last_step,
            started_at=r.started_at, last_seen=r.last_seen, tags=tags_of(r.config), arms=int(n_arms),
        ))
    return out


def projects(session: Session) -> list[str]:
    return [p for (p,) in session.execute(select(Run.project).distinct().order_by(Run.project))]


def run_names(session: Session, limit: int = 500) -> list[str]:
    return [n for (n,) in session.execute(select(Run.name).order_by(Run.id.desc()).limit(limit))]


# ---------------------------------------------------------------------------------------------------
# Compare: overall accuracy per step, each arm's final accuracy
# ---------------------------------------------------------------------------------------------------


def graded_steps(session: Session, rid: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Per stored step: the step, and the run's overall accuracy there (completion-weighted over arms;
    NaN where no arm had a graded completion). One run_steps row per step, read straight from the driver."""
    rows = store.fetch_array(
        session.connection(),
        select(RunStep.step, RunStep.graded, RunStep.correct).where(RunStep.run_id == rid).order_by(RunStep.step),
        3,
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
    for bucket, ids in arms_in.items():
        q = (
            select(ArmStep.arm_id, ArmStep.accuracy)
            .where(ArmStep.run_id == rid,
                   ArmStep.step.between(bucket * ROLLUP_BUCKET, (bucket + 1) * ROLLUP_BUCKET - 1),
                   ArmStep.arm_id.in_(ids), ArmStep.accuracy.is_not(None))
            .order_by(ArmStep.step)
        )
        for arm_id, acc in session.execute(q):
            if acc is not None:
                got[arm_id] = acc  # the latest step's wins
    return {name: got.get(i) for i, name in _arm_names(session, rid)}


# ---------------------------------------------------------------------------------------------------
# CSV export (streamed: rows are read in chunks)
# ---------------------------------------------------------------------------------------------------

ARM_COLUMNS = (
    "step", "ts", "arm", "probability", "score", "n_step", "n_total", "mean_abs_adv", "mean_reward", "accuracy",
)
COMMAND_COLUMNS = (
    "created_at", "id", "actor", "kind", "arm", "value", "steps", "reason", "status", "applied_step",
    "message", "acked_at",
)


def iter_arm_rows(session: Session, rid: int, parts: Sequence[str], chunk: int = 2000) -> Iterator[list[Any]]:
    """Every (step, arm) of a run: ARM_COLUMNS then one column per score part."""
    q = (
        select(
            ArmStep.step, RunStep.ts, Arm.name, ArmStep.probability, ArmStep.score, ArmStep.n_step,
            ArmStep.n_total, ArmStep.mean_abs_adv, ArmStep.mean_reward, ArmStep.accuracy, ArmStep.parts,
        )
        .join(Arm, Arm.id == ArmStep.arm_id)
        .outerjoin(RunStep, and_(RunStep.run_id == ArmStep.run_id, RunStep.step == ArmStep.step))
        .where(ArmStep.run_id == rid)
        .order_by(ArmStep.step, Arm.position, Arm.id)
        .execution_options(yield_per=chunk)
    )
    for row in session.execute(q):
        got: dict[str, Any] = row.parts or {}
        yield [*row[:-1], *(got.get(p) for p in parts)]


def iter_command_rows(session: Session, rid: int, chunk: int = 1000) -> Iterator[list[Any]]:
    """The audit log, oldest first, in COMMAND_COLUMNS order."""
    q = (
        select(
            Command.created_at, Command.id, Command.actor, Command.kind, Command.arm, Command.value,
            Command.steps, Command.reason, Command.status, Command.applied_step, Command.message,
            Command.acked_at,
        )
        .where(Command.run_id == rid)
        .order_by(Command.created_at)
        .execution_options(yield_per=chunk)
    )
    for row in session.execute(q):
        yield list(row)
