"""Submitting a command to a run: decide, audit, send.

The decision is the agent's own: the run's overrides as the agent last reported them are rebuilt in
a `trainer_agent.overrides.Overrides`, the still-pending commands are replayed on top (so two quick
pins cannot together exceed 1), and the new command is applied to it. What the agent would reject,
the server answers at once: 422 for a command that no state could make valid, 409 for one the run's
state forbids. The agent still decides again when it applies the command (its state may have moved
on) and answers `rejected` with the reason.
"""

from __future__ import annotations

import logging
import time

import orjson
import redis
from sqlalchemy.orm import Session

from server.db import SQLITE_IMMEDIATE
from server.errors import CommandConflict, InvalidCommand, ServiceUnavailable
from server.logsafe import printable
from server.schemas import CommandAccepted, CommandIn
from server.settings import Settings
from server.store import commands as command_store
from trainer_agent.errors import CommandError
from trainer_agent.overrides import Command, Overrides, check_static
from trainer_agent.protocol import command_document

log = logging.getLogger(__name__)


def decide(view: command_store.SteeringView, cmd: CommandIn) -> None:
    """Raise InvalidCommand (never valid as written) or CommandConflict (not in the run's state)."""
    if view.status != "running":
        raise CommandConflict(
            f"run {view.name!r} is {view.status}; commands only reach a running run", status=view.status
        )
    arms = [a.name for a in view.arms]
    command = Command(cmd.kind, cmd.arm, cmd.value, cmd.steps, id="(new)")
    try:
        check_static(command, arms, run=view.name)
    except CommandError as e:
        raise InvalidCommand(str(e), arm=cmd.arm) from e
    overrides = Overrides(arms)
    for a in view.arms:
        overrides.set_reported(a.name, a.state, a.pin, a.boost)
    for p in view.pending:  # in the order the agent will apply them
        overrides.apply(Command(p.kind, p.arm, p.value, p.steps, id=p.id), step=0)
    ack = overrides.apply(command, step=0)
    if ack.status == "rejected":
        raise CommandConflict(ack.message, arm=cmd.arm)


def submit(
    session: Session, client: redis.Redis, settings: Settings, run: str, cmd: CommandIn, actor: str
) -> CommandAccepted:
    """Validate, record as pending in the audit log, and XADD to the run's control stream."""
    # Read-then-write: on SQLite the transaction must take the write lock up front (BEGIN IMMEDIATE),
    # or a commit by the ingest worker between the read and the write fails it with SQLITE_BUSY.
    # End whatever read transaction the request has open (auth reads) so the option applies.
    session.commit()
    session.connection(execution_options={SQLITE_IMMEDIATE: True})
    view = command_store.steering_view(session, run)
    decide(view, cmd)
    rec = command_store.record_command(
        session, view.run_id, cmd.kind, cmd.arm, cmd.value, cmd.steps, actor, cmd.reason
    )
    session.commit()
    doc = command_document(
        id=rec.id, kind=cmd.kind, arm=cmd.arm, value=cmd.value, steps=cmd.steps, actor=actor,
        reason=cmd.reason, ts=time.time(),
    )
    try:
        client.xadd(
            settings.keys.control(run),
            {"m": orjson.dumps(doc)},
            maxlen=settings.control_maxlen,
            approximate=True,
        )
    except redis.RedisError as e:
        command_store.reject_command(session, rec.id, f"not sent: the control stream was unreachable ({e})")
        session.commit()
        raise ServiceUnavailable(f"cannot reach Redis to send the command: {e}") from e
    log.info("command %s %s %s on %s by %s", rec.id, cmd.kind, printable(cmd.arm), printable(run), printable(actor))
    return CommandAccepted(id=rec.id, status="pending")
