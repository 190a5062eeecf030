"""Commands on the scheduler itself: set_params, switch, freeze, unfreeze (docs/formulas.md, "Scheduler commands").

`SchedulerControl` holds the scheduler in force, the probabilities a freeze holds and the run's recent
statistics. The agent applies scheduler commands to it at step boundaries and streams its snapshot; the
server rebuilds it from that snapshot to decide a command (202, 409 or 422, as the agent will) and to
preview the probabilities a command would produce. `apply_command` is the one entry for every command,
on an arm (`Overrides`) or on the scheduler; `check_command` the one static check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import bool_array, float_array, mapping, require
from .errors import CommandError, ConfigError
from .overrides import Ack, Command, Overrides, check_static
from .params import check_params
from .protocol import SCHEDULER_COMMAND_KINDS, scheduler_message
from .recent import RecentStats
from .schedulers import Scheduler, available_schedulers, make_scheduler, scheduler_class, uniform_over
from .stats import BoolArray, FloatArray, StepObservations

# A snapshot whose scheduler state holds more numbers than this goes out without it (the wire's entries
# are at most 1 MiB): DUMP's windows, 64 arms x 300, hold 19,200.
MAX_STATE_VALUES = 40_000


@dataclass(frozen=True, slots=True)
class Held:
    """What a freeze holds: q over the arms active then, and the scheduler's q over every arm then
    (its shares, for an arm retired or restored while frozen)."""

    q: FloatArray
    active: BoolArray
    weights: FloatArray

    def probabilities(self, active: BoolArray) -> FloatArray:
        if np.array_equal(active, self.active):
            return self.q
        w = np.where(active, self.weights, 0.0)
        total = float(w.sum())
        return w / total if total > 0 else uniform_over(active)

    def state_dict(self) -> dict[str, Any]:
        return {"q": self.q.tolist(), "active": self.active.tolist(), "weights": self.weights.tolist()}

    @classmethod
    def from_state(cls, state: Any, k: int) -> Held:
        where = "scheduler control state: held"
        return cls(float_array(require(state, "q", where), f"{where}: q", k, low=0.0),
                   bool_array(require(state, "active", where), f"{where}: active", k),
                   float_array(require(state, "weights", where), f"{where}: weights", k, low=0.0))


def check_command(cmd: Command, arms: Sequence[str], run: str | None = None) -> None:
    """Reject what no state could make valid (422 on the server): for a scheduler command, an arm, a
    value or steps, a `switch` without a registered scheduler or with parameters its schema or its
    constructor refuses, `set_params` without parameters. Commands on arms: `overrides.check_static`."""
    if cmd.kind not in SCHEDULER_COMMAND_KINDS:
        check_static(cmd, arms, run)
        return
    if cmd.arm:
        raise CommandError(f"{cmd.kind} acts on the scheduler and takes no arm")
    if cmd.value is not None or cmd.steps is not None:
        raise CommandError(f"{cmd.kind} takes no value or steps")
    if cmd.kind == "switch":
        if not cmd.scheduler:
            raise CommandError(f"switch needs the scheduler to switch to: one of {', '.join(available_schedulers())}")
        try:
            cls = scheduler_class(cmd.scheduler)
            make_scheduler(cmd.scheduler, arms, check_params(cmd.scheduler, cls.param_schema, cmd.params or {}))
        except ConfigError as e:
            raise CommandError(str(e)) from e
        return
    if cmd.scheduler is not None:
        raise CommandError(f"{cmd.kind} takes no scheduler (switch does)")
    if cmd.kind == "set_params" and not cmd.params:
        raise CommandError("set_params needs params: an object of parameter name -> new value")
    if cmd.kind != "set_params" and cmd.params is not None:
        raise CommandError(f"{cmd.kind} takes no params")


class SchedulerControl:
    """The scheduler in force, a freeze's held probabilities, and the recent statistics a switch starts from."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.recent = RecentStats(len(scheduler.arms))
        self.held: Held | None = None
        # A command changed the scheduler or its parameters: a resumed agent keeps what it changed to.
        self.commanded = False
        self.version = 0  # applied scheduler commands so far (the agent streams a snapshot on a change)

    @property
    def frozen(self) -> bool:
        return self.held is not None

    def update(self, obs: StepObservations) -> None:
        """Learn from a step (frozen or not: a freeze holds the probabilities, not the learning)."""
        self.scheduler.update(obs)
        self.recent.add(obs)  # one append: the step's own arrays

    def probabilities(self, active: BoolArray) -> FloatArray:
        """q: the held probabilities while frozen, else the scheduler's."""
        if self.held is not None:
            return self.held.probabilities(active)
        return self.scheduler.probabilities(active)

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """`set_params`'s parameters checked against the schema of the scheduler in force (CommandError)."""
        return check_params(self.scheduler.name, type(self.scheduler).param_schema, params)

    def apply(self, cmd: Command, active: BoolArray) -> str:
        """Apply a statically valid scheduler command; the ack's message, or CommandError when the state
        forbids it (freezing a frozen scheduler, unfreezing one that is not, a `set_params` that changes
        nothing, a `switch` to the scheduler in force)."""
        name = self.scheduler.name
        note = " (frozen: the held probabilities stay in force until unfreeze)" if self.held is not None else ""
        if cmd.kind == "freeze":
            if self.held is not None:
                raise CommandError(f"the scheduler ({name}) is already frozen")
            self.held = Held(self.scheduler.probabilities(active).copy(), active.copy(),
                             self.scheduler.probabilities(None).copy())
            message = f"froze {name}'s probabilities"
        elif cmd.kind == "unfreeze":
            if self.held is None:
                raise CommandError(f"the scheduler ({name}) is not frozen; there is nothing to unfreeze")
            self.held = None
            message = f"unfroze {name}"
        elif cmd.kind == "set_params":
            changes = self.check_params(cmd.params or {})
            try:
                new = self.scheduler.with_params(changes)
            except ConfigError as e:
                raise CommandError(str(e)) from e
            before, after = self.scheduler.params(), new.params()
            diff = [f"{k} {before.get(k)!r} -> {after.get(k)!r}" for k in changes if before.get(k) != after.get(k)]
            if not diff:
                shown = ", ".join(f"{k}={after.get(k)!r}" for k in changes)
                raise CommandError(f"{name} already has {shown}; set_params would change nothing")
            self.scheduler = new
            message = f"set {name} {', '.join(diff)}{note}"
        else:  # switch
            assert cmd.scheduler is not None
            if cmd.scheduler == name:
                raise CommandError(f"the run already uses {name}; set_params changes its parameters")
            params = check_params(cmd.scheduler, scheduler_class(cmd.scheduler).param_schema, cmd.params or {})
            new = make_scheduler(cmd.scheduler, self.scheduler.arms, params)
            message = f"switched {name} -> {new.name} ({self._start(new)}){note}"
            self.scheduler = new
        self.commanded = self.commanded or cmd.kind in ("set_params", "switch")
        self.version += 1
        return message

    def _start(self, new: Scheduler) -> str:
        """Start `new` from what the run knows; says how (docs/formulas.md, "switch")."""
        # A wrapper (staged, cyclical) hands over, and takes, its base's estimates.
        old, summary = self.scheduler.learner(), self.recent.summary()
        carried = (old.signal is not None and old.signal == new.learner().signal
                   and type(old).estimate is not Scheduler.estimate)
        new.warm_start(old.estimate(summary) if carried else summary)
        if carried:
            return f"{old.name}'s per-arm {old.signal} estimates carried over"
        if new.stateless:
            return "it learns nothing; nothing to carry over"
        return f"warm-started from the run's recent per-arm statistics (last {self.recent.steps.maxlen} steps)"

    # -- snapshots and checkpoints ------------------------------------------------------------------------
    def head(self) -> dict[str, Any]:
        return {"name": self.scheduler.name, "params": self.scheduler.params(), "frozen": self.frozen}

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict(), "held": None if self.held is None else self.held.state_dict(),
                "recent": self.recent.state_dict(), "commanded": self.commanded}

    def snapshot(self, step: int) -> dict[str, Any]:
        """The `scheduler` wire message after `step` (its state left out when too large to stream)."""
        size = self.scheduler.state_size() + 3 * len(self.scheduler.arms) * len(self.recent.steps)
        state = self.state_dict() if size <= MAX_STATE_VALUES else None
        return scheduler_message(step, self.scheduler.name, self.scheduler.params(), self.frozen, state)

    def load_state_dict(self, state: Mapping[str, Any], saved_scheduler: Mapping[str, Any]) -> None:
        """Continue from a `state_dict()` (the scheduler's own state passed apart, as the agent saves it).
        When a command had changed the scheduler, the saved one (name and parameters) is rebuilt;
        otherwise the scheduler in force loads the saved state. ConfigError, nothing changed, on a misfit."""
        where = "scheduler control state"
        arms = self.scheduler.arms
        commanded = require(state, "commanded", where)
        if not isinstance(commanded, bool):
            raise ConfigError(f"{where}: commanded must be true or false")
        recent = RecentStats(len(arms))
        recent.load_state_dict(mapping(require(state, "recent", where), f"{where}: recent"))
        held_doc = require(state, "held", where)
        held = None if held_doc is None else Held.from_state(held_doc, len(arms))
        scheduler = self.scheduler
        if commanded:
            params = mapping(saved_scheduler.get("params", {}), f"{where}: scheduler params")
            scheduler = make_scheduler(str(require(saved_scheduler, "name", where)), arms, params)
        scheduler.load_state_dict(saved_scheduler)
        self.scheduler, self.recent, self.held, self.commanded = scheduler, recent, held, commanded

    @classmethod
    def from_state(cls, state: Mapping[str, Any], arms: Sequence[str]) -> SchedulerControl:
        """Rebuilt from a snapshot's state (the server's preview): the scheduler it names, as it was."""
        saved = mapping(require(state, "scheduler", "scheduler snapshot"), "scheduler snapshot: scheduler")
        params = mapping(saved.get("params", {}), "scheduler snapshot: params")
        control = cls(make_scheduler(str(require(saved, "name", "scheduler snapshot")), arms, params))
        control.load_state_dict({**state, "commanded": False}, saved)
        return control

    @classmethod
    def from_head(cls, name: str, params: Mapping[str, Any], frozen: bool, arms: Sequence[str]) -> SchedulerControl:
        """Built from what a snapshot says without its learned state: enough to decide a command."""
        control = cls(make_scheduler(name, arms, params))
        if frozen:
            q = control.scheduler.probabilities(None)
            control.held = Held(q, np.ones(len(arms), dtype=np.bool_), q)
        return control


def apply_command(overrides: Overrides, control: SchedulerControl | None, cmd: Command, step: int) -> Ack:
    """Apply any command at the end of `step`: on an arm through `overrides`, on the scheduler through
    `control` (None: rejected, nothing to apply it to). One answer per id, kept with the overrides'."""
    if cmd.kind not in SCHEDULER_COMMAND_KINDS:
        return overrides.apply(cmd, step)
    if cmd.id in overrides.answered:
        return overrides.answered[cmd.id]
    try:
        check_command(cmd, overrides.arms)
        if control is None:
            raise CommandError("this run's scheduler cannot be steered here (it is not registered on this side)")
        ack = Ack(cmd.id, "applied", step, control.apply(cmd, overrides.active))
    except CommandError as e:
        ack = Ack(cmd.id, "rejected", None, str(e))
    overrides.answered[cmd.id] = ack
    return ack
