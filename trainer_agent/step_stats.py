"""`StepStats`: what one `end_step()` produced, and its per-arm wire records."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .overrides import Ack, OverrideSnapshot
from .protocol import ARM_RECORD_FIELDS
from .stats import FloatArray, StepObservations


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(frozen=True, slots=True)
class StepStats:
    """What one step produced: per-arm statistics, the probabilities now in force, command answers.

    Arrays are indexed like `arms`; the dict properties give arm -> value views. `probabilities`
    are those in force at the end of the step (commands applied at this step included); the other
    statistics describe the completions observed during the step (None for arms not observed).
    """

    step: int
    ts: float
    arms: tuple[str, ...]
    p: FloatArray
    score: FloatArray | None
    parts: dict[str, FloatArray]
    obs: StepObservations
    overrides: OverrideSnapshot
    acks: list[Ack]
    metrics: dict[str, float]
    n_invalid: int
    expired: list[str]

    def _as_dict(self, values: FloatArray) -> dict[str, float | None]:
        return {a: _opt(float(v)) for a, v in zip(self.arms, values.tolist(), strict=True)}

    @property
    def probabilities(self) -> dict[str, float]:
        return dict(zip(self.arms, self.p.tolist(), strict=True))

    @property
    def accuracy(self) -> dict[str, float | None]:
        return self._as_dict(self.obs.accuracy)

    @property
    def mean_abs_adv(self) -> dict[str, float | None]:
        return self._as_dict(self.obs.mean_abs_adv)

    @property
    def mean_reward(self) -> dict[str, float | None]:
        return self._as_dict(self.obs.mean_reward)

    @property
    def zero_var(self) -> dict[str, float | None]:
        """Share of each arm's groups whose rewards were all equal (None: no group ids, or no group)."""
        zv = self.obs.zero_var
        return dict.fromkeys(self.arms) if zv is None else self._as_dict(zv)

    @property
    def pass_hist(self) -> dict[str, list[int]] | None:
        """Per arm, its distinct prompts in the prompt window by pass rate (protocol.PASS_HIST_BINS);
        None until prompt ids were given."""
        h = self.obs.pass_hist
        return None if h is None else dict(zip(self.arms, h.tolist(), strict=True))

    @property
    def n_step(self) -> dict[str, int]:
        return dict(zip(self.arms, self.obs.n_step.tolist(), strict=True))

    @property
    def n_total(self) -> dict[str, int]:
        return dict(zip(self.arms, self.obs.n_total.tolist(), strict=True))

    def records(self) -> list[dict[str, Any]]:
        """One wire record per arm, with the fields `protocol.ARM_RECORD_FIELDS` names (docs/wire.md)."""
        obs = self.obs
        k = len(self.arms)
        columns: dict[str, list[Any]] = {
            "p": self.p.tolist(),
            "score": [None] * k if self.score is None else self.score.tolist(),
            "n_step": obs.n_step.tolist(),
            "n_total": obs.n_total.tolist(),
            "mean_abs_adv": obs.mean_abs_adv.tolist(),
            "mean_reward": obs.mean_reward.tolist(),
            "accuracy": obs.accuracy.tolist(),
        }
        k_none: list[Any] = [None] * k
        zero_var = obs.zero_var
        columns["n_groups"] = k_none if obs.n_groups is None else obs.n_groups.astype(np.int64).tolist()
        columns["zero_var"] = k_none if zero_var is None else zero_var.tolist()
        columns["pass_hist"] = k_none if obs.pass_hist is None else obs.pass_hist.tolist()
        parts = {name: values.tolist() for name, values in self.parts.items()}
        out = []
        for i, arm in enumerate(self.arms):
            rec: dict[str, Any] = dict.fromkeys(ARM_RECORD_FIELDS)
            rec["arm"] = arm
            for name, column in columns.items():
                v = column[i]
                rec[name] = None if isinstance(v, float) and not math.isfinite(v) else v
            rec["parts"] = {name: v[i] for name, v in parts.items() if math.isfinite(v[i])}
            rec.update(self.overrides.arm_state(i))
            out.append(rec)
        return out

    def __repr__(self) -> str:
        top = sorted(self.probabilities.items(), key=lambda kv: -kv[1])[:3]
        shown = ", ".join(f"{a}={p:.3f}" for a, p in top)
        return f"StepStats(step={self.step}, n={int(self.obs.n_step.sum())}, top=[{shown}])"
