"""The run's recent per-arm statistics, which the agent keeps for scheduler switches (docs/formulas.md).

A `switch` to a scheduler that learns from another signal than the one in force starts it from these:
per arm, the completions, accuracy and mean |A| pooled over the last `window` steps that observed
anything. Keeping them costs one append per step (the step's own arrays, never copied).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import float_array, int_array, list_of, require
from .errors import ConfigError
from .stats import FloatArray, IntArray, StepObservations

RECENT_STEPS = 20


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """Per arm: all-time completions, and recent completions, accuracy and mean |A| (NaN: none recent)."""

    n_total: IntArray
    n_recent: IntArray
    accuracy: FloatArray
    abs_adv: FloatArray


class RecentStats:
    """The last `window` steps with observations: (n_step, n_correct, sum_abs_adv) per arm."""

    def __init__(self, k: int, window: int = RECENT_STEPS) -> None:
        self.k = k
        self.steps: collections.deque[tuple[IntArray, FloatArray, FloatArray]] = collections.deque(maxlen=window)
        self.n_total: IntArray = np.zeros(k, dtype=np.int64)

    def add(self, obs: StepObservations) -> None:
        self.n_total = obs.n_total
        if obs.abs_adv.size:  # the step observed something (an attribute read, not a numpy call)
            self.steps.append((obs.n_step, obs.n_correct, obs.sum_abs_adv))

    def summary(self) -> ArmSummary:
        n = np.zeros(self.k, dtype=np.int64)
        correct = np.zeros(self.k)
        abs_adv = np.zeros(self.k)
        for n_step, n_correct, sum_abs_adv in self.steps:
            n += n_step
            correct += n_correct
            abs_adv += sum_abs_adv
        has = n > 0
        accuracy = np.full(self.k, np.nan)
        mean_abs = np.full(self.k, np.nan)
        accuracy[has] = correct[has] / n[has]
        mean_abs[has] = abs_adv[has] / n[has]
        return ArmSummary(self.n_total.copy(), n, accuracy, mean_abs)

    def state_dict(self) -> dict[str, Any]:
        return {"n_total": self.n_total.tolist(),
                "steps": [[a.tolist(), b.tolist(), c.tolist()] for a, b, c in self.steps]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        where, k = "recent statistics", self.k
        n_total = int_array(require(state, "n_total", where), f"{where}: n_total", k)
        steps: collections.deque[tuple[IntArray, FloatArray, FloatArray]] = collections.deque(
            maxlen=self.steps.maxlen)
        for row in list_of(require(state, "steps", where), f"{where}: steps"):
            items = list_of(row, f"{where}: step")
            if len(items) != 3:
                raise ConfigError(f"{where}: a step has 3 lists (n_step, n_correct, sum_abs_adv)")
            steps.append((int_array(items[0], f"{where}: n_step", k),
                          float_array(items[1], f"{where}: n_correct", k, low=0.0),
                          float_array(items[2], f"{where}: sum_abs_adv", k, low=0.0)))
        self.n_total, self.steps = n_total, steps



@dataclass(frozen=True, slots=True)
class WarmStart:
    """An earlier run's per-arm statistics to start a new run's scheduler from, so that a re-run, a new
    seed or a bigger model skips the cold exploration (the Meta-ACL idea: reuse what earlier learners
    taught the teacher). Per arm name: all-time completions, and recent completions, accuracy and mean
    |A|. Pass it as `CurriculumAgent(..., warm_start=...)`; get one from the server with
    `SteerboardClient.warm_start(run)`, or from an agent in the same process with `agent.warm_start_summary()`.
    """

    run: str
    n_total: Mapping[str, int]
    n_recent: Mapping[str, int]
    accuracy: Mapping[str, float]
    abs_adv: Mapping[str, float]

    @classmethod
    def from_summary(cls, run: str, arms: Sequence[str], s: ArmSummary) -> WarmStart:
        """From a run's summary (`CurriculumAgent.warm_start_summary()`), arms in its order."""
        def by_arm(values: Any) -> dict[str, Any]:
            return dict(zip(arms, values.tolist(), strict=True))

        return cls(run, by_arm(s.n_total), by_arm(s.n_recent), by_arm(s.accuracy), by_arm(s.abs_adv))

    def summary_for(self, arms: Sequence[str]) -> ArmSummary:
        """The statistics for `arms` in their order; an arm the earlier run did not have starts cold."""
        return ArmSummary(
            np.array([int(self.n_total.get(a, 0)) for a in arms], dtype=np.int64),
            np.array([int(self.n_recent.get(a, 0)) for a in arms], dtype=np.int64),
            np.array([_num(self.accuracy.get(a)) for a in arms], dtype=np.float64),
            np.array([_num(self.abs_adv.get(a)) for a in arms], dtype=np.float64),
        )


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else float("nan")
