"""The command audit log: what steering validates against, commands recorded and rejected, the acks
the agent sends back, and the log as read by the pages and the API."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.orm import Session

from server.store.scheduler import SchedulerHead, run_with_head
from server.store.sql import ARMS, COMMANDS, RUNS, run_row, utc_from_ts, utcnow
from server.wire import CommandAck


def _params_text(params: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (params or {}).items())


def command_label(kind: str, arm: str, value: float | None, steps: int | None,
                  scheduler: str | None = None, params: dict[str, Any] | None = None) -> str:
    """The short text a page shows for a command, on a chart marker or an audit log row:
    `pin kk3=0.5`, `boost kk4×2 for 50 steps`, `retire kk5`, `set temperature=0.2`, `switch to sec (alpha=0.3)`,
    `freeze scheduler`."""
    if kind == "set_params":
        return f"set {_params_text(params)}"
    if kind == "switch":
        extra = f" ({_params_text(params)})" if params else ""
        return f"switch to {scheduler}{extra}"
    if kind in ("freeze", "unfreeze"):
        return f"{kind} scheduler"
    if kind == "pin":
        return f"pin {arm}={value:g}" if value is not None else f"pin {arm}"
    if kind == "boost":
        extra = f" for {steps} steps" if steps else ""
        return f"boost {arm}×{value:g}{extra}" if value is not None else f"boost {arm}"
    return f"{kind} {arm}"


@dataclass(frozen=True, slots=True)
class ArmView:
    """An arm's override state as the agent last reported it."""

    name: str
    state: str
    pin: float | None
    boost: float | None


@dataclass(frozen=True, slots=True)
class PendingCommand:
    """A command as it was asked (kept as it is in AckedCommand once answered)."""

    id: str
    kind: str
    arm: str
    value: float | None
    steps: int | None
    scheduler: str | None = None
    params: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SteeringView:
    """What command validation needs: the run, its arms as reported, and commands not yet acked."""

    run_id: int
    name: str
    status: str
    arms: list[ArmView]
    pending: list[PendingCommand]
    scheduler: SchedulerHead | None = None  # None: scheduler commands cannot be decided


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One command of the audit log: what was asked, by whom, and what the agent answered."""

    id: str
    run: str
    kind: str
    arm: str
    value: float | None
    steps: int | None
    actor: str
    reason: str
    created_at: dt.datetime
    status: str  # pending | applied | rejected
    applied_step: int | None
    message: str | None
    acked_at: dt.datetime | None
    scheduler: str | None = None
    params: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return command_label(self.kind, self.arm, self.value, self.steps, self.scheduler, self.params)


@dataclass(frozen=True, slots=True)
class AckedCommand:
    """A command whose first outcome an ack has just recorded: the command as it was asked, and the outcome."""

    command: PendingCommand
    status: str
    applied_step: int | None
    message: str | None


@dataclass(frozen=True, slots=True)
class SteeringState:
    """A run's steering state read without its pending commands: the arms as reported, and how many
    commands are pending with the id of the newest. Two reads with equal states have the same pending
    commands unless some were answered and as many posted in between with timestamps older than the
    newest, which takes web processes whose clocks disagree (and then the agent, which decides again,
    still answers right). server.steering builds on this to avoid re-reading them on every post."""

    run_id: int
    name: str
    status: str
    arms: tuple[ArmView, ...]
    n_pending: int
    last_pending: str | None
    scheduler: SchedulerHead | None = None


# First key of the transaction-scoped advisory lock that serialises a run's command posts on PostgreSQL.
STEERING_LOCK = 0x53_54_45_45  # "STEE"


def steering_state(session: Session, run: str, *, for_post: bool = False) -> SteeringState:
    """What a command is decided against. `for_post`: the caller will record a command in this transaction;
    on PostgreSQL it first takes the run's steering lock (released at commit), so two posts to one run,
    from any web process, decide one after the other instead of both against the same state. Ingest never
    takes it. (On SQLite the transaction already holds the database's write lock.)"""
    # Ingest changes the run's scheduler and its arms as reported, posts do not: read before the lock, so
    # the posts of a run hold it for the pending commands' read, the insert and the commit only.
    r, head = run_with_head(session, run)
    arms = session.execute(
        select(ARMS.c.name, ARMS.c.state, ARMS.c.pin, ARMS.c.boost)
        .where(ARMS.c.run_id == r.id)
        .order_by(ARMS.c.position, ARMS.c.id)
    ).all()
    if for_post and session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(STEERING_LOCK, r.id)))
    c = COMMANDS.c
    pending = (c.run_id == r.id) & (c.status == "pending")
    newest = (select(c.id).where(pending).order_by(c.created_at.desc(), c.id.desc()).limit(1)
              .correlate(None).scalar_subquery())
    n_pending, last = session.execute(select(func.count(), newest).select_from(COMMANDS).where(pending)).one()
    return SteeringState(r.id, r.name, r.status, tuple(ArmView(*a) for a in arms), int(n_pending), last, head)


def pending_commands(session: Session, run_id: int) -> list[PendingCommand]:
    """The run's unanswered commands, in the order the agent will apply them."""
    c = COMMANDS.c
    rows = session.execute(
        select(*_asked(c))
        .where(c.run_id == run_id, c.status == "pending")
        .order_by(c.created_at, c.id)
    )
    return [PendingCommand(*row) for row in rows]


def record_command(
    session: Session,
    run_id: int,
    kind: str,
    arm: str,
    value: float | None,
    steps: int | None,
    actor: str,
    reason: str,
    scheduler: str | None = None,
    params: dict[str, Any] | None = None,
    run_name: str | None = None,
) -> AuditEntry:
    """Add a command to the audit log as pending (in the caller's transaction); `run_name` saves reading it."""
    run = run_name or session.execute(select(RUNS.c.name).where(RUNS.c.id == run_id)).scalar_one()
    entry = AuditEntry(
        id=str(uuid.uuid4()), run=run, kind=kind, arm=arm, value=value, steps=steps, actor=actor, reason=reason,
        created_at=utcnow(), status="pending", applied_step=None, message=None, acked_at=None,
        scheduler=scheduler, params=params,
    )
    session.execute(insert(COMMANDS).values(
        id=entry.id, run_id=run_id, kind=kind, arm=arm, value=value, steps=steps, actor=actor, reason=reason,
        created_at=entry.created_at, status=entry.status, scheduler=scheduler, params=params,
    ))
    return entry


def reject_command(session: Session, command_id: str, message: str) -> None:
    session.execute(
        update(COMMANDS)
        .where(COMMANDS.c.id == command_id, COMMANDS.c.status == "pending")
        .values(status="rejected", message=message, acked_at=utcnow())
    )


def record_acks(conn: Connection, run_id: int, acks: Sequence[CommandAck], event_seq: int) -> list[AckedCommand]:
    """Record acks of the run's pending commands (the first outcome of a command wins), at live event
    `event_seq`; return the commands they settled, with what each command was (read in the same
    UPDATE .. RETURNING: PostgreSQL, SQLite >= 3.35)."""
    out: list[AckedCommand] = []
    c = COMMANDS.c
    for ack in acks:
        row = conn.execute(
            update(COMMANDS)
            .where(c.id == ack.id, c.run_id == run_id, c.status == "pending")
            .values(
                status=ack.status, applied_step=ack.applied_step, message=ack.message,
                acked_at=utc_from_ts(ack.ts), ack_event_seq=event_seq,
            )
            .returning(*_asked(c), c.status, c.applied_step, c.message)
        ).first()
        if row is not None:
            out.append(_acked(row))
    return out


def acked_since(conn: Connection, run_id: int, after: int) -> list[tuple[int, AckedCommand]]:
    """The run's commands settled at live events after `after`: (event seq, command), in ack order."""
    c = COMMANDS.c
    rows = conn.execute(
        select(c.ack_event_seq, *_asked(c), c.status, c.applied_step, c.message)
        .where(c.run_id == run_id, c.ack_event_seq > after)
        .order_by(c.acked_at)
    )
    return [(int(row[0]), _acked(row[1:])) for row in rows]


def _asked(c: Any) -> tuple[Any, ...]:
    """The columns of what a command asks, in PendingCommand's order."""
    return c.id, c.kind, c.arm, c.value, c.steps, c.scheduler, c.params


def _acked(row: Sequence[Any]) -> AckedCommand:
    """An AckedCommand from `_asked`'s columns followed by status, applied_step and message."""
    return AckedCommand(PendingCommand(*row[:7]), *row[7:])


def list_commands(session: Session, run: str, limit: int, kinds: Sequence[str] | None = None) -> list[AuditEntry]:
    """The run's audit log (its commands of `kinds` when given), newest first."""
    r = run_row(session, run, RUNS.c.id, RUNS.c.name)
    c = COMMANDS.c
    q = (
        select(c.id, c.kind, c.arm, c.value, c.steps, c.actor, c.reason, c.created_at, c.status, c.applied_step,
               c.message, c.acked_at, c.scheduler, c.params)
        .where(c.run_id == r.id, *(() if kinds is None else (c.kind.in_(list(kinds)),)))
        .order_by(c.created_at.desc())
        .limit(limit)
    )
    return [
        AuditEntry(
            id=x.id, run=r.name, kind=x.kind, arm=x.arm, value=x.value, steps=x.steps, actor=x.actor,
            reason=x.reason, created_at=x.created_at, status=x.status, applied_step=x.applied_step,
            message=x.message, acked_at=x.acked_at, scheduler=x.scheduler, params=x.params,
        )
        for x in session.execute(q)
    ]
