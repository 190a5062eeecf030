"""Runs: the list and one run with its arms, and the dashboard's runs table. Also the one stale rule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.orm import Session

from server.errors import InvalidRequest
from server.store.sql import ARMS, RUNS, run_row, utcnow

# The statuses the runs table filters by: what runs report, and "stale" (derived, see is_stale).
STATUSES = ("running", "stale", "finished", "failed", "interrupted")


def is_stale(status: str, last_seen: dt.datetime | None, stale_seconds: float, now: dt.datetime | None = None) -> bool:
    """A run that says it is running but has not been heard from for more than `stale_seconds`."""
    if status != "running":
        return False
    if last_seen is None:
        return True
    return ((now or utcnow()) - last_seen).total_seconds() > stale_seconds


def shown_status(status: str, stale: bool) -> str:
    """The status the pages show: as reported, or "stale" for a stale run."""
    return "stale" if stale else status


@dataclass(frozen=True, slots=True)
class RunOverview:
    """A run as listed: what it is, where it stands, and its latest live event."""

    name: str
    project: str
    scheduler: str
    status: str  # running | finished | failed | interrupted, as last reported
    stale: bool
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    last_seen: dt.datetime | None
    last_step: int
    dropped: int
    event_seq: int


@dataclass(frozen=True, slots=True)
class ArmSnapshot:
    """An arm of a run as the agent last reported it."""

    name: str
    metadata: dict[str, Any]
    state: str
    pin: float | None
    boost: float | None
    probability: float | None
    last_step: int


@dataclass(frozen=True, slots=True)
class RunView(RunOverview):
    """One run in full: its overview, parameters, configuration, origin and arms."""

    params: dict[str, Any]
    config: dict[str, Any]
    host: str | None
    pid: int | None
    last_seq: int
    arms: list[ArmSnapshot]


def _overview_fields(r: Row[Any], stale_seconds: float, now: dt.datetime) -> dict[str, Any]:
    return {
        "name": r.name, "project": r.project, "scheduler": r.scheduler, "status": r.status,
        "stale": is_stale(r.status, r.last_seen, stale_seconds, now), "started_at": r.started_at,
        "ended_at": r.ended_at, "last_seen": r.last_seen, "last_step": r.last_step, "dropped": r.dropped,
        "event_seq": r.event_seq,
    }


def list_runs(
    session: Session, stale_seconds: float, project: str | None = None, limit: int = 200
) -> list[RunOverview]:
    """Runs, newest first."""
    q = select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
    if project is not None:
        q = q.where(RUNS.c.project == project)
    now = utcnow()
    return [RunOverview(**_overview_fields(r, stale_seconds, now)) for r in session.execute(q)]


def get_run(session: Session, name: str, stale_seconds: float) -> RunView:
    """A run with its arms, in their position order."""
    r = run_row(session, name)
    a = ARMS.c
    arms = [
        ArmSnapshot(*x)
        for x in session.execute(
            select(a.name, a.metadata, a.state, a.pin, a.boost, a.probability, a.last_step)
            .where(a.run_id == r.id).order_by(a.position, a.id)
        )
    ]
    return RunView(
        **_overview_fields(r, stale_seconds, utcnow()),
        params=r.params, config=r.config, host=r.host, pid=r.pid, last_seq=r.last_seq, arms=arms,
    )


def last_steps(session: Session, runs: Sequence[str]) -> dict[str, int]:
    """The last stored step of each named run that exists (-1 before its first step)."""
    rows = session.execute(select(RUNS.c.name, RUNS.c.last_step).where(RUNS.c.name.in_(list(runs)))).all()
    return {name: int(step) for name, step in rows}


# ---------------------------------------------------------------------------------------------------
# The runs table of the dashboard
# ---------------------------------------------------------------------------------------------------


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
    arm_count = select(ARMS.c.run_id, func.count(ARMS.c.id).label("n")).group_by(ARMS.c.run_id).subquery()
    r = RUNS.c
    q = (
        select(r.name, r.project, r.scheduler, r.status, r.last_step, r.started_at, r.last_seen, r.config,
               func.coalesce(arm_count.c.n, 0).label("n_arms"))
        .outerjoin(arm_count, arm_count.c.run_id == r.id)
        .order_by(r.id.desc())
        .limit(limit)
    )
    if project:
        q = q.where(r.project == project)
    if search:
        q = q.where(func.lower(r.name).contains(search.lower(), autoescape=True))
    if status in ("finished", "failed", "interrupted"):
        q = q.where(r.status == status)
    elif status in ("running", "stale"):
        q = q.where(r.status == "running")
    now = utcnow()
    out: list[RunRow] = []
    for x in session.execute(q):
        shown = shown_status(x.status, is_stale(x.status, x.last_seen, stale_seconds, now))
        if status is not None and shown != status:
            continue
        out.append(RunRow(
            name=x.name, project=x.project, scheduler=x.scheduler, status=shown, last_step=x.last_step,
            started_at=x.started_at, last_seen=x.last_seen, tags=tags_of(x.config), arms=int(x.n_arms),
        ))
    return out


def projects(session: Session) -> list[str]:
    return [p for (p,) in session.execute(select(RUNS.c.project).distinct().order_by(RUNS.c.project))]


def run_names(session: Session, limit: int = 500) -> list[str]:
    return [n for (n,) in session.execute(select(RUNS.c.name).order_by(RUNS.c.id.desc()).limit(limit))]
