"""Submitting a command to a run: decide, audit, send.

The decision is the agent's own: the run's overrides as the agent last reported them are rebuilt in
a `trainer_agent.overrides.Overrides`, the still-pending commands are replayed on top (so two quick
pins cannot together exceed 1), and the new command is applied to it. What the agent would reject,
the server answers at once: 422 for a command that no state could make valid, 409 for one the run's
state forbids. The agent still decides again when it applies the command (its state may have moved
on) and answers `rejected` with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from dataclasses import replace

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


def decide(view: command_store.SteeringView, cmd: CommandIn) -> Overrides:
    """Raise InvalidCommand (never valid as written) or CommandConflict (not in the run's state); return
    the run's overrides with its pending commands and this one applied."""
    return _decide_on(replay(view), view.name, view.status, cmd)


def replay(view: command_store.SteeringView) -> Overrides:
    """The run's overrides as reported, with its pending commands applied in the agent's order."""
    overrides = Overrides([a.name for a in view.arms])
    for a in view.arms:
        overrides.set_reported(a.name, a.state, a.pin, a.boost)
    for p in view.pending:  # in the order the agent will apply them
        overrides.apply(Command(p.kind, p.arm, p.value, p.steps, id=p.id), step=0)
    overrides.answered.clear()  # ids are never replayed twice here; keep copies small
    return overrides


def _decide_on(overrides: Overrides, name: str, status: str, cmd: CommandIn) -> Overrides:
    if status != "running":
        raise CommandConflict(f"run {name!r} is {status}; commands only reach a running run", status=status)
    command = Command(cmd.kind, cmd.arm, cmd.value, cmd.steps, id="(new)")
    try:
        check_static(command, overrides.arms, run=name)
    except CommandError as e:
        raise InvalidCommand(str(e), arm=cmd.arm) from e
    ack = overrides.apply(command, step=0)
    if ack.status == "rejected":
        raise CommandConflict(ack.message, arm=cmd.arm)
    overrides.answered.clear()
    return overrides


class Projections:
    """Per web process, each run's overrides with its pending commands applied, as of a SteeringState.

    A post reads the run's state (arms as reported, the number of pending commands and the newest one's
    id); when it is the one this process left after its own last post to the run, the pending commands
    are not read and replayed again, so a post costs the same with 0 or 1,000 of them pending. Any
    other change (an ack, a new step's report, a post by another process) misses and replays.
    """

    def __init__(self, max_runs: int = 1024) -> None:
        self._lock = threading.Lock()
        self._max_runs = max_runs
        self._by_run: dict[int, tuple[command_store.SteeringState, Overrides]] = {}

    def get(self, session: Session, state: command_store.SteeringState) -> Overrides:
        with self._lock:
            hit = self._by_run.get(state.run_id)
        if hit is not None and hit[0] == state:
            return copy.deepcopy(hit[1])
        view = command_store.SteeringView(
            state.run_id, state.name, state.status, list(state.arms),
            command_store.pending_commands(session, state.run_id),
        )
        return replay(view)

    def put(self, state: command_store.SteeringState, overrides: Overrides) -> None:
        with self._lock:
            if len(self._by_run) >= self._max_runs and state.run_id not in self._by_run:
                self._by_run.pop(next(iter(self._by_run)))
            self._by_run[state.run_id] = (state, overrides)


PROJECTIONS = Projections()
# SQLite has one writer; its busy handler makes waiting writers poll with sleeps of up to 100 ms, so
# concurrent posts queue here instead, woken in turn as each commits.
_SQLITE_WRITER = threading.Lock()


def submit(
    session: Session, client: redis.Redis, settings: Settings, run: str, cmd: CommandIn, actor: str
) -> CommandAccepted:
    """Validate, record as pending in the audit log, and XADD to the run's control stream."""
    # Read-then-write: on SQLite the transaction must take the write lock up front (BEGIN IMMEDIATE),
    # or a commit by the ingest worker between the read and the write fails it with SQLITE_BUSY.
    # End whatever read transaction the request has open (auth reads) so the option applies.
    session.commit()
    sqlite = session.get_bind().dialect.name == "sqlite"
    with _SQLITE_WRITER if sqlite else contextlib.nullcontext():
        try:
            session.connection(execution_options={SQLITE_IMMEDIATE: True})
            state = command_store.steering_state(session, run)
            overrides = _decide_on(PROJECTIONS.get(session, state), state.name, state.status, cmd)
            rec = command_store.record_command(
                session, state.run_id, cmd.kind, cmd.arm, cmd.value, cmd.steps, actor, cmd.reason
            )
            session.commit()
        except BaseException:
            session.rollback()  # SQLite's write lock goes with the turn
            raise
    PROJECTIONS.put(replace(state, n_pending=state.n_pending + 1, last_pending=rec.id), overrides)
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
