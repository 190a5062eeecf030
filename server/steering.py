"""Submitting a command to a run: validate against the run's arm state, audit, send.

Validation uses the arm state the agent last reported with the still-pending commands replayed on
top, so two quick pins cannot together exceed 1. The agent validates again when it applies a
command (and answers `rejected` with a reason); this check exists so a person gets a clear answer
at once.
"""

from __future__ import annotations

import logging
import math
import time

import orjson
import redis
from sqlalchemy.orm import Session

from server import store
from server.db import SQLITE_IMMEDIATE
from server.errors import CommandConflict, InvalidCommand, ServiceUnavailable
from server.schemas import CommandAccepted, CommandIn
from server.settings import Settings
from server.wire import ControlCommand
from trainer_agent.overrides import PIN_SUM_TOL  # the agent's own bound: accept what it accepts

log = logging.getLogger(__name__)



def validate(view: store.SteeringView, cmd: CommandIn) -> None:
    """Raise InvalidCommand (never valid as written) or CommandConflict (not in the run's state)."""
    if view.status != "running":
        raise CommandConflict(
            f"run {view.name!r} is {view.status}; commands only reach a running run", status=view.status
        )
    states = {a.name: a.state for a in view.arms}
    if cmd.arm not in states:
        raise InvalidCommand(
            f"run {view.name!r} has no arm {cmd.arm!r}; its arms are: {', '.join(states) or '(none)'}",
            arm=cmd.arm,
        )
    pins = {a.name: a.pin for a in view.arms if a.pin is not None and a.state == "active"}
    for p in view.pending:  # what the run will look like once the pending commands are applied
        if p.arm not in states:
            continue
        if p.kind == "retire":
            states[p.arm] = "retired"
            pins.pop(p.arm, None)
        elif p.kind == "restore":
            states[p.arm] = "active"
        elif p.kind == "pin" and p.value is not None:
            pins[p.arm] = p.value
        elif p.kind == "release":
            pins.pop(p.arm, None)

    if cmd.kind in ("pin", "boost"):
        if cmd.value is None:
            what = "a probability in [0, 1]" if cmd.kind == "pin" else "a factor > 0"
            raise InvalidCommand(f"{cmd.kind} needs a value: {what}")
        if not math.isfinite(cmd.value):
            raise InvalidCommand(f"{cmd.kind} value must be a finite number, got {cmd.value}")
    elif cmd.value is not None:
        raise InvalidCommand(f"{cmd.kind} takes no value (value is for pin and boost)")
    if cmd.steps is not None:
        if cmd.kind != "boost":
            raise InvalidCommand(f"steps applies to boost only, not {cmd.kind}")
        if cmd.steps < 1:
            raise InvalidCommand(f"steps must be at least 1, got {cmd.steps}")

    state = states[cmd.arm]
    if cmd.kind == "pin":
        assert cmd.value is not None
        if not 0.0 <= cmd.value <= 1.0:
            raise InvalidCommand(f"pin probability must be in [0, 1], got {cmd.value}")
        if state == "retired":
            raise CommandConflict(f"arm {cmd.arm!r} is retired; restore it before pinning it")
        others = {a: p for a, p in pins.items() if a != cmd.arm}
        total = sum(others.values()) + cmd.value
        if total > 1.0 + PIN_SUM_TOL:
            listed = ", ".join(f"{a}={p:g}" for a, p in sorted(others.items()))
            raise CommandConflict(
                f"pins would sum to {total:g} > 1 (other pins: {listed}); "
                "lower this pin or release another arm first",
                total=total,
            )
    elif cmd.kind == "boost":
        assert cmd.value is not None
        if cmd.value <= 0:
            raise InvalidCommand(f"boost factor must be > 0 (use retire to exclude an arm), got {cmd.value}")
        if state == "retired":
            raise CommandConflict(f"arm {cmd.arm!r} is retired; restore it before boosting it")
    elif cmd.kind == "retire":
        if state == "retired":
            raise CommandConflict(f"arm {cmd.arm!r} is already retired")
        if sum(1 for s in states.values() if s == "active") <= 1:
            raise CommandConflict(f"cannot retire {cmd.arm!r}: it is the last active arm of the run")
    elif cmd.kind == "restore" and state != "retired":
        raise CommandConflict(f"arm {cmd.arm!r} is not retired; there is nothing to restore")


def submit(
    session: Session, client: redis.Redis, settings: Settings, run: str, cmd: CommandIn, actor: str
) -> CommandAccepted:
    """Validate, record as pending in the audit log, and XADD to the run's control stream."""
    # Read-then-write: on SQLite the transaction must take the write lock up front (BEGIN IMMEDIATE),
    # or a commit by the ingest worker between the read and the write fails it with SQLITE_BUSY.
    # End whatever read transaction the request has open (auth reads) so the option applies.
    session.commit()
    session.connection(execution_options={SQLITE_IMMEDIATE: True})
    view = store.steering_view(session, run)
    validate(view, cmd)
    rec = store.record_command(
        session, view.run_id, cmd.kind, cmd.arm, cmd.value, cmd.steps, actor, cmd.reason
    )
    session.commit()
    wire = ControlCommand(
        id=rec.id, kind=cmd.kind, arm=cmd.arm, value=cmd.value, steps=cmd.steps, actor=actor,
        reason=cmd.reason, ts=time.time(),
    )
    try:
        client.xadd(
            settings.control_key(run),
            {"m": orjson.dumps(wire.model_dump())},
            maxlen=settings.control_maxlen,
            approximate=True,
        )
    except redis.RedisError as e:
        store.reject_command(session, rec.id, f"not sent: the control stream was unreachable ({e})")
        session.commit()
        raise ServiceUnavailable(f"cannot reach Redis to send the command: {e}") from e
    log.info("command %s %s %s on %s by %s", rec.id, cmd.kind, cmd.arm, run, actor)
    return CommandAccepted(id=rec.id, status="pending")
