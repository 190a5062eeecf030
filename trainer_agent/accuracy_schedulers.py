"""Schedulers that learn from each arm's accuracy: learning progress and balanced (docs/formulas.md).

Registered like those of `schedulers.py` (the package imports this module, so the names are known
wherever `trainer_agent` is imported).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from .checkpoint import float_array, require
from .errors import ConfigError
from .params import TEMPERATURE, UNIT_RATE, Param
from .params import positive as _positive
from .params import unit as _unit
from .recent import ArmSummary
from .schedulers import Scheduler, register_scheduler, softmax, uniform_over
from .stats import BoolArray, FloatArray, StepObservations

# Bound of a saved accuracy EMA: 1, plus room for rounding in its updates.
_ACCURACY_MAX = 1.0 + 1e-9


@register_scheduler("learning_progress")
class LearningProgress(Scheduler):
    """Learning progress: |fast EMA - slow EMA| of each arm's accuracy, softmax, ε-uniform mix.

    f <- β·acc + (1-β)·f; s <- β·f + (1-β)·s (for arms seen this step; both start at 0);
    LP_j = |f_j - s_j|; p = (1-ε)·softmax(LP/τ) + ε/K_active.
    Sources: Teacher-Student Curriculum Learning (Matiisen et al., 2017); Syllabus
    `syllabus/curricula/learning_progress.py` (Sullivan et al.).

    Args:
        beta: EMA rate β.
        temperature: softmax temperature τ.
        eps: uniform mixing weight ε.
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "beta": UNIT_RATE, "temperature": TEMPERATURE,
        "eps": Param("float", "uniform mixing weight ε", low=0.0, high=1.0)}
    signal = "accuracy"

    def __init__(self, beta: float = 0.1, temperature: float = 0.05, eps: float = 0.05) -> None:
        self.beta = _unit("beta", beta)
        self.temperature = _positive("temperature", temperature)
        self.eps = _unit("eps", eps, open_low=False)

    def _init_state(self, k: int) -> None:
        self.fast = np.zeros(k, dtype=np.float64)
        self.slow = np.zeros(k, dtype=np.float64)

    def update(self, obs: StepObservations) -> None:
        seen = obs.seen
        accuracy = obs.n_correct[seen] / obs.n_step[seen]
        b = self.beta
        self.fast[seen] = b * accuracy + (1.0 - b) * self.fast[seen]
        self.slow[seen] = b * self.fast[seen] + (1.0 - b) * self.slow[seen]

    def scores(self) -> FloatArray:
        return np.abs(self.fast - self.slow)

    def parts(self) -> dict[str, FloatArray]:
        return {"fast": self.fast.copy(), "slow": self.slow.copy()}

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        mask = self._mask(active)
        return (1.0 - self.eps) * softmax(self.scores(), mask, self.temperature) + self.eps * uniform_over(mask)

    def params(self) -> dict[str, Any]:
        return {"beta": self.beta, "temperature": self.temperature, "eps": self.eps}

    def warm_start(self, summary: ArmSummary) -> None:
        # Both EMAs at the recent accuracy: no progress until the arm's accuracy moves.
        self.fast = np.nan_to_num(summary.accuracy, nan=0.0)
        self.slow = self.fast.copy()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fast": self.fast.tolist(), "slow": self.slow.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        where, k = "learning_progress state", len(self.arms)
        # EMAs of accuracies that start at 0 stay in [0, 1] (give or take rounding).
        fast = float_array(require(state, "fast", where), f"{where}: fast", k, low=0.0, high=_ACCURACY_MAX)
        slow = float_array(require(state, "slow", where), f"{where}: slow", k, low=0.0, high=_ACCURACY_MAX)
        self.fast, self.slow = fast, slow


@register_scheduler("balanced")
class Balanced(Scheduler):
    """Keep arms near a 50% pass rate: p_j ∝ acc_j·(1 - acc_j) + ε, acc_j an EMA of arm accuracy.

    The learnability score p(1-p) is the variance of a Bernoulli reward, which is what makes a GRPO
    group informative (Online Difficulty Filtering, Bae et al., 2025). Accuracy EMAs start at `init`
    (0.5: an arm never seen is assumed maximally learnable).

    Args:
        ema: EMA rate of the accuracy estimate.
        eps: floor added to every active arm's weight.
        init: starting accuracy estimate.
    """

    param_schema: ClassVar[Mapping[str, Param]] = {
        "ema": UNIT_RATE, "eps": Param("float", "floor added to every active arm's weight", low=0.0),
        "init": Param("float", "starting accuracy estimate", low=0.0, high=1.0)}
    signal = "accuracy"

    def __init__(self, ema: float = 0.1, eps: float = 0.01, init: float = 0.5) -> None:
        self.ema = _unit("ema", ema)
        self.eps = float(eps)
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ConfigError(f"eps must be >= 0, got {eps!r}")
        self.init = _unit("init", init, open_low=False)

    def _init_state(self, k: int) -> None:
        self.accuracy_ema = np.full(k, self.init, dtype=np.float64)

    def update(self, obs: StepObservations) -> None:
        seen = obs.seen
        accuracy = obs.n_correct[seen] / obs.n_step[seen]
        self.accuracy_ema[seen] = self.ema * accuracy + (1.0 - self.ema) * self.accuracy_ema[seen]

    def scores(self) -> FloatArray:
        return self.accuracy_ema * (1.0 - self.accuracy_ema) + self.eps

    def parts(self) -> dict[str, FloatArray]:
        # "acc_ema" is the part's stored name in existing runs; it stays.
        return {"acc_ema": self.accuracy_ema.copy()}

    def probabilities(self, active: BoolArray | None = None) -> FloatArray:
        mask = self._mask(active)
        w = np.where(mask, self.scores(), 0.0)
        total = w.sum()
        return w / total if total > 0 else uniform_over(mask)

    def params(self) -> dict[str, Any]:
        return {"ema": self.ema, "eps": self.eps, "init": self.init}

    def estimate(self, summary: ArmSummary) -> ArmSummary:
        return replace(summary, accuracy=np.where(summary.n_total > 0, self.accuracy_ema, np.nan))

    def warm_start(self, summary: ArmSummary) -> None:
        self.accuracy_ema = np.where(np.isfinite(summary.accuracy), summary.accuracy, self.init)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "accuracy_ema": self.accuracy_ema.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        # Outside [0, 1] (give or take rounding) the learnability a·(1 - a) would turn negative.
        # Checkpoints written before 0.2 call the EMA "acc".
        key = "acc" if "acc" in state and "accuracy_ema" not in state else "accuracy_ema"
        self.accuracy_ema = float_array(require(state, key, "balanced state"), f"balanced state: {key}",
                                        len(self.arms), low=0.0, high=_ACCURACY_MAX)
