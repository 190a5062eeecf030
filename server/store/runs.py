"""Runs: one run with its arms, the projects and names for the pages' pickers, and the one stale rule (in
Python and in SQL). The runs table itself is `runs_table`; tags, notes, archiving and deleting, `manage`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, or_, select
from sqlalchemy.orm import Session

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


def stale_clause(stale_seconds: float, now: dt.datetime | None = None) -> ColumnElement[bool]:
    """is_stale in SQL, on the columns of `runs` (for filtering and sorting the runs table)."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=stale_seconds)
    r = RUNS.c
    return and_(r.status == "running", or_(r.last_seen.is_(None), r.last_seen < cutoff))


def shown_status(status: str, stale: bool) -> str:
    """The status the pages show: as reported, or "stale" for a stale run."""
    return "stale" if stale else status


@dataclass(frozen=True, slots=True)
class RunOverview:
    """A run as listed: what it is, where it stands, and its latest live event. `status`: running,
    finished, failed or interrupted, as last reported; `stale`: running but not heard from for more than
    stale_seconds; `event_seq`: the id of the run's latest live event (SSE)."""

    name: str
    project: str
    scheduler: str
    status: str
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


def projects(session: Session) -> list[str]:
    return [p for (p,) in session.execute(select(RUNS.c.project).distinct().order_by(RUNS.c.project))]


def run_names(session: Session, limit: int = 500) -> list[str]:
    return [n for (n,) in session.execute(select(RUNS.c.name).order_by(RUNS.c.id.desc()).limit(limit))]
