"""Schedulers that follow a plan rather than only a signal: staged, cyclical and replay (docs/formulas.md).

`staged` walks ordered stages of arms (easy to hard), `cyclical` alternates a base scheduler with uniform
sampling, `replay` reproduces a past run's probabilities. Registered like those of `schedulers.py` (the
package imports this module). `staged` and `cyclical` wrap a base scheduler that keeps learning from every
step; `learner()` hands it to a `switch`, so its estimates are carried over to and from them.
"""

from __future__ import annotations

import bisect
import collections
import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .checkpoint import float_array, int_value, list_of, mapping, require
from .errors import CommandError, ConfigError
from .params import Param, check_params
from .recent import ArmSummary
from .schedulers import Scheduler, make_scheduler, register_scheduler, scheduler_class, uniform_over
from .stats import BoolArray, FloatArray, StepObservations

# The schedulers `staged` and `cyclical` may wrap: the ones that are not plans themselves.
BASES = ("uniform", "fixed", "dump", "sec", "learning_progress", "balanced")
# A replayed schedule travels in the scheduler's parameters (acks, snapshots): at most this many values.
MAX_SCHEDULE_VALUES = 20_000
MAX_STEPS = 10**9


def _base(name: Any, params: Any, arms: Sequence[str]) -> Scheduler:
    """The base scheduler `name` with `params`, checked against its schema (ConfigError)."""
    if name not in BASES:
        raise ConfigError(f"base must be one of {', '.join(BASES)}, got {name!r}")
    given = mapping(params or {}, "base_params")
    try:
        checked = check_params(name, scheduler_class(name).param_schema, given)
    except CommandError as e:
        raise ConfigError(f"base_params: {e}") from e
    return make_scheduler(name, arms, checked)


def _steps(value: Any, where: str) -> int:
    return int_value(value, where, 0, MAX_STEPS)


class _Wrapper(Scheduler):
    """A scheduler around a base scheduler (`self.base`) that learns from every step."""

    base_name: str
    base_params: dict[str, Any]
    base: Scheduler
    t: int  # steps learned from since the scheduler started

    def _init_base(self) -> None:
        self.base = _base(self.base_name, self.base_params, self.arms)
        self.t = 0

    def learner(self) -> Scheduler:
        return self.base.learner()

    def scores(self) -> FloatArray | None:
        return self.base.scores()

    def warm_start(self, summary: ArmSummary) -> None:
        self.base.warm_start(summary)

    def state_size(self) -> int:
        return self.base.state_size() + 2 * len(self.arms)

    def _base_params(self) -> dict[str, Any]:
        return {"base": self.base_name, "base_params": self.base.params()}

    def _continue_base(self, old: _Wrapper) -> None:
        """Continue from `old` (a `set_params`): its step count, and its base when the base is the same kind
        (with the new base parameters); a base of another kind starts afresh."""
        self.t = old.t
        if old.base.name == self.base.name:
            self.base = old.base.with_params(self.base.params())

    def _changed(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters after `changes`; another `base` without `base_params` gets its defaults."""
        out = {**self.params(), **changes}
        if out["base"] != self.base.name and "base_params" not in changes:
            out["base_params"] = {}
        return out

    def _wrapper_state(self) -> dict[str, Any]:
        return {"t": self.t, "base": self.base.state_dict()}

    def _load_wrapper(self, state: Mapping[str, Any], where: str) -> tuple[int, Scheduler]:
        """The step count and a loaded copy of the base (nothing assigned: the caller checks the rest first)."""
        t = _steps(require(state, "t", where), f"{where}: t")
        saved = mapping(require(state, "base", where), f"{where}: base")
        base = make_scheduler(self.base.name, self.arms, self.base.params())
        base.load_state_dict(saved)
        return t, base


@register_scheduler("staged")
class Staged(_Wrapper):
    """Ordered stages of arms, easy to hard: sample the current stage (uniformly, or by a base scheduler
    restricted to it), keep a `replay` share on the earlier stages, and move on at given steps or when the
    stage's accuracy passes a gate.

    Sources: Curr-ReFT (Deng et al., 2025), SARI (2025), Light-R1 (Wen et al., 2025): staged RL curricula.

    Args:
        stages: lists of arm names, first stage first (default: one stage per arm, in arm order).
        at_steps: the step (counted from the scheduler's start) from which each next stage is in force.
        gate: advance when the stage's accuracy over its last `gate_steps` steps is >= gate.
        gate_steps: steps with the stage's arms observed before the gate may open.
        replay: share of the probability spread uniformly over the earlier stages' arms.
        base, base_params: the scheduler choosing within the stage (uniform by default).
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "stages": Param("json", "lists of arm names, easiest stage first"),
        "at_steps": Param("json", "null, or the step from which each next stage is in force (increasing)"),
        "gate": Param("json", "null, or the accuracy in [0, 1] at which a stage is passed"),
        "gate_steps": Param("int", "steps of the stage observed before the gate may open", low=1, high=10_000),
        "replay": Param("float", "share kept on the earlier stages' arms", low=0.0, high=1.0, high_open=True),
        "base": Param("str", "scheduler choosing within the stage", choices=BASES),
        "base_params": Param("json", "the base scheduler's parameters")}

    def __init__(self, stages: Sequence[Sequence[str]] | None = None, at_steps: Sequence[int] | None = None,
                 gate: float | None = 0.8, gate_steps: int = 5, replay: float = 0.1, base: str = "uniform",
                 base_params: Mapping[str, Any] | None = None) -> None:
        self._stages_arg = stages
        if at_steps is None:
            self.at_steps: list[int] | None = None
        else:
            self.at_steps = [_steps(s, "at_steps") for s in list_of(at_steps, "at_steps")]
            if any(b <= a for a, b in zip(self.at_steps, self.at_steps[1:], strict=False)) or 0 in self.at_steps:
                raise ConfigError(f"at_steps must be increasing steps > 0, got {list(at_steps)!r}")
        if gate is not None and (isinstance(gate, bool) or not isinstance(gate, int | float)
                                 or not 0.0 <= float(gate) <= 1.0):
            raise ConfigError(f"gate must be null or a number in [0, 1], got {gate!r}")
        self.gate = None if gate is None else float(gate)
        self.gate_steps = _steps(gate_steps, "gate_steps")
        if self.gate_steps < 1:
            raise ConfigError("gate_steps must be >= 1")
        self.replay = float(replay)
        if not (math.isfinite(self.replay) and 0.0 <= self.replay < 1.0):
            raise ConfigError(f"replay must be in [0, 1), got {replay!r}")
        self.base_name, self.base_params = base, dict(mapping(base_params or {}, "base_params"))

    def _init_state(self, k: int) -> None:
        given = [[a] for a in self.arms] if self._stages_arg is None else self._stages_arg
        stages = [list_of(s, "stages: a stage") for s in list_of(given, "stages")]
        names = [a for s in stages for a in s]
        unknown = sorted({str(a) for a in names} - set(self.arms))
        if not stages or any(not s for s in stages):
            raise ConfigError("stages must be a non-empty list of non-empty lists of arm names")
        if unknown:
            raise ConfigError(f"stages name unknown arms: {', '.join(unknown)}")
        if len(set(names)) != len(names):
            raise ConfigError("an arm is in more than one stage (or twice in one)")
        if self.at_steps is not None and len(self.at_steps) > len(stages) - 1:
            raise ConfigError(f"at_steps gives {len(self.at_steps)} steps for {len(stages) - 1} stage changes")
        self.stages = [[str(a) for a in s] for s in stages]
        index = {a: j for j, a in enumerate(self.arms)}
        self.stage_of = np.full(k, -1, dtype=np.int64)  # -1: in no stage, never sampled
        for i, s in enumerate(self.stages):
            self.stage_of[[index[a] for a in s]] = i
        self.stage = 0
        self.window: collections.deque[tuple[int, float]] = collections.deque(maxlen=self.gate_steps)
        self._init_base()

    @property
    def last(self) -> int:
        return len(self.stages) - 1

    def update(self, obs: StepObservations) -> None:
        self.base.update(obs)
        self.t += 1
        now = self.stage_of == self.stage
        n = int(obs.n_step[now].sum())
        if n:
            self.window.append((n, float(obs.n_correct[now].sum())))
        target = self.stage
        if self.at_steps is not None:
            target = max(target, bisect.bisect_right(self.at_steps, self.t))
        if target == self.stage and self._gate_open():
            target += 1
        self._enter(min(target, self.last))

    def _gate_open(self) -> bool:
        acc = self.stage_accuracy()
        return self.gate is not None and len(self.window) >= self.gate_steps and acc >= self.gate

    def _enter(self, stage: int) -> None:
        if stage != self.stage:
            self.stage = stage
            self.window.clear()

    def stage_accuracy(self) -> float:
        """The current stage's accuracy over its last `gate_steps` observed steps (NaN: none yet)."""
        n = sum(w[0] for w in self.window)
        return sum(w[1] for w in self.window) / n if n else math.nan

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        mask = self._mask(active)
        now = mask & (self.stage_of == self.stage)
        earlier = mask & (self.stage_of >= 0) & (self.stage_of < self.stage)
        if not now.any():  # the stage's arms are all retired: its share goes to the earlier stages
            return uniform_over(earlier if earlier.any() else mask)
        q = self.base.probabilities(now)
        if earlier.any() and self.replay > 0:
            q = (1.0 - self.replay) * q + self.replay * uniform_over(earlier)
        return q

    def parts(self) -> dict[str, FloatArray]:
        k = len(self.arms)
        out = {**self.base.parts(), "stage": np.full(k, float(self.stage))}
        if self.gate is not None:
            out["stage_accuracy"] = np.full(k, self.stage_accuracy())
        return out

    def params(self) -> dict[str, Any]:
        return {"stages": [list(s) for s in self.stages], "at_steps": self.at_steps, "gate": self.gate,
                "gate_steps": self.gate_steps, "replay": self.replay, **self._base_params()}

    def warm_start(self, summary: ArmSummary) -> None:
        # A switch mid-run: skip the stages the run's recent accuracy already passes.
        super().warm_start(summary)
        if self.gate is None:
            return
        n = np.where(np.isfinite(summary.accuracy), summary.n_recent, 0)
        correct = np.nan_to_num(summary.accuracy) * n
        while self.stage < self.last:
            now = self.stage_of == self.stage
            seen = int(n[now].sum())
            if not seen or float(correct[now].sum()) / seen < self.gate:
                break
            self._enter(self.stage + 1)

    def with_params(self, changes: Mapping[str, Any]) -> Scheduler:
        new = make_scheduler(self.name, self.arms, self._changed(changes))
        assert isinstance(new, Staged)
        new._continue_base(self)
        new.stage = min(self.stage, new.last)
        if new.stages == self.stages:
            new.window.extend(self.window)
        return new

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self._wrapper_state(), "stage": self.stage,
                "window": [[n, c] for n, c in self.window]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        where = "staged state"
        t, base = self._load_wrapper(state, where)
        stage = int_value(require(state, "stage", where), f"{where}: stage", 0, self.last)
        window: collections.deque[tuple[int, float]] = collections.deque(maxlen=self.gate_steps)
        for row in list_of(require(state, "window", where), f"{where}: window"):
            n, c = float_array(row, f"{where}: window entry", 2, low=0.0)
            if not n.is_integer() or c > n:
                raise ConfigError(f"{where}: a window entry is [completions, correct], got {row!r}")
            window.append((int(n), float(c)))
        self.t, self.base, self.stage, self.window = t, base, stage, window


@register_scheduler("cyclical")
class Cyclical(_Wrapper):
    """Alternate a base scheduler (DUMP by default) and uniform sampling in cycles: `curriculum_steps` steps
    of the base's probabilities, then `uniform_steps` of uniform, and again. The base learns from every
    step, the uniform ones too.

    Source: Cyclical Curriculum Learning (Kesgin & Amasyali, IEEE TNNLS 2023), which alternates
    curriculum and plain (vanilla) training.

    Args:
        base, base_params: the curriculum scheduler.
        curriculum_steps: steps of each cycle that follow the base.
        uniform_steps: steps of each cycle that sample uniformly.
        start: the phase the first cycle starts with ("curriculum" or "uniform").
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "base": Param("str", "the curriculum scheduler", choices=BASES),
        "base_params": Param("json", "the base scheduler's parameters"),
        "curriculum_steps": Param("int", "steps of each cycle that follow the base", low=1, high=MAX_STEPS),
        "uniform_steps": Param("int", "steps of each cycle that sample uniformly", low=1, high=MAX_STEPS),
        "start": Param("str", "the phase each cycle starts with", choices=("curriculum", "uniform"))}

    def __init__(self, base: str = "dump", base_params: Mapping[str, Any] | None = None, curriculum_steps: int = 50,
                 uniform_steps: int = 50, start: str = "curriculum") -> None:
        self.base_name, self.base_params = base, dict(mapping(base_params or {}, "base_params"))
        self.curriculum_steps = _steps(curriculum_steps, "curriculum_steps")
        self.uniform_steps = _steps(uniform_steps, "uniform_steps")
        if min(self.curriculum_steps, self.uniform_steps) < 1:
            raise ConfigError("curriculum_steps and uniform_steps must be >= 1")
        if start not in ("curriculum", "uniform"):
            raise ConfigError(f"start must be 'curriculum' or 'uniform', got {start!r}")
        self.start = start

    def _init_state(self, k: int) -> None:
        self._init_base()

    @property
    def in_curriculum(self) -> bool:
        """Whether the next step (the `t`-th since the start, from 0) follows the base."""
        first = self.curriculum_steps if self.start == "curriculum" else self.uniform_steps
        in_first = self.t % (self.curriculum_steps + self.uniform_steps) < first
        return in_first == (self.start == "curriculum")

    def update(self, obs: StepObservations) -> None:
        self.base.update(obs)
        self.t += 1

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        mask = self._mask(active)
        return self.base.probabilities(mask) if self.in_curriculum else uniform_over(mask)

    def parts(self) -> dict[str, FloatArray]:
        return {**self.base.parts(), "phase": np.full(len(self.arms), 1.0 if self.in_curriculum else 0.0)}

    def params(self) -> dict[str, Any]:
        return {**self._base_params(), "curriculum_steps": self.curriculum_steps,
                "uniform_steps": self.uniform_steps, "start": self.start}

    def with_params(self, changes: Mapping[str, Any]) -> Scheduler:
        new = make_scheduler(self.name, self.arms, self._changed(changes))
        assert isinstance(new, Cyclical)
        new._continue_base(self)
        return new

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), **self._wrapper_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.t, self.base = self._load_wrapper(state, "cyclical state")


def _schedule_table(schedule: Any, limit: int = MAX_SCHEDULE_VALUES) -> tuple[list[int], list[str], FloatArray]:
    """A schedule as (steps, arms, probabilities steps x arms); see `Replay` for the accepted forms."""
    if isinstance(schedule, Mapping) and set(schedule) == {"steps", "arms", "probabilities"}:
        steps = [_steps(s, "schedule: steps") for s in list_of(schedule["steps"], "schedule: steps")]
        arms = [str(a) for a in list_of(schedule["arms"], "schedule: arms")]
        rows = list_of(schedule["probabilities"], "schedule: probabilities")
        if len(rows) != len(steps):
            raise ConfigError(f"schedule: {len(steps)} steps but {len(rows)} rows of probabilities")
        table = np.zeros((len(steps), len(arms)))
        for i, row in enumerate(rows):
            table[i] = float_array(row, f"schedule: probabilities at step {steps[i]}", len(arms), low=0.0)
    else:
        cells: dict[tuple[int, str], float] = {}
        if isinstance(schedule, Mapping):  # step -> {arm: probability}
            items = [(s, a, p) for s, row in schedule.items() for a, p in mapping(row, f"schedule[{s!r}]").items()]
        else:  # rows: {"step", "arm", "probability"} or (step, arm, probability)
            items = [(r["step"], r["arm"], r["probability"]) if isinstance(r, Mapping) else tuple(list_of(r, "row"))
                     for r in list_of(schedule, "schedule")]
        for item in items:
            if len(item) != 3:
                raise ConfigError(f"schedule: a row is (step, arm, probability), got {item!r}")
            step, arm, p = item
            key = (_steps(int(step) if isinstance(step, str) and step.isdigit() else step, "schedule: step"), str(arm))
            if key in cells:
                raise ConfigError(f"schedule: step {key[0]} gives arm {key[1]!r} twice")
            cells[key] = float(float_array([p], f"schedule: probability of {key[1]!r} at step {key[0]}", 1, low=0.0)[0])
        steps = sorted({s for s, _ in cells})
        arms = list(dict.fromkeys(a for _, a in cells))
        table = np.zeros((len(steps), len(arms)))
        row_of, col_of = {s: i for i, s in enumerate(steps)}, {a: j for j, a in enumerate(arms)}
        for (s, a), p in cells.items():
            table[row_of[s], col_of[a]] = p
    if steps != sorted(set(steps)):
        raise ConfigError("schedule: steps must be increasing, each once")
    if table.size > limit:
        raise ConfigError(f"schedule: {len(steps)} steps x {len(arms)} arms is more than {limit:,} "
                          "values (schedule_from_csv(..., every=k) keeps every k-th step)")
    bad = [steps[i] for i in np.flatnonzero(table.sum(axis=1) <= 0)] if len(arms) else steps
    if bad:
        raise ConfigError(f"schedule: every arm has probability 0 at step {bad[0]}")
    return steps, arms, table


def schedule_from_export(lines: Iterable[str], where: str = "the export", every: int = 1) -> dict[str, Any]:
    """A `replay` schedule from the lines of a Steerboard arms export (`/api/runs/{run}/export.csv?what=arms`:
    columns step, arm, probability; the others are ignored), keeping every `every`-th step and the last one."""
    reader = csv.DictReader(lines)
    missing = {"step", "arm", "probability"} - set(reader.fieldnames or ())
    if missing:
        raise ConfigError(f"{where}: not an arms export (no column {', '.join(sorted(missing))})")
    rows = []
    for r in reader:
        if r["probability"] in ("", None):
            continue
        arm = r["arm"]
        # The export writes a leading ' before a name a spreadsheet would run as a formula.
        if arm.startswith("'") and arm[1:2] in ("=", "+", "-", "@", "\t", "\n"):
            arm = arm[1:]
        rows.append((int(r["step"]), arm, float(r["probability"])))
    if not rows:
        raise ConfigError(f"{where}: no (step, arm, probability) rows")
    steps, arms, table = _schedule_table(rows, limit=MAX_STEPS)
    keep = sorted({*range(0, len(steps), max(1, int(every))), len(steps) - 1})
    return {"steps": [steps[i] for i in keep], "arms": arms, "probabilities": table[keep].tolist()}


def schedule_from_csv(path: str | Path, every: int = 1) -> dict[str, Any]:
    """A `replay` schedule from an arms export saved as a file (`schedule_from_export`)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return schedule_from_export(f, str(path), every)


@register_scheduler("replay")
class Replay(Scheduler):
    """Reproduce a past run's probabilities (ablations): at the end of step s, q is the schedule's row of
    the last listed step <= s (its first row before that), renormalised over the active arms.

    The row of step s is what a Steerboard export lists at step s: the probabilities the original run put in
    force at the end of step s. Steps past the schedule's end hold its last row; arms the schedule does not
    name get 0 (a schedule naming none of the run's arms is refused). Without a schedule, q is uniform.

    Args:
        schedule: {"steps", "arms", "probabilities"} (what `schedule_from_csv` returns and `params()` shows),
            a list of (step, arm, probability) rows or {"step", "arm", "probability"} dicts, or
            step -> {arm: probability}.
        start_step: the schedule's step of the first step this scheduler learns from (a switch applied at the
            end of step s: s + 1, so that the row of step s is in force at once).
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "schedule": Param("json", "the probabilities to replay (schedule_from_csv of an arms export)"),
        "start_step": Param("int", "the schedule's step of the first step it learns from", low=0, high=MAX_STEPS)}

    def __init__(self, schedule: Any = None, start_step: int = 0) -> None:
        self.table_of: tuple[list[int], list[str], FloatArray] | None = (
            None if schedule is None else _schedule_table(schedule))
        self.start_step = _steps(start_step, "start_step")

    def _init_state(self, k: int) -> None:
        self.t = 0
        if self.table_of is None:
            self.steps: list[int] = [0]
            self.table = np.ones((1, k))
            return
        self.steps, names, table = self.table_of
        col = {a: j for j, a in enumerate(names)}
        if not any(a in col for a in self.arms):
            raise ConfigError(f"the replay schedule names none of this run's arms ({', '.join(self.arms[:10])}); "
                              f"it names {', '.join(names[:10])}")
        self.table = np.zeros((len(self.steps), k))
        for j, a in enumerate(self.arms):
            if a in col:
                self.table[:, j] = table[:, col[a]]

    def row(self) -> int:
        """The schedule row in force now: the last listed step <= start_step + t - 1, else the first."""
        return max(0, bisect.bisect_right(self.steps, self.start_step + self.t - 1) - 1)

    def update(self, obs: StepObservations) -> None:
        self.t += 1

    def scores(self) -> FloatArray:
        row: FloatArray = self.table[self.row()]
        return row.copy()

    def parts(self) -> dict[str, FloatArray]:
        return {"replay_step": np.full(len(self.arms), float(self.steps[self.row()]))}

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        mask = self._mask(active)
        w: FloatArray = np.where(mask, self.table[self.row()], 0.0)
        total = float(w.sum())
        return w / total if total > 0 else uniform_over(mask)

    def params(self) -> dict[str, Any]:
        schedule = None if self.table_of is None else {
            "steps": list(self.table_of[0]), "arms": list(self.table_of[1]),
            "probabilities": self.table_of[2].tolist()}
        return {"schedule": schedule, "start_step": self.start_step}

    def state_size(self) -> int:
        return int(self.table.size) + 2

    def with_params(self, changes: Mapping[str, Any]) -> Scheduler:
        new = make_scheduler(self.name, self.arms, {**self.params(), **changes})
        assert isinstance(new, Replay)
        new.t = self.t
        return new

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "t": self.t}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.t = _steps(require(state, "t", "replay state"), "replay state: t")
