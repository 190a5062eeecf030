"""Curriculum schedulers: per-arm statistics in, sampling probabilities over active arms out.

Each scheduler is a small class with `update(obs)` and `probabilities(active)`, registered by name.
They are deterministic functions of the observation sequence. The formulas and defaults follow
docs/formulas.md and the sources cited on each class; every quirk of a source is an explicit option.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar, TypeVar

import numpy as np

from .checkpoint import check_arms, float_array, int_array, mapping, require
from .errors import ConfigError
from .params import TEMPERATURE, Param
from .params import positive as _positive
from .params import unit as _unit
from .recent import ArmSummary
from .stats import BoolArray, FloatArray, StepObservations

log = logging.getLogger("trainer_agent")

_REGISTRY: dict[str, type[Scheduler]] = {}

S = TypeVar("S", bound="type[Scheduler]")


def register_scheduler(name: str) -> Callable[[S], S]:
    """Class decorator registering a `Scheduler` subclass under `name`.

    Example:
        >>> import numpy as np
        >>> @register_scheduler("last_adv")
        ... class LastAdv(Scheduler):
        ...     # p proportional to last step's mean |A| + 0.01; unseen arms keep weight 1
        ...     def _init_state(self, k): self.w = np.ones(k)
        ...     def update(self, obs): self.w[obs.seen] = obs.mean_abs_adv[obs.seen] + 0.01
        ...     def probabilities(self, active=None):
        ...         w = np.where(self._mask(active), self.w, 0.0)
        ...         return w / w.sum()
        ...     # what it learned, for checkpoints (plain lists, not arrays)
        ...     def state_dict(self): return {**super().state_dict(), "w": self.w.tolist()}
        ...     def load_state_dict(self, state):
        ...         super().load_state_dict(state)
        ...         self.w = np.array(state["w"], dtype=float)
        >>> "last_adv" in available_schedulers()
        True
    """

    def deco(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
            raise ConfigError(f"{cls!r} is not a Scheduler subclass")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


_WARNED: set[type[Scheduler]] = set()


def available_schedulers() -> list[str]:
    return sorted(_REGISTRY)


def scheduler_class(name: str) -> type[Scheduler]:
    """The class registered as `name` (ConfigError naming the registered ones when there is none)."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(f"unknown scheduler {name!r}; available: {', '.join(available_schedulers())}")
    return cls


def make_scheduler(name: str, arms: Sequence[str], params: Mapping[str, Any] | None = None) -> Scheduler:
    """Build the scheduler registered as `name` for `arms`, with keyword `params`."""
    cls = scheduler_class(name)
    try:
        sched = cls(**dict(params or {}))
    except TypeError as e:
        raise ConfigError(f"bad parameters for scheduler {name!r}: {e}") from e
    sched.bind(arms)
    return sched


def softmax(x: FloatArray, mask: BoolArray, temperature: float) -> FloatArray:
    """Softmax of x/temperature over the masked entries; exactly 0 elsewhere."""
    if x.dtype == np.float64 and x.size and mask.all():  # every arm active (the usual case): the same numbers
        z = x / temperature
        z = z - z.max()
        e = np.exp(z)
        p: FloatArray = e / e.sum()
        return p
    out = np.zeros_like(x, dtype=np.float64)
    if not mask.any():
        return out
    z = x[mask] / temperature
    z = z - z.max()
    e = np.exp(z)
    out[mask] = e / e.sum()
    return out


def uniform_over(mask: BoolArray) -> FloatArray:
    out = np.zeros(mask.shape, dtype=np.float64)
    n = int(mask.sum())
    if n:
        out[mask] = 1.0 / n
    return out


class Scheduler(ABC):
    """Base class. Subclasses keep per-arm state in arrays indexed like `self.arms`.

    Args of `probabilities`: `active`, a boolean mask over arms; inactive (retired) arms get exactly 0.
    A scheduler that learns implements `state_dict`/`load_state_dict` so a resumed run continues
    from what it had learned rather than from scratch.
    """

    name: ClassVar[str] = "scheduler"
    # True for schedulers that learn nothing (their state is their parameters).
    stateless: ClassVar[bool] = False
    # Every parameter `params()` returns, with its type and range (trainer_agent/params.py).
    param_schema: ClassVar[Mapping[str, Param]] = {}
    # What it learns from ("abs_adv", "accuracy"), or None: a switch between two schedulers of one
    # signal carries the learned estimate over (`estimate`), any other starts from recent statistics.
    signal: ClassVar[str | None] = None
    arms: tuple[str, ...] = ()

    def bind(self, arms: Sequence[str]) -> None:
        """Attach the scheduler to an arm list (called once by the agent)."""
        if self.arms and tuple(arms) != self.arms:
            raise ConfigError(f"scheduler {self.name!r} is already bound to other arms")
        self.arms = tuple(arms)
        self._init_state(len(self.arms))

    def _init_state(self, k: int) -> None:  # noqa: B027 - optional hook
        """Allocate per-arm state for k arms."""

    @abstractmethod
    def update(self, obs: StepObservations) -> None:
        """Learn from one step's observations."""

    @abstractmethod
    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        """Sampling probabilities over all arms (0 for inactive ones), summing to 1."""

    def scores(self) -> FloatArray | None:
        """The per-arm score the probabilities are derived from, if the scheduler has one."""
        return None

    def parts(self) -> dict[str, FloatArray]:
        """Named components of the score (e.g. DUMP's exploit and explore terms)."""
        return {}

    def params(self) -> dict[str, Any]:
        """The scheduler's parameters, as shown in the UI and run comparisons."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What the scheduler has learned, as plain JSON-able Python (lists, floats, ints, str).

        The base class saves the name, arms and parameters; a scheduler that learns extends the dict
        with its statistics and overrides `load_state_dict` to read them back (see `Dump`).
        """
        cls = type(self)
        if not self.stateless and cls.load_state_dict is Scheduler.load_state_dict and cls not in _WARNED:
            _WARNED.add(cls)
            log.warning("scheduler %r does not implement state_dict/load_state_dict: what it has learned is "
                        "not saved and restarts from scratch when a run resumes", self.name)
        return {"name": self.name, "arms": list(self.arms), "params": self.params()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state`, a `state_dict()` of a scheduler of the same name over the same arms.

        Raises `ConfigError` (and changes nothing) when the state does not fit. Parameters come from
        the constructor: a parameter that differs from the saved one is allowed (a deliberate change
        on resume) and logged.
        """
        where = f"scheduler state ({self.name})"
        name = require(state, "name", where)
        if name != self.name:
            raise ConfigError(f"the scheduler state was saved by scheduler {name!r}, not {self.name!r}")
        check_arms(require(state, "arms", where), self.arms, "the scheduler state")
        saved = mapping(state.get("params", {}), f"{where}: params")
        now = self.params()
        changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if changed:
            log.warning("scheduler %r resumes with other parameters than it was saved with: %s", self.name,
                        ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in changed))

    def with_params(self, changes: Mapping[str, Any]) -> Scheduler:
        """A scheduler of this kind with `changes` made to its parameters, continuing from this one's state
        (ConfigError when the constructor refuses them)."""
        new = make_scheduler(self.name, self.arms, {**self.params(), **changes})
        new.load_state_dict({**self.state_dict(), "params": new.params()})
        return new

    def state_size(self) -> int:
        """About how many numbers `state_dict()` holds (a snapshot too large to stream is not sent)."""
        return 4 * len(self.arms)

    def estimate(self, summary: ArmSummary) -> ArmSummary:
        """`summary` with this scheduler's learned per-arm estimate of its `signal` in place (NaN where none)."""
        return summary

    def learner(self) -> Scheduler:
        """The scheduler whose `signal` and `estimate` a `switch` carries over: itself, or the base of a
        scheduler that wraps one (`staged`, `cyclical`)."""
        return self

    def warm_start(self, summary: ArmSummary) -> None:  # noqa: B027 - optional hook
        """Start from a run's per-arm statistics (a `switch` to this scheduler mid-run)."""

    def _mask(self, active: BoolArray | None) -> BoolArray:
        if active is None:
            return np.ones(len(self.arms), dtype=np.bool_)
        return active


@register_scheduler("uniform")
class Uniform(Scheduler):
    """p = 1/K over active arms. Learns nothing: its state is its name and arms."""

    stateless = True

    def update(self, obs: StepObservations) -> None:
        return None

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        return uniform_over(self._mask(active))


@register_scheduler("fixed")
class Fixed(Scheduler):
    """A static mixture, p ∝ user weights (as OpenRLHF's `prompt_probs`).

    Learns nothing: the weights are a parameter, so a resumed run uses the weights it is built with.

    Args:
        weights: arm -> non-negative weight (missing arms get 0), or a list in arm order.
    """

    stateless = True
    param_schema: ClassVar[Mapping[str, Param]] = {
        "weights": Param("json", "arm -> weight >= 0 (missing arms 0), or a list in arm order")}

    def __init__(self, weights: Mapping[str, float] | Sequence[float] | None = None) -> None:
        self._weights_arg = weights

    def _init_state(self, k: int) -> None:
        w = self._weights_arg
        if w is None:
            arr = np.ones(k)
        elif isinstance(w, Mapping):
            unknown = set(w) - set(self.arms)
            if unknown:
                raise ConfigError(f"fixed weights name unknown arms: {sorted(unknown)}")
            arr = np.array([float(w.get(a, 0.0)) for a in self.arms])
        else:
            arr = np.asarray(list(w), dtype=np.float64)
            if arr.shape != (k,):
                raise ConfigError(f"fixed weights: expected {k} weights, got {arr.size}")
        if not np.all(np.isfinite(arr)) or (arr < 0).any() or arr.sum() <= 0:
            raise ConfigError("fixed weights must be finite, non-negative and not all zero")
        self.weights: FloatArray = arr

    def update(self, obs: StepObservations) -> None:
        return None

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        mask = self._mask(active)
        w = np.where(mask, self.weights, 0.0)
        total = w.sum()
        # Every remaining arm has weight 0: fall back to uniform rather than divide by zero.
        return w / total if total > 0 else uniform_over(mask)

    def scores(self) -> FloatArray:
        return self.weights

    def params(self) -> dict[str, Any]:
        return {"weights": dict(zip(self.arms, self.weights.tolist(), strict=True))}


@register_scheduler("dump")
class Dump(Scheduler):
    """DUMP: UCB over the mean |advantage| of each arm's recent completions, then softmax.

    mu_j = mean of the last `window` |A| of arm j (0 if none); n_j = all-time completions of j;
    N = max(1, Σ n_j); UCB_j = mu_j + c·sqrt(2·ln(N+1)/(n_j+1)); p = softmax(UCB/τ).
    Source: "DUMP: Automated Distribution-Level Curriculum Learning for RL-based LLM Post-training"
    (Wang et al., 2025), code `verl/utils/curriculum_learning.py`. Never-sampled arms get the largest
    bonus and dominate early; that is the source's behaviour.

    Args:
        window: completions kept per arm (FIFO).
        c: exploration coefficient.
        temperature: softmax temperature τ.
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "window": Param("int", "|A| values kept per arm (FIFO)", low=1, high=100_000),
        "c": Param("float", "exploration coefficient", low=0.0), "temperature": TEMPERATURE}
    signal = "abs_adv"

    def __init__(self, window: int = 300, c: float = 1.0, temperature: float = 0.1) -> None:
        if int(window) < 1:
            raise ConfigError(f"window must be >= 1, got {window!r}")
        self.window = int(window)
        self.c = float(c)
        if not (math.isfinite(self.c) and self.c >= 0):
            raise ConfigError(f"c must be >= 0, got {c!r}")
        self.temperature = _positive("temperature", temperature)

    def _init_state(self, k: int) -> None:
        self.ring = np.zeros((k, self.window), dtype=np.float64)
        self.head = np.zeros(k, dtype=np.int64)  # next slot to write per arm
        self.fill = np.zeros(k, dtype=np.int64)  # values in the window per arm
        self.n = np.zeros(k, dtype=np.int64)
        self._cache: tuple[FloatArray, FloatArray] | None = None

    def update(self, obs: StepObservations) -> None:
        n_step, offsets, w = obs.n_step, obs.offsets, self.window
        if not n_step.any():
            return
        arm_k = np.arange(len(n_step)).repeat(n_step)
        rank_k = np.arange(arm_k.size) - offsets[arm_k]
        values = obs.abs_adv
        if n_step.max() > w:
            # Only the last `window` values of an arm this step can survive the FIFO; dropping the rest
            # first keeps the scatter below free of duplicate targets.
            keep = rank_k >= (n_step[arm_k] - w)
            arm_k, rank_k, values = arm_k[keep], rank_k[keep], values[keep]
        slot = (self.head[arm_k] + rank_k) % w
        self.ring[arm_k, slot] = values
        self.head = (self.head + n_step) % w
        self.fill = np.minimum(self.fill + n_step, w)
        self.n += n_step
        self._cache = None

    def _parts(self) -> tuple[FloatArray, FloatArray]:
        if self._cache is not None:
            return self._cache
        # A partly filled ring has zeros in its unused slots, so the row sum is the window's sum (0 for
        # an arm with nothing yet, divided by 1).
        mu = self.ring.sum(axis=1) / np.maximum(self.fill, 1)
        total = max(1, int(self.n.sum()))
        bonus = self.c * np.sqrt(2.0 * math.log(total + 1) / (self.n + 1.0))
        self._cache = (mu, bonus)
        return mu, bonus

    def scores(self) -> FloatArray:
        mu, bonus = self._parts()
        return mu + bonus

    def parts(self) -> dict[str, FloatArray]:
        mu, bonus = self._parts()
        return {"mu": mu.copy(), "bonus": bonus.copy()}

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        return softmax(self.scores(), self._mask(active), self.temperature)

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "c": self.c, "temperature": self.temperature}

    def state_size(self) -> int:
        return int(self.fill.sum()) + 2 * len(self.arms)

    def estimate(self, summary: ArmSummary) -> ArmSummary:
        return replace(summary, abs_adv=np.where(self.fill > 0, self._parts()[0], np.nan))

    def warm_start(self, summary: ArmSummary) -> None:
        # One value per arm with an estimate (its window's mean is that estimate); n from the run.
        has = np.isfinite(summary.abs_adv)
        self.ring[has, 0] = summary.abs_adv[has]
        self.fill[has], self.head[has] = 1, 1 % self.window
        self.n = np.maximum(summary.n_total, self.fill)
        self._cache = None

    def with_params(self, changes: Mapping[str, Any]) -> Scheduler:
        new = make_scheduler(self.name, self.arms, {**self.params(), **changes})
        if not isinstance(new, Dump) or new.window == self.window:
            return super().with_params(changes)
        # Another window: each arm keeps its newest min(values, window) values, in FIFO order.
        for j, f in enumerate(self.fill.tolist()):
            row = self.ring[j, :f] if f < self.window else np.roll(self.ring[j], -int(self.head[j]))
            keep = row[-new.window:]
            new.ring[j, :keep.size] = keep
            new.fill[j], new.head[j] = keep.size, keep.size % new.window
        new.n = self.n.copy()
        return new

    def state_dict(self) -> dict[str, Any]:
        # Each arm's window as stored (ring slot order, not FIFO order) and where the next value
        # goes: loading it back gives the same array, so mu sums in the same order, to the bit.
        return {
            **super().state_dict(),
            "windows": [self.ring[j, :f].tolist() for j, f in enumerate(self.fill.tolist())],
            "head": self.head.tolist(),
            "n": self.n.tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        k, w, where = len(self.arms), self.window, "dump state"
        saved_window = mapping(state.get("params", {}), f"{where}: params").get("window", w)
        if saved_window != w:
            raise ConfigError(f"the dump state keeps windows of {saved_window!r} values; this scheduler's window "
                              f"is {w} (build it with window={saved_window!r} to resume)")
        windows = require(state, "windows", where)
        head = int_array(require(state, "head", where), f"{where}: head", k)
        n = int_array(require(state, "n", where), f"{where}: n", k)
        ring = np.zeros((k, w), dtype=np.float64)
        fill = np.zeros(k, dtype=np.int64)
        rows = windows if isinstance(windows, list | tuple) and len(windows) == k else None
        if rows is None:
            raise ConfigError(f"{where}: windows must be a list of {k} lists")
        for j, row in enumerate(rows):
            values = float_array(row, f"{where}: window of {self.arms[j]!r}", None, low=0.0)
            f = values.size
            # A window fills from slot 0 and wraps only once full, so a partial one ends at head.
            if f > w or head[j] >= w or (f < w and head[j] != f) or n[j] < f:
                raise ConfigError(f"{where}: the window of {self.arms[j]!r} is inconsistent "
                                  f"({f} values, head {head[j]}, {n[j]} completions, window {w})")
            ring[j, :f] = values
            fill[j] = f
        self.ring, self.head, self.fill, self.n = ring, head, fill, n
        self._cache = None


@register_scheduler("sec")
class Sec(Scheduler):
    """SEC: a TD(0) bandit on each arm's mean |advantage|, softmax policy.

    r_t(j) = mean |A| over arm j's completions this step; Q_j <- α·r_t(j) + (1-α)·Q_j for arms seen
    this step (with `decay_absent`, also arms not seen, with r = 0); Q starts at 0; p = softmax(Q/τ).
    Source: "Self-Evolving Curriculum for LLM Reasoning" (Chen et al., 2025), Countdown settings.

    Args:
        alpha: TD learning rate α.
        temperature: softmax temperature τ.
        decay_absent: also move arms not sampled this step towards 0.
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "alpha": Param("float", "TD learning rate α", low=0.0, high=1.0, low_open=True), "temperature": TEMPERATURE,
        "decay_absent": Param("bool", "also move arms not sampled this step towards 0")}
    signal = "abs_adv"

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, decay_absent: bool = False) -> None:
        self.alpha = _unit("alpha", alpha)
        self.temperature = _positive("temperature", temperature)
        self.decay_absent = bool(decay_absent)

    def _init_state(self, k: int) -> None:
        self.q = np.zeros(k, dtype=np.float64)

    def update(self, obs: StepObservations) -> None:
        seen = obs.seen
        r = np.zeros_like(self.q)
        r[seen] = obs.sum_abs_adv[seen] / obs.n_step[seen]
        upd = np.ones_like(seen) if self.decay_absent else seen
        self.q[upd] = self.alpha * r[upd] + (1.0 - self.alpha) * self.q[upd]

    def scores(self) -> FloatArray:
        return self.q

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        return softmax(self.q, self._mask(active), self.temperature)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "temperature": self.temperature, "decay_absent": self.decay_absent}

    def estimate(self, summary: ArmSummary) -> ArmSummary:
        return replace(summary, abs_adv=np.where(summary.n_total > 0, self.q, np.nan))

    def warm_start(self, summary: ArmSummary) -> None:
        self.q = np.nan_to_num(summary.abs_adv, nan=0.0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "q": self.q.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.q = float_array(require(state, "q", "sec state"), "sec state: q", len(self.arms))
