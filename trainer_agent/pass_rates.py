"""Inside an arm: each prompt's pass rate, and a draw that prefers prompts near a target pass rate.

`agent.sampler(..., within_arm="pass_rate")` draws an arm from the curriculum as always, then a
prompt of that arm from `PassRateDraw` instead of a uniform permutation:

- Each prompt's pass rate is an exponential moving average of its groups' pass rates (the share of a
  group's completions with reward above the agent's threshold: its mean reward, for 0/1 rewards),
  `rate <- (1 - ema) * rate + ema * group_rate`, the first group taken as it is. The agent feeds it
  from `observe(prompts=...)` with dataset indices as prompt ids.
- A prompt's weight is a Gaussian kernel around the target, `exp(-((rate - target) / width)^2 / 2)`:
  prompts every completion solves or fails (rate 0 or 1) give GRPO no gradient, those near 0.5 the most
  (Online Difficulty Filtering, Bae et al. 2025: balanced filtering around 0.5). Unseen prompts weigh 1,
  as if at the target: a new pool is drawn uniformly until its prompts have been measured.
- A share `explore` of the draws re-estimates instead: of `EXPLORE_CANDIDATES` prompts of the arm drawn
  uniformly, the one measured longest ago (never measured first). Pass rates move as the model learns
  (ADCL, Adaptive Difficulty Curriculum Learning, 2025: re-estimate difficulty as the model changes),
  so a prompt written off at rate 0 is looked at again.

Everything is numpy on per-prompt arrays indexed by dataset index; an arm's weights are recomputed at
most once per `observe` call, when the arm is drawn from.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .checkpoint import float_array, float_value, int_array, int_value, list_of, mapping, require
from .errors import ConfigError
from .protocol import PASS_HIST_BINS
from .stats import FloatArray, IntArray

log = logging.getLogger("trainer_agent")

WITHIN_ARM = ("uniform", "pass_rate")
EXPLORE_CANDIDATES = 8


def check_within_arm(within_arm: str, target: float = 0.5, width: float = 0.15, explore: float = 0.1,
                     ema: float = 0.5) -> None:
    """ConfigError unless the within-arm settings are usable."""
    if within_arm not in WITHIN_ARM:
        raise ConfigError(f"within_arm must be one of {WITHIN_ARM}, got {within_arm!r}")
    for name, v, lo, hi in (("pass_rate_target", target, 0.0, 1.0), ("pass_rate_width", width, 1e-3, 10.0),
                            ("explore", explore, 0.0, 1.0), ("pass_rate_ema", ema, 1e-3, 1.0)):
        if not isinstance(v, int | float) or isinstance(v, bool) or not lo <= float(v) <= hi:
            raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")


class PromptPassRates:
    """Per prompt (dataset index): the moving average of its groups' pass rates and when it was last seen.

    Args:
        n_prompts: prompts known so far (grows with `grow` or with larger indices observed).
        ema: weight of a new group's pass rate in the average.
    """

    def __init__(self, n_prompts: int, ema: float = 0.5) -> None:
        self.ema = float(ema)
        self.rate: FloatArray = np.full(int(n_prompts), np.nan)
        self.seen: IntArray = np.full(int(n_prompts), -1, dtype=np.int64)  # the observe() call, -1: never
        self.calls = 0  # observe() calls with prompt ids: the version the draws' caches follow
        self._warned = False

    def grow(self, n_prompts: int) -> None:
        if n_prompts > self.rate.size:
            extra = n_prompts - self.rate.size
            self.rate = np.concatenate([self.rate, np.full(extra, np.nan)])
            self.seen = np.concatenate([self.seen, np.full(extra, -1, dtype=np.int64)])

    def observe_completions(self, prompts: np.ndarray[Any, Any], rewards: FloatArray, threshold: float) -> None:
        """Fold in `observe()`'s completions: prompt ids (dataset indices) and rewards; a completion passes
        when its reward is above `threshold`, non-finite rewards are left out."""
        if prompts.dtype.kind not in "iu":
            if not self._warned:
                self._warned = True
                log.warning("within_arm='pass_rate' needs dataset indices as prompt ids, got %s values: "
                            "prompts are drawn uniformly", prompts.dtype)
            return
        ok = np.isfinite(rewards)
        self.observe(prompts.astype(np.int64, copy=False)[ok], rewards[ok] > threshold)

    def observe(self, keys: IntArray, passed: np.ndarray[Any, Any]) -> None:
        """Fold completions in: `keys` the prompt of each (dataset index; others ignored), `passed` whether
        its reward is above the threshold."""
        ok = keys >= 0
        if not ok.all():
            keys, passed = keys[ok], passed[ok]
        if not keys.size:
            return
        self.grow(int(keys.max()) + 1)
        uniq, inverse = np.unique(keys, return_inverse=True)
        att = np.bincount(inverse, minlength=uniq.size)
        rate = np.bincount(inverse, weights=passed, minlength=uniq.size) / att
        old = self.rate[uniq]
        self.rate[uniq] = np.where(np.isnan(old), rate, (1.0 - self.ema) * old + self.ema * rate)
        self.seen[uniq] = self.calls
        self.calls += 1

    def profile(self, items: IntArray) -> list[int]:
        """The measured prompts among `items` counted in the PASS_HIST_BINS bins (never solved, (0, 1/3),
        [1/3, 2/3), [2/3, 1), always solved), by moving-average pass rate."""
        r = self.rate[items[items < self.rate.size]]
        r = r[~np.isnan(r)]
        mid = 1 + np.minimum(2, np.floor(3 * r)).astype(np.int64)
        b = np.where(r <= 0, 0, np.where(r >= 1, len(PASS_HIST_BINS) - 1, mid))
        return [int(x) for x in np.bincount(b, minlength=len(PASS_HIST_BINS))]

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: unseen prompts' rates as None."""
        return {"ema": self.ema, "calls": self.calls,
                "rate": [None if math.isnan(x) else x for x in self.rate.tolist()], "seen": self.seen.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PromptPassRates:
        """The state `state_dict()` returned; a ConfigError naming what does not fit."""
        where = "agent state: pass_rates"
        state = mapping(state, where)
        ema = float_value(require(state, "ema", where), f"{where}: ema")
        if not 1e-3 <= ema <= 1.0:
            raise ConfigError(f"{where}: ema must lie in [0.001, 1], got {ema!r}")
        seen = int_array(require(state, "seen", where), f"{where}: seen", None, low=-1)
        rate = list_of(require(state, "rate", where), f"{where}: rate")
        measured = [x for x in rate if x is not None]
        out = cls(0, ema)
        out.rate = np.full(len(rate), np.nan)
        out.rate[[i for i, x in enumerate(rate) if x is not None]] = float_array(
            measured, f"{where}: rate", None, 0.0, 1.0)
        if out.rate.size != seen.size:
            raise ConfigError(f"{where}: {out.rate.size} pass rates but {seen.size} last-seen calls")
        out.seen = seen
        out.calls = int_value(require(state, "calls", where), f"{where}: calls", 0)
        return out


class PassRateDraw:
    """Draws a prompt of an arm: near `target` pass rate by weight, or (share `explore`) the stalest of a
    few uniform candidates, among dataset indices below `n_items`. Each arm's cumulative weights are cached
    until the pass rates change."""

    def __init__(self, rates: PromptPassRates, n_items: int, target: float = 0.5, width: float = 0.15,
                 explore: float = 0.1) -> None:
        rates.grow(n_items)  # once: every index this draw picks from has its slot (the arrays only grow)
        self.rates = rates
        self.target, self.width, self.explore = float(target), float(width), float(explore)
        self._cdf: dict[int, tuple[int, FloatArray]] = {}

    def weights(self, items: IntArray) -> FloatArray:
        """Each item's weight: the kernel at its pass rate, 1 when unseen."""
        r = self.rates.rate[items]
        w = np.exp(-0.5 * ((r - self.target) / self.width) ** 2)
        w[np.isnan(r)] = 1.0
        return w

    def pick(self, arm: int, items: IntArray, rng: np.random.Generator) -> int:
        """One dataset index of `items` (the arm's, non-empty)."""
        if rng.random() < self.explore:
            cand = items[rng.integers(0, items.size, EXPLORE_CANDIDATES)]
            return int(cand[int(np.argmin(self.rates.seen[cand]))])
        cached = self._cdf.get(arm)
        if cached is None or cached[0] != self.rates.calls:
            cached = (self.rates.calls, np.cumsum(self.weights(items)))
            self._cdf[arm] = cached
        cdf = cached[1]
        i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
        return int(items[min(i, items.size - 1)])
