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

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from server.errors import InvalidRequest, RunNotFound
from server.models import Arm, ArmStep, Command, Run, RunStep


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
# Compare: per-arm accuracy, sample counts and probability of whole runs
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArmTrace:
    """One arm of one run, step by step (None where the arm saw no completion)."""

    steps: list[int]
    accuracy: list[float | None]
    n_step: list[int]
    probability: list[float]


def arm_traces(session: Session, run: str) -> dict[str, ArmTrace]:
    rid = run_id(session, run)
    names = dict(_arm_names(session, rid))
    cols: dict[int, tuple[list[int], list[float | None], list[int], list[float]]] = defaultdict(
        lambda: ([], [], [], [])
    )
    q = (
        select(ArmStep.arm_id, ArmStep.step, ArmStep.accuracy, ArmStep.n_step, ArmStep.probability)
        .where(ArmStep.run_id == rid)
        .order_by(ArmStep.arm_id, ArmStep.step)
    )
    for arm_id, step, accuracy, n_step, p in session.execute(q):
        s, a, n, pr = cols[arm_id]
        s.append(step)
        a.append(accuracy)
        n.append(n_step)
        pr.append(p)
    return {names[i]: ArmTrace(*cols[i]) for i in names if i in cols}


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
