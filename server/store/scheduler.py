"""Each run's latest scheduler snapshot (wire message `scheduler`): kept by ingest, read by steering (to
decide scheduler commands as the agent will) and by the scheduler API (the panel and its preview)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select, update
from sqlalchemy.orm import Session

from server.store.sql import RUNS, SCHEDULER_SNAPSHOTS, insert, run_row
from server.wire import SchedulerReport


@dataclass(frozen=True, slots=True)
class SchedulerHead:
    """The scheduler in force as last reported: what deciding a command needs. `step` is -1 when the agent
    has sent no snapshot yet (then the name and parameters are run_start's, and it is not frozen)."""

    name: str
    params: dict[str, Any]
    frozen: bool
    step: int

    def entry(self) -> dict[str, Any]:
        """The `scheduler` entry of a live event and of the scheduler API."""
        return {"name": self.name, "params": self.params, "frozen": self.frozen, "step": self.step}


@dataclass(frozen=True, slots=True)
class SchedulerView:
    """A run's head and the whole state its agent last sent (None: too large to send, or none yet)."""

    head: SchedulerHead
    state: dict[str, Any] | None
    ts: float | None


def store_snapshot(conn: Connection, run_id: int, m: SchedulerReport) -> SchedulerHead | None:
    """Keep `m` when it is newer (by step, then seq) than the run's stored snapshot; return its head when
    the name, parameters or frozen flag changed (for the live event), else None."""
    t = SCHEDULER_SNAPSHOTS.c
    old = conn.execute(select(t.step, t.seq, t.name, t.params, t.frozen).where(t.run_id == run_id)).first()
    if old is not None and (old.step, old.seq) >= (m.step, m.seq):
        return None
    values = {"step": m.step, "seq": m.seq, "ts": m.ts, "name": m.name, "params": m.params, "frozen": m.frozen,
              "state": m.state}
    if old is None:
        conn.execute(insert(conn, SCHEDULER_SNAPSHOTS).values(run_id=run_id, **values).on_conflict_do_nothing())
    else:
        conn.execute(update(SCHEDULER_SNAPSHOTS).where(t.run_id == run_id).values(**values))
    head = SchedulerHead(m.name, m.params, m.frozen, m.step)
    if old is not None and (old.name, old.params, old.frozen) == (m.name, m.params, m.frozen):
        return None
    # The run's scheduler is the one in force (the runs list, the run header): a switch or new
    # parameters move it on from what run_start said.
    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(scheduler=m.name, params=m.params))
    return head


def run_with_head(db: Session | Connection, run: str) -> tuple[Row[Any], SchedulerHead]:
    """The named run's id, name and status with its scheduler head, in one query (RunNotFound)."""
    t, r = SCHEDULER_SNAPSHOTS.c, RUNS.c
    row = run_row(db, run, r.id, r.name, r.status, r.scheduler, r.params, t.name.label("s_name"),
                  t.params.label("s_params"), t.frozen, t.step,
                  joined=RUNS.outerjoin(SCHEDULER_SNAPSHOTS, t.run_id == r.id))
    if row.s_name is not None:
        return row, SchedulerHead(row.s_name, dict(row.s_params or {}), bool(row.frozen), int(row.step))
    return row, SchedulerHead(row.scheduler, dict(row.params or {}), False, -1)


def scheduler_head(db: Session | Connection, run_id: int) -> SchedulerHead:
    """The run's scheduler as last reported (run_start's when no snapshot came yet)."""
    t = SCHEDULER_SNAPSHOTS.c
    row = db.execute(select(t.name, t.params, t.frozen, t.step).where(t.run_id == run_id)).first()
    if row is not None:
        return SchedulerHead(row.name, dict(row.params or {}), bool(row.frozen), int(row.step))
    r = db.execute(select(RUNS.c.scheduler, RUNS.c.params).where(RUNS.c.id == run_id)).one()
    return SchedulerHead(r.scheduler, dict(r.params or {}), False, -1)


def scheduler_view(db: Session | Connection, run: str) -> tuple[int, SchedulerView]:
    """(run id, its scheduler view), RunNotFound for an unknown run."""
    r = run_row(db, run, RUNS.c.id)
    t = SCHEDULER_SNAPSHOTS.c
    row = db.execute(select(t.state, t.ts).where(t.run_id == r.id)).first()
    head = scheduler_head(db, r.id)
    return int(r.id), SchedulerView(head, None if row is None else row.state, None if row is None else row.ts)
