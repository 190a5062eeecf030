"""Submitting a command to a run: decide, audit, send.

The decision is the agent's own: the run's overrides as the agent last reported them are rebuilt in
a `trainer_agent.overrides.Overrides` and its scheduler (name, parameters, frozen, from the agent's
latest snapshot) in a `trainer_agent.scheduler_control.SchedulerControl`, the still-pending commands are
replayed on top (so two quick pins cannot together exceed 1), and the new command is applied to them.
What the agent would reject, the server answers at once: 422 for a command that no state could make
valid, 409 for one the run's state forbids. The agent still decides again when it applies the command
(its state may have moved on) and answers `rejected` with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from dataclasses import dataclass, replace

import orjson
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import SQLITE_IMMEDIATE
from server.errors import CommandConflict, InvalidCommand, ServiceUnavailable
from server.logsafe import printable
from server.schemas import ArmPreview, CommandAccepted, CommandIn, SchedulerPreview
from server.settings import Settings
from server.store import commands as command_store
from server.store import scheduler as scheduler_store
from server.store.scheduler import SchedulerHead
from server.store.sql import RUNS
from trainer_agent.errors import CommandError, ConfigError
from trainer_agent.overrides import Command, Overrides
from trainer_agent.protocol import SCHEDULER_COMMAND_KINDS, command_document
from trainer_agent.scheduler_control import SchedulerControl, apply_command, check_command

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Projection:
    """What commands act on, as the agent will have it: its overrides, and its scheduler (None when this
    server cannot build it: a scheduler registered only in the training process)."""

    overrides: Overrides
    control: SchedulerControl | None
    message: str = ""  # the last command's answer


def decide(view: command_store.SteeringView, cmd: CommandIn) -> Projection:
    """Raise InvalidCommand (never valid as written) or CommandConflict (not in the run's state); return
    the run's overrides and scheduler with its pending commands and this one applied."""
    return _decide_on(replay(view), view.name, view.status, cmd)


def control_of(head: SchedulerHead | None, arms: list[str]) -> SchedulerControl | None:
    """The run's scheduler as reported (without its learned state: deciding needs none)."""
    if head is None:
        return None
    try:
        return SchedulerControl.from_head(head.name, head.params, head.frozen, arms)
    except ConfigError:
        return None


def replay(view: command_store.SteeringView, control: SchedulerControl | None = None) -> Projection:
    """The run's overrides as reported and its scheduler (`control`, or built from the view's head), with
    its pending commands applied in the agent's order."""
    arms = [a.name for a in view.arms]
    overrides = Overrides(arms)
    for a in view.arms:
        overrides.set_reported(a.name, a.state, a.pin, a.boost)
    projection = Projection(overrides, control if control is not None else control_of(view.scheduler, arms))
    for p in view.pending:  # in the order the agent will apply them
        cmd = Command(p.kind, p.arm, p.value, p.steps, id=p.id, scheduler=p.scheduler, params=p.params)
        apply_command(overrides, projection.control, cmd, step=0)
    overrides.answered.clear()  # ids are never replayed twice here; keep copies small
    return projection


def as_command(cmd: CommandIn, id: str = "(new)") -> Command:
    return Command(cmd.kind, cmd.arm or "", cmd.value, cmd.steps, id=id, scheduler=cmd.scheduler, params=cmd.params)


def _decide_on(projection: Projection, name: str, status: str, cmd: CommandIn) -> Projection:
    if status != "running":
        raise CommandConflict(f"run {name!r} is {status}; commands only reach a running run", status=status)
    command = as_command(cmd)
    overrides, control = projection.overrides, projection.control
    try:
        check_command(command, overrides.arms, run=name)
        if command.kind == "set_params" and control is not None:
            control.check_params(command.params or {})
    except CommandError as e:
        raise InvalidCommand(str(e), arm=cmd.arm) from e
    if command.kind in SCHEDULER_COMMAND_KINDS and control is None:
        raise CommandConflict(f"run {name!r} runs a scheduler this server does not have; its scheduler "
                              "cannot be steered from here")
    ack = apply_command(overrides, control, command, step=0)
    if ack.status == "rejected":
        raise CommandConflict(ack.message, arm=cmd.arm)
    overrides.answered.clear()
    projection.message = ack.message
    return projection


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
        self._by_run: dict[int, tuple[command_store.SteeringState, Projection]] = {}

    def take(self, session: Session, state: command_store.SteeringState) -> Projection:
        """The run's projection as of `state`: the one kept, taken out of the cache (the caller decides on
        it and may change it; `put` keeps the result), or replayed from the pending commands. Callers
        hold the run's steering lock, so no other post of the run uses it meanwhile."""
        with self._lock:
            hit = self._by_run.pop(state.run_id, None)
        if hit is not None and hit[0] == state:
            return hit[1]
        view = command_store.SteeringView(
            state.run_id, state.name, state.status, list(state.arms),
            command_store.pending_commands(session, state.run_id), state.scheduler,
        )
        return replay(view)

    def put(self, state: command_store.SteeringState, overrides: Projection) -> None:
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
            state = command_store.steering_state(session, run, for_post=True)
            overrides = _decide_on(PROJECTIONS.take(session, state), state.name, state.status, cmd)
            rec = command_store.record_command(
                session, state.run_id, cmd.kind, cmd.arm or "", cmd.value, cmd.steps, actor, cmd.reason,
                cmd.scheduler, cmd.params, run_name=state.name,
            )
            session.commit()
        except BaseException:
            session.rollback()  # SQLite's write lock goes with the turn
            raise
    PROJECTIONS.put(replace(state, n_pending=state.n_pending + 1, last_pending=rec.id), overrides)
    doc = command_document(
        id=rec.id, kind=cmd.kind, arm=cmd.arm or "", value=cmd.value, steps=cmd.steps, actor=actor,
        reason=cmd.reason, ts=time.time(), scheduler=cmd.scheduler, params=cmd.params,
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
    log.info("command %s %s %s on %s by %s", rec.id, cmd.kind, printable(cmd.arm or cmd.scheduler or "-"),
             printable(run), printable(actor))
    return CommandAccepted(id=rec.id, status="pending")


def preview(session: Session, run: str, cmd: CommandIn) -> SchedulerPreview:
    """The probabilities `cmd` would put in force now, from the agent's latest scheduler snapshot and the
    arms as last reported, after the commands still pending; decided as a post is (409/422 alike)."""
    state = command_store.steering_state(session, run)
    _, view = scheduler_store.scheduler_view(session, run)
    if view.state is None:
        raise CommandConflict(f"run {run!r} has not sent its scheduler state (an older agent, no step yet, or a "
                              "state too large to stream); there is nothing to preview from")
    arms = [a.name for a in state.arms]
    try:
        control = SchedulerControl.from_state(view.state, arms)
    except ConfigError as e:
        raise CommandConflict(f"the scheduler snapshot of run {run!r} cannot be read here: {e}") from e
    reported = replay(command_store.SteeringView(state.run_id, state.name, state.status, list(state.arms), []),
                      copy.deepcopy(control))
    assert reported.control is not None
    current = reported.overrides.resolve(reported.control.probabilities(reported.overrides.active))
    pending = command_store.pending_commands(session, state.run_id)
    projection = _decide_on(
        replay(command_store.SteeringView(state.run_id, state.name, state.status, list(state.arms), pending),
               control), state.name, state.status, cmd)
    assert projection.control is not None
    after = projection.overrides.resolve(projection.control.probabilities(projection.overrides.active))
    head = projection.control.head()
    last_step = session.execute(select(RUNS.c.last_step).where(RUNS.c.id == state.run_id)).scalar_one()
    return SchedulerPreview(
        scheduler=head["name"], params=head["params"], frozen=head["frozen"], message=projection.message,
        snapshot_step=view.head.step, last_step=int(last_step), pending=len(pending),
        arms=[ArmPreview(arm=a, current=float(c), preview=float(p)) for a, c, p in
              zip(arms, current.tolist(), after.tolist(), strict=True)],
    )
