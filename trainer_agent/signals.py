"""Per-arm signals of a step beyond the means: zero-variance groups and the pass-rate profile of prompts.

- Zero-variance groups: a GRPO group whose completions all got the same reward has advantage 0 for
  every completion, so it gives no gradient (the reason for DAPO's dynamic sampling). Per arm and step:
  how many groups it had (`n_groups`) and the share of them whose rewards are all equal (`zero_var`).
  A group of one completion counts as zero-variance (its advantage is 0 too). Known when the caller
  passes group ids (or prompt ids, which then stand for the groups of each `observe` call).
- Pass-rate profile: with prompt ids, each arm's distinct prompts seen in the last `window` steps,
  counted by their pass rate over their attempts in that window, in PASS_BINS fixed bins:
  never solved, (0, 1/3), [1/3, 2/3), [2/3, 1), always solved.

Everything is vectorised per group (not per completion, not per prompt in Python): at 128 groups a
step the window costs a few numpy calls on arrays of the prompts in the window.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .protocol import PASS_HIST_BINS

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# never solved, pass rate in (0, 1/3), [1/3, 2/3), [2/3, 1), always solved (protocol.PASS_HIST_BINS)
PASS_BINS = len(PASS_HIST_BINS)


@dataclass(frozen=True, slots=True)
class GroupRecords:
    """One row per group (prompt) of a step's completions."""

    arm: IntArray  # the arm of the group (that of its completions)
    size: IntArray  # completions in the group
    correct: IntArray  # completions with reward > threshold
    zero_var: BoolArray  # every reward of the group equal
    prompt: IntArray | None  # the prompt key of the group; None when no prompt ids were given

    @staticmethod
    def concat(parts: list[GroupRecords]) -> GroupRecords | None:
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        prompts = [p.prompt for p in parts if p.prompt is not None]
        return GroupRecords(
            arm=np.concatenate([p.arm for p in parts]),
            size=np.concatenate([p.size for p in parts]),
            correct=np.concatenate([p.correct for p in parts]),
            zero_var=np.concatenate([p.zero_var for p in parts]),
            # Groups without prompt ids are left out of the profile (never mixed with keyed ones).
            prompt=np.concatenate(prompts) if len(prompts) == len(parts) else None,
        )


def prompt_keys(prompts: npt.NDArray[Any]) -> IntArray:
    """Prompt ids as int64 keys: integers as they are; anything else (strings) by a stable 64-bit hash
    of its text, the same in every process and rank (Python's `hash` of a string is not)."""
    if prompts.dtype.kind in "iu":
        return prompts.astype(np.int64, copy=False)
    uniq, inverse = np.unique(prompts.astype(str), return_inverse=True)
    hashed = np.array(
        [int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little", signed=True)
         for u in uniq.tolist()],
        dtype=np.int64,
    )
    return hashed[inverse.reshape(-1)]


# Prompt keys in [0, DENSE_KEYS) (dataset indices, the usual case) index the window's arrays directly;
# the first key outside switches the window to sorted arrays for good.
DENSE_KEYS = 1 << 22

# A group's (or prompt's) attempts and successes packed in one int64, attempts << 32 | successes: one
# scatter-add updates both (successes never exceed attempts; attempts stay below 2**31 in a window).
ATT_SHIFT = 32
SUC_MASK = (1 << ATT_SHIFT) - 1


def pack(size: IntArray, correct: IntArray) -> IntArray:
    return (size << ATT_SHIFT) | correct


# Histogram slots per arm in the dense layout: slot 0 holds the prompts out of the window (never read),
# slots 1..PASS_BINS the bins. The slots are laid out slot-major (slot * n_arms + arm).
_SLOTS = PASS_BINS + 1
_EMPTY = np.zeros(0, dtype=np.int64)


def _slot(att: IntArray, suc: IntArray) -> IntArray:
    """A prompt's slot from its attempts and successes in the window: 0 when it has none (out of the
    window), else 1 + its bin (0 never solved, 1 + floor(3 * pass rate) in between, PASS_BINS - 1
    always solved)."""
    return (3 * suc) // np.maximum(att, 1) + (suc > 0) + (att > 0)


# `_slot` of every (attempts, successes) with attempts below _TABLE_ATT, at attempts << 8 | successes:
# one lookup per prompt instead of an integer division.
_TABLE_ATT = 256
_att, _suc = np.meshgrid(np.arange(_TABLE_ATT), np.arange(_TABLE_ATT), indexing="ij")
_SLOT_TABLE = np.where(_suc <= _att, _slot(_att, _suc), 0).ravel()
del _att, _suc


class PassRateWindow:
    """Each arm's distinct prompts seen in the last `window` steps, binned by pass rate in that window.

    Per prompt: its arm, attempts and successes in the window; and the histogram itself, updated for
    the prompts a step touches (those it saw and those that left the window), never rebuilt. Dataset
    indices address one row per prompt directly (packed attempts and successes, arm and histogram slot
    side by side); other keys (hashes, large ids) live in sorted arrays. A prompt seen under two arms
    counts under the one it was last (dense) or first (sorted) seen with.
    """

    def __init__(self, n_arms: int, window: int) -> None:
        self.n_arms = n_arms
        self.window = window
        self.dense = True
        # Dense layout: per prompt (row = key) its packed attempts and successes, its arm, and its
        # histogram slot * n_arms + arm (0 for a prompt never seen: arm 0's unread slot 0).
        self._rows = np.zeros((0, 3), dtype=np.int64)
        self._cols: tuple[IntArray, IntArray, IntArray] = (self._rows[:, 0], self._rows[:, 1], self._rows[:, 2])
        self._hist6 = np.zeros(_SLOTS * n_arms, dtype=np.int64)
        self._hist_view = self._hist6.reshape(_SLOTS, n_arms)[1:].T  # arms x PASS_BINS
        self._table = _SLOT_TABLE * n_arms  # slot * n_arms, at attempts << 8 | successes
        self._tags = -1 - np.arange(256, dtype=np.int64)  # marks that find each touched prompt once
        # Sorted layout (after the first key outside [0, DENSE_KEYS)): one entry per prompt in the window.
        self.keys = np.zeros(0, dtype=np.int64)
        self.arm = np.zeros(0, dtype=np.int64)
        self.att = np.zeros(0, dtype=np.int64)
        self.suc = np.zeros(0, dtype=np.int64)
        self.hist = np.zeros(n_arms * PASS_BINS, dtype=np.int64)  # sorted layout: per arm and bin
        self._ring: collections.deque[tuple[IntArray, IntArray]] = collections.deque()  # (keys, packed)
        self.seen_any = False

    def _count(self, pos: IntArray) -> IntArray:
        att, suc = self.att[pos], self.suc[pos]
        mid = 1 + np.minimum(2, (3 * suc) // np.maximum(att, 1))
        b = np.where(suc == 0, 0, np.where(suc >= att, PASS_BINS - 1, mid))
        return np.bincount(self.arm[pos] * PASS_BINS + b, minlength=self.hist.size)

    def update(self, prompt: IntArray | None, packed: IntArray = _EMPTY, arm: IntArray = _EMPTY) -> IntArray | None:
        """Fold one step's keyed groups (their prompt keys, `pack`ed sizes and successes, and arms;
        `prompt` None: no prompt ids this step) and return the histogram, arms x PASS_BINS (None until
        prompt ids have been seen)."""
        if prompt is not None and prompt.size:
            self.seen_any = True
            k, d = prompt, packed
            if self.dense:
                top = int(k.view(np.uint64).max())  # a negative key reads as a huge one
                if top >= DENSE_KEYS:
                    self._to_sorted()
                elif top >= self._rows.shape[0]:
                    self._grow(max(top + 1, 2 * self._rows.shape[0]))
        elif self.seen_any:
            k = d = arm = _EMPTY
        else:
            return None
        old = self._ring.popleft() if len(self._ring) == self.window else None
        self._ring.append((k, d))
        if self.dense:
            self._update_dense(k, d, arm, old)
            return self._hist_view.copy()
        self._update_sorted(k, d >> ATT_SHIFT, d & SUC_MASK, arm,
                            None if old is None else (old[0], old[1] >> ATT_SHIFT, old[1] & SUC_MASK))
        return self.hist.reshape(self.n_arms, PASS_BINS).copy()

    def _grow(self, n: int) -> None:
        rows = np.zeros((n, 3), dtype=np.int64)
        if n:
            rows[: self._rows.shape[0]] = self._rows
        self._rows, self._cols = rows, (rows[:, 0], rows[:, 1], rows[:, 2])

    def _update_dense(self, k: IntArray, d: IntArray, arm: IntArray, old: tuple[IntArray, IntArray] | None) -> None:
        if old is not None and old[0].size:  # the step leaving the window, in the same pass
            touched = np.concatenate((k, old[0]))
        else:
            touched, old = k, None
        n = touched.size
        if not n:
            return
        packed, arms, code = self._cols
        if n > self._tags.size:
            self._tags = -1 - np.arange(2 * n, dtype=np.int64)
        tags = self._tags[:n]
        before = code[touched]
        code[touched] = tags
        # 1 for one entry of each touched prompt (that whose tag stayed), 0 for the others (as int64:
        # ufunc.at takes its fast path only with values of the histogram's type)
        once = (code[touched] == tags).astype(np.int64)
        if k.size:
            np.add.at(packed, k, d)
            arms[k] = arm
        if old is not None:
            np.subtract.at(packed, old[0], old[1])
        p = packed[touched]
        try:  # attempts below 256 (then successes too) index the table; more, past its end
            slot = self._table[(p >> (ATT_SHIFT - 8)) | (p & 255)]
        except IndexError:
            slot = _slot(p >> ATT_SHIFT, p & SUC_MASK) * self.n_arms
        after = arms[touched] + slot
        code[touched] = after
        np.subtract.at(self._hist6, before, once)
        np.add.at(self._hist6, after, once)

    def _to_sorted(self) -> None:
        packed, arms, _ = self._cols
        live = np.flatnonzero(packed > 0)
        self.keys, self.arm = live, arms[live]
        self.att, self.suc = packed[live] >> ATT_SHIFT, packed[live] & SUC_MASK
        self.hist = self._hist_view.reshape(-1)  # a copy, arm-major
        self._grow(0)
        self.dense = False

    def _update_sorted(self, k: IntArray, a: IntArray, c: IntArray, arm: IntArray,
                       old: tuple[IntArray, IntArray, IntArray] | None) -> None:
        if k.size:  # one row per distinct prompt of the step
            order = np.argsort(k, kind="stable")
            ks = k[order]
            starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
            k, arm = ks[starts], arm[order][starts]
            a, c = np.add.reduceat(a[order], starts), np.add.reduceat(c[order], starts)
        n = self.keys.size
        pos = np.searchsorted(self.keys, k)
        found = pos < n
        found[found] = self.keys[pos[found]] == k[found]
        touched_mask = np.zeros(n, dtype=bool)
        touched_mask[pos[found]] = True
        old_pos = None
        if old is not None and old[0].size:
            ok = np.unique(old[0])
            old_pos = np.searchsorted(self.keys, ok)
            touched_mask[old_pos] = True
        touched = np.flatnonzero(touched_mask)
        if touched.size:
            self.hist -= self._count(touched)
            fp = pos[found]
            self.att[fp] += a[found]
            self.suc[fp] += c[found]
            if old is not None and old_pos is not None:
                np.subtract.at(self.att, np.searchsorted(self.keys, old[0]), old[1])
                np.subtract.at(self.suc, np.searchsorted(self.keys, old[0]), old[2])
            live = touched[self.att[touched] > 0]
            self.hist += self._count(live)
            if live.size < touched.size:  # prompts that left the window
                keep = np.ones(n, dtype=bool)
                keep[touched[self.att[touched] <= 0]] = False
                self.keys, self.arm, self.att, self.suc = (x[keep] for x in (self.keys, self.arm, self.att, self.suc))
        new = ~found
        if new.any():
            at = np.searchsorted(self.keys, k[new])
            self.keys = np.insert(self.keys, at, k[new])
            self.arm = np.insert(self.arm, at, arm[new])
            self.att = np.insert(self.att, at, a[new])
            self.suc = np.insert(self.suc, at, c[new])
            self.hist += self._count(np.searchsorted(self.keys, k[new]))
