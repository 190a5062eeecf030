"""Human overrides on top of a scheduler: retire / restore, boost, pin, release.

Semantics (docs/formulas.md, "Overrides"): scheduler probabilities q over the active arms become the probabilities
in force by (1) zeroing retired arms, (2) multiplying boosted arms by their factor, (3) giving each
pinned arm exactly its pin while unpinned active arms share 1 - Σpins in proportion to their boosted q.
Commands are idempotent by id and are applied by the agent at step boundaries.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .checkpoint import bool_array, float_array, float_value, int_value, list_of, mapping, require
from .errors import CommandError, ConfigError
from .protocol import ARM_COMMAND_KINDS, COMMAND_KINDS, AckStatus
from .stats import BoolArray, FloatArray

# Σpins may exceed 1 by float noise when a user pins e.g. 0.1 + 0.2 + 0.7 (1 + 2e-16). The bound
# stays far below the 1e-9 to which probabilities must sum to 1 (pins 1.0 and 1e-9 are rejected).
PIN_SUM_TOL = 1e-12


@dataclass(frozen=True, slots=True)
class Command:
    """One command. On an arm: `value` is the pin probability or the boost factor; `steps` bounds a
    boost. On the scheduler (`arm` ""): `scheduler` names the one to switch to, `params` the parameters
    of `set_params` and `switch` (trainer_agent/scheduler_control.py)."""

    kind: str
    arm: str
    value: float | None = None
    steps: int | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    actor: str = "local"
    reason: str = ""
    # Re-applied by a restarted agent to rebuild its state: answered before, so not acked again.
    replay: bool = False
    scheduler: str | None = None
    params: Mapping[str, Any] | None = None

    @classmethod
    def from_message(cls, m: Mapping[str, Any]) -> Command:
        """Build from a control-stream document; raises CommandError when it cannot be a command."""
        try:
            value = m.get("value")
            steps = m.get("steps")
            params = m.get("params")
            if params is not None and not isinstance(params, Mapping):
                raise TypeError(f"params must be an object, got {type(params).__name__}")
            scheduler = m.get("scheduler")
            return cls(
                kind=str(m["kind"]),
                arm=str(m["arm"]),
                value=None if value is None else float(value),
                steps=None if steps is None else int(steps),
                id=str(m["id"]),
                actor=str(m.get("actor") or "unknown"),
                reason=str(m.get("reason") or ""),
                scheduler=None if scheduler is None else str(scheduler),
                params=None if params is None else dict(params),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CommandError(f"malformed command: {e}") from e

    def as_message(self) -> dict[str, Any]:
        """The fields `from_message` reads back (`replay` is not one: it is a property of a delivery)."""
        return {"id": self.id, "kind": self.kind, "arm": self.arm, "value": self.value, "steps": self.steps,
                "actor": self.actor, "reason": self.reason, "scheduler": self.scheduler,
                "params": None if self.params is None else dict(self.params)}


@dataclass(frozen=True, slots=True)
class Ack:
    """The outcome of a command: applied at the end of `applied_step`, or rejected with a reason."""

    id: str
    status: AckStatus
    applied_step: int | None
    message: str


def check_static(cmd: Command, arms: Sequence[str], run: str | None = None) -> None:
    """Reject what no state could make valid (the server answers these with 422): an unknown kind or
    arm, a missing or extra value, p outside [0, 1], a factor <= 0, `steps` on anything but a boost.
    Scheduler commands are checked by `scheduler_control.check_command`, which calls this for the others."""
    if cmd.kind not in ARM_COMMAND_KINDS:
        if cmd.kind in COMMAND_KINDS:
            raise CommandError(f"{cmd.kind} is a scheduler command, not a command on an arm")
        raise CommandError(f"unknown command kind {cmd.kind!r}; expected one of {', '.join(COMMAND_KINDS)}")
    if cmd.scheduler is not None or cmd.params is not None:
        raise CommandError(f"{cmd.kind} takes no scheduler or params (they are for scheduler commands)")
    if cmd.arm not in arms:
        shown = ", ".join(arms[:20]) + (", ..." if len(arms) > 20 else "")
        where = "this run" if run is None else f"run {run!r}"
        raise CommandError(f"{where} has no arm {cmd.arm!r}; its arms are: {shown}")
    value = cmd.value
    if cmd.kind not in ("pin", "boost"):
        if value is not None:
            raise CommandError(f"{cmd.kind} takes no value (value is for pin and boost)")
    elif value is None:
        what = "a probability in [0, 1]" if cmd.kind == "pin" else "a factor > 0"
        raise CommandError(f"{cmd.kind} needs a value: {what}")
    elif not math.isfinite(value):
        raise CommandError(f"{cmd.kind} value must be a finite number, got {value}")
    elif cmd.kind == "pin" and not 0.0 <= value <= 1.0:
        raise CommandError(f"pin probability must be in [0, 1], got {value:g}")
    elif cmd.kind == "boost" and value <= 0:
        raise CommandError(f"boost factor must be > 0 (use retire to exclude an arm), got {value:g}")
    if cmd.steps is not None:
        if cmd.kind != "boost":
            raise CommandError(f"steps applies to boost only, not {cmd.kind}")
        if cmd.steps < 1:
            raise CommandError(f"steps must be at least 1, got {cmd.steps}")


@dataclass(frozen=True, slots=True)
class OverrideSnapshot:
    active: BoolArray
    pin: FloatArray
    boost: FloatArray
    boost_left: tuple[int | None, ...]

    def arm_state(self, i: int) -> dict[str, Any]:
        boosted = self.boost[i] != 1.0 or self.boost_left[i] is not None
        return {
            "state": "active" if self.active[i] else "retired",
            "pin": None if np.isnan(self.pin[i]) else float(self.pin[i]),
            "boost": float(self.boost[i]) if boosted else None,
        }


def _read_only(a: np.ndarray) -> np.ndarray:
    c = a.copy()
    c.flags.writeable = False
    return c


class Overrides:
    """Override state for a fixed arm list, plus the audit of command ids already answered."""

    def __init__(self, arms: Sequence[str]) -> None:
        self.arms = tuple(arms)
        self.index = {a: i for i, a in enumerate(self.arms)}
        k = len(self.arms)
        self.active: BoolArray = np.ones(k, dtype=np.bool_)
        self.pin: FloatArray = np.full(k, np.nan)  # NaN = not pinned
        self.boost: FloatArray = np.ones(k)
        self.boost_left: list[int | None] = [None] * k
        self.answered: dict[str, Ack] = {}
        self._snap: OverrideSnapshot | None = None  # the state's snapshot, until the state changes

    def set_reported(self, arm: str, state: str, pin: float | None, boost: float | None) -> None:
        """Set one arm's state as a step record reported it (`OverrideSnapshot.arm_state`).

        The server rebuilds a run's overrides this way, then replays its pending commands and the
        new one through `apply`, so it accepts exactly what the agent will. A boost's steps left are
        not reported; they do not change what a command may do.
        """
        i = self.index[arm]
        self._snap = None
        self.active[i] = state != "retired"
        self.pin[i] = np.nan if pin is None else pin
        self.boost[i] = 1.0 if boost is None else boost
        self.boost_left[i] = None

    # -- state queries -------------------------------------------------------------------------
    @property
    def pinned(self) -> BoolArray:
        return ~np.isnan(self.pin)

    def snapshot(self) -> OverrideSnapshot:
        """A read-only copy of the state, taken every step (records are built from it lazily).

        Overrides change rarely: the copy is made once per change and shared by the steps between.
        """
        snap = self._snap
        if snap is None:
            snap = self._snap = OverrideSnapshot(
                _read_only(self.active), _read_only(self.pin), _read_only(self.boost), tuple(self.boost_left)
            )
        return snap

    # -- saved state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Retired arms, pins, boosts (with the steps they have left) and every answer given, as plain
        JSON-able Python. The answers make replayed commands no-ops after a load."""
        return {
            "active": self.active.tolist(),
            "pin": [None if math.isnan(p) else p for p in self.pin.tolist()],
            "boost": self.boost.tolist(),
            "boost_left": list(self.boost_left),
            "answered": [
                {"id": a.id, "status": a.status, "applied_step": a.applied_step, "message": a.message}
                for a in self.answered.values()
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the state with a `state_dict()`; ConfigError (nothing changed) when it does not fit."""
        where, k = "override state", len(self.arms)
        active = bool_array(require(state, "active", where), f"{where}: active", k)
        if not active.any():
            raise ConfigError(f"{where}: every arm is retired")
        pins = list_of(require(state, "pin", where), f"{where}: pin")
        if len(pins) != k:
            raise ConfigError(f"{where}: pin: expected {k} values, got {len(pins)}")
        pin = np.full(k, np.nan)
        for i, v in enumerate(pins):
            if v is not None:
                pin[i] = float_value(v, f"{where}: pin of {self.arms[i]!r}")
                if not 0.0 <= pin[i] <= 1.0:
                    raise ConfigError(f"{where}: pin of {self.arms[i]!r} is {v!r}, not in [0, 1]")
        if float(np.nansum(np.where(active, pin, np.nan))) > 1.0 + PIN_SUM_TOL:
            raise ConfigError(f"{where}: pins sum to more than 1")
        boost = float_array(require(state, "boost", where), f"{where}: boost", k)
        if (boost <= 0).any():
            raise ConfigError(f"{where}: boost factors must be positive")
        lefts = list_of(require(state, "boost_left", where), f"{where}: boost_left")
        if len(lefts) != k:
            raise ConfigError(f"{where}: boost_left: expected {k} values, got {len(lefts)}")
        boost_left = [None if v is None else int_value(v, f"{where}: boost_left of {self.arms[i]!r}", low=1)
                      for i, v in enumerate(lefts)]
        answered: dict[str, Ack] = {}
        for item in list_of(require(state, "answered", where), f"{where}: answered"):
            a = mapping(item, f"{where}: answered")
            status, step = a.get("status"), a.get("applied_step")
            if not isinstance(a.get("id"), str) or status not in ("applied", "rejected"):
                raise ConfigError(f"{where}: malformed answer {item!r}")
            answered[a["id"]] = Ack(
                a["id"], status, None if step is None else int_value(step, f"{where}: applied_step"),
                str(a.get("message", "")),
            )
        self.active, self.pin, self.boost, self.boost_left, self.answered = active, pin, boost, boost_left, answered
        self._snap = None

    # -- commands ------------------------------------------------------------------------------
    def apply(self, cmd: Command, step: int) -> Ack:
        """Apply `cmd` at the end of `step`. A command id seen before returns its first answer."""
        if cmd.id in self.answered:
            return self.answered[cmd.id]
        try:
            check_static(cmd, self.arms)
            self._snap = None
            message = self._apply(cmd)
            ack = Ack(cmd.id, "applied", step, message)
        except CommandError as e:
            ack = Ack(cmd.id, "rejected", None, str(e))
        self.answered[cmd.id] = ack
        return ack

    def _apply(self, cmd: Command) -> str:
        """Change the state for `cmd` (statically valid), or raise CommandError when the state forbids it.

        Retiring a retired arm and restoring an active one are rejected: they would change nothing,
        and a rejection says so at once instead of leaving a marker on the charts for a non-event.
        Release is always applied: a boost may expire at the very step boundary where a release
        arrives (the server cannot know), so "nothing to release" is not worth refusing.
        """
        i = self.index[cmd.arm]
        name = repr(cmd.arm)
        active, pinned = self.active, self.pinned
        if cmd.kind == "retire":
            if not active[i]:
                raise CommandError(f"arm {name} is already retired")
            rest = active.copy()
            rest[i] = False
            if not rest.any():
                raise CommandError(f"cannot retire {name}: it is the last active arm of the run")
            self._check_feasible(rest, self.pin_without(i))
            had = pinned[i] or self._boosted(i)
            self.active[i] = False
            self._clear(i)
            return f"retired {cmd.arm}" + (" (its pin/boost cleared)" if had else "")
        if cmd.kind == "restore":
            if active[i]:
                raise CommandError(f"arm {name} is not retired; there is nothing to restore")
            self.active[i] = True
            return f"restored {cmd.arm}"
        if cmd.kind == "release":
            if not (pinned[i] or self._boosted(i)):
                return f"{cmd.arm} had no pin or boost; nothing to release"
            self._clear(i)
            return f"released {cmd.arm}"
        verb = "pinning" if cmd.kind == "pin" else "boosting"
        if not active[i]:
            raise CommandError(f"arm {name} is retired; restore it before {verb} it")
        if cmd.kind == "boost":
            assert cmd.value is not None
            self.boost[i] = cmd.value
            self.boost_left[i] = cmd.steps
            until = f" for {cmd.steps} steps" if cmd.steps else ""
            return f"boosted {cmd.arm} x{cmd.value:g}{until}"
        # pin
        assert cmd.value is not None
        new_pin = self.pin_without(i)
        others = {self.arms[j]: float(new_pin[j]) for j in np.flatnonzero(active & ~np.isnan(new_pin))}
        total = sum(others.values()) + cmd.value
        if total > 1.0 + PIN_SUM_TOL:
            listed = ", ".join(f"{a}={p:g}" for a, p in sorted(others.items()))
            raise CommandError(f"pins would sum to {total:g} > 1 (other pins: {listed}); "
                               "lower this pin or release another arm first")
        new_pin[i] = cmd.value
        scaled = self._check_feasible(active, new_pin)
        self.pin[i] = cmd.value
        msg = f"pinned {cmd.arm} to {cmd.value:g}"
        if scaled:
            msg += f"; every active arm is pinned and pins sum to {total:.6g}, so they are scaled to sum to 1"
        return msg

    def _boosted(self, i: int) -> bool:
        return bool(self.boost[i] != 1.0) or self.boost_left[i] is not None

    def pin_without(self, i: int) -> FloatArray:
        p = self.pin.copy()
        p[i] = np.nan
        return p

    @staticmethod
    def _check_feasible(active: BoolArray, pin: FloatArray) -> bool:
        """Raise when no arm could get probability; True when pins will be scaled to sum to 1."""
        pinned = ~np.isnan(pin) & active
        if (active & ~pinned).any():
            return False
        total = float(pin[pinned].sum())
        if total <= 0:
            raise CommandError("every active arm would be pinned to 0; no arm could be sampled")
        return abs(total - 1.0) > PIN_SUM_TOL

    def _clear(self, i: int) -> None:
        self.pin[i] = np.nan
        self.boost[i] = 1.0
        self.boost_left[i] = None

    def tick(self) -> list[str]:
        """Count one step off every bounded boost; returns the arms whose boost expired."""
        expired: list[str] = []
        if self.boost_left.count(None) == len(self.boost_left):
            return expired
        self._snap = None
        for i, left in enumerate(self.boost_left):
            if left is None:
                continue
            if left <= 1:
                self.boost[i] = 1.0
                self.boost_left[i] = None
                expired.append(self.arms[i])
            else:
                self.boost_left[i] = left - 1
        return expired

    # -- probabilities -------------------------------------------------------------------------
    def resolve(self, q: FloatArray) -> FloatArray:
        """Turn scheduler probabilities q into the probabilities in force."""
        active = self.active
        pinned = self.pinned & active
        free = active & ~pinned
        p = np.zeros(len(self.arms), dtype=np.float64)
        pins = self.pin[pinned]
        total_pin = float(pins.sum())
        if free.any():
            w = q[free] * self.boost[free]
            s = float(w.sum())
            if not (s > 0 and math.isfinite(s)):
                # The scheduler gives every free arm 0 (e.g. zero weights, underflow): share evenly.
                w = np.ones(int(free.sum()))
                s = float(w.size)
            p[free] = max(0.0, 1.0 - total_pin) * (w / s)
            p[pinned] = pins
        elif total_pin > 0:
            p[pinned] = pins / total_pin
        return p
