"""Per-arm statistics of one training step, computed with numpy only.

The training thread hands us per-completion (arm, reward, advantage); everything here is vectorised
so that 1,024 completions over 64 arms cost tens of microseconds, not milliseconds.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import ObservationError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

GRPO_EPS = 1e-6


def to_numpy(values: Any, dtype: type | None = None) -> npt.NDArray[Any]:
    """Turn a list, numpy array or torch tensor into a 1-D numpy array without importing torch."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ObservationError(f"expected a 1-D sequence, got an array of shape {arr.shape}")
    return arr


def grpo_advantages(rewards: FloatArray, groups: npt.NDArray[Any]) -> FloatArray:
    """Group-relative advantages A = (r - mean_g) / (std_g + 1e-6), std unbiased.

    A group of size 1 has A = 0 (its unbiased std is undefined). See DeepSeekMath (GRPO), eq. 3.

    Args:
        rewards: one reward per completion.
        groups: one group id per completion (any hashable numpy dtype); completions of one prompt
            share an id.

    Returns:
        One advantage per completion, float64.
    """
    if rewards.shape != groups.shape:
        raise ObservationError(f"rewards ({rewards.size}) and groups ({groups.size}) differ in length")
    if rewards.size == 0:
        return np.zeros(0, dtype=np.float64)
    if groups.dtype.kind in "iu" and int(groups.min()) >= 0 and int(groups.max()) < 4 * groups.size + 64:
        # Small non-negative integer ids (the usual case) index the group sums directly: no sort.
        inverse = groups.astype(np.intp, copy=False)
    else:
        _, inverse = np.unique(groups, return_inverse=True)
        inverse = inverse.reshape(-1)
    counts = np.bincount(inverse).astype(np.float64)
    # Ids that no completion uses have count 0; their 0/0 is never read.
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.bincount(inverse, weights=rewards) / counts
        dev = rewards - means[inverse]
        ss = np.bincount(inverse, weights=dev * dev)
        std = np.sqrt(ss / (counts - 1.0))
    adv = dev / (std[inverse] + GRPO_EPS)
    adv[counts[inverse] < 2] = 0.0
    return adv


@dataclass(frozen=True, slots=True)
class StepObservations:
    """What the schedulers see at the end of a step: per-arm aggregates, arm-indexed arrays.

    `abs_adv` holds every completion's |A| grouped by arm (CSR layout: the values of arm j are
    `abs_adv[offsets[j]:offsets[j + 1]]`, in observation order), which DUMP's sliding window needs.
    """

    n_step: IntArray
    n_total: IntArray
    sum_abs_adv: FloatArray
    sum_reward: FloatArray
    n_correct: FloatArray
    abs_adv: FloatArray
    offsets: IntArray

    @property
    def seen(self) -> BoolArray:
        return self.n_step > 0

    def _mean(self, sums: FloatArray) -> FloatArray:
        out = np.full(sums.shape, np.nan)
        seen = self.seen
        out[seen] = sums[seen] / self.n_step[seen]
        return out

    @property
    def mean_abs_adv(self) -> FloatArray:
        """Mean |A| per arm this step; NaN for arms not observed."""
        return self._mean(self.sum_abs_adv)

    @property
    def mean_reward(self) -> FloatArray:
        return self._mean(self.sum_reward)

    @property
    def accuracy(self) -> FloatArray:
        """Fraction of completions with reward > threshold; NaN for arms not observed."""
        return self._mean(self.n_correct)


class ObservationBuffer:
    """Holds the observe() calls of one step and reduces them to a `StepObservations`."""

    def __init__(self, n_arms: int, threshold: float) -> None:
        self.n_arms = n_arms
        self.threshold = threshold
        self.n_total = np.zeros(n_arms, dtype=np.int64)
        self._arms: list[IntArray] = []
        self._rewards: list[FloatArray] = []
        self._abs_adv: list[FloatArray] = []
        self.n_invalid = 0

    def add(self, arm_idx: IntArray, rewards: FloatArray, advantages: FloatArray) -> None:
        ok = np.isfinite(rewards) & np.isfinite(advantages)
        if not ok.all():
            self.n_invalid += int((~ok).sum())
            arm_idx, rewards, advantages = arm_idx[ok], rewards[ok], advantages[ok]
        self._arms.append(arm_idx)
        self._rewards.append(rewards)
        self._abs_adv.append(np.abs(advantages))

    @property
    def pending(self) -> bool:
        """Whether completions were added since the last `take()`."""
        return bool(self._arms)

    def take(self) -> tuple[IntArray, FloatArray, FloatArray]:
        """This step's raw (arm index, reward, |A|) per completion, in observation order; resets."""
        if self._arms:
            arms = np.concatenate(self._arms) if len(self._arms) > 1 else self._arms[0]
            rewards = np.concatenate(self._rewards) if len(self._rewards) > 1 else self._rewards[0]
            abs_adv = np.concatenate(self._abs_adv) if len(self._abs_adv) > 1 else self._abs_adv[0]
        else:
            arms = np.zeros(0, dtype=np.int64)
            rewards = np.zeros(0, dtype=np.float64)
            abs_adv = np.zeros(0, dtype=np.float64)
        self._arms.clear()
        self._rewards.clear()
        self._abs_adv.clear()
        return arms, rewards, abs_adv

    def reduce(self) -> StepObservations:
        """Aggregate this step's completions and reset for the next step."""
        return self.reduce_arrays(*self.take())

    def reduce_arrays(self, arms: IntArray, rewards: FloatArray, abs_adv: FloatArray) -> StepObservations:
        """Aggregate per-completion arrays (e.g. gathered from every rank) into per-arm statistics."""
        k = self.n_arms
        n_step = np.bincount(arms, minlength=k).astype(np.int64)
        order = np.argsort(arms, kind="stable")
        offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum(n_step, out=offsets[1:])
        self.n_total += n_step
        return StepObservations(
            n_step=n_step,
            n_total=self.n_total.copy(),
            sum_abs_adv=_weighted_counts(arms, abs_adv, k),
            sum_reward=_weighted_counts(arms, rewards, k),
            n_correct=_weighted_counts(arms, (rewards > self.threshold).astype(np.float64), k),
            abs_adv=abs_adv[order],
            offsets=offsets,
        )


def _weighted_counts(idx: IntArray, weights: FloatArray, k: int) -> FloatArray:
    return np.asarray(np.bincount(idx, weights=weights, minlength=k), dtype=np.float64)


def index_arms(names: Sequence[str] | Any, index: dict[str, int]) -> IntArray:
    """Map arm names (list, numpy array of str, tensor of ints is not accepted) to indices."""
    if isinstance(names, np.ndarray) and names.dtype.kind in "iu":
        idx = names.astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(index)):
            raise ObservationError(f"arm index out of range [0, {len(index)})")
        return idx
    try:
        if len(names) == 1:
            return np.array([index[names[0]]], dtype=np.int64)
        # itemgetter does the 1,000 dict lookups in one C loop (about 2x a list comprehension).
        return np.array(operator.itemgetter(*names)(index), dtype=np.int64)
    except KeyError as e:
        raise ObservationError(
            f"unknown arm {e.args[0]!r}; known arms: {', '.join(sorted(index)[:20])}"
        ) from e
    except TypeError as e:
        raise ObservationError(f"arm names must be strings, got {type(names).__name__}") from e
