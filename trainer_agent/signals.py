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

    def keyed(self) -> GroupRecords | None:
        """The groups that carry a prompt key (all or none of them do)."""
        return self if self.prompt is not None else None


def group_records(arm_idx: IntArray, correct: npt.NDArray[Any], inverse: npt.NDArray[np.intp],
                  counts: npt.NDArray[np.float64], zero: BoolArray, prompt_of_completion: IntArray | None,
                  ) -> GroupRecords:
    """Per-group rows from per-completion arrays and a group summary (`inverse` maps a completion to
    its group id; `counts` and `zero` are indexed by group id, ids with count 0 are unused)."""
    in_use = np.flatnonzero(counts)
    # Every group id in use (the usual 0..G-1): views, not copies.
    used: Any = in_use if in_use.size < counts.size else slice(None)
    arm_of = np.zeros(counts.size, dtype=np.int64)
    arm_of[inverse] = arm_idx
    n_correct = np.bincount(inverse, weights=correct, minlength=counts.size)
    prompt = None
    if prompt_of_completion is not None:
        prompt_of = np.zeros(counts.size, dtype=np.int64)
        prompt_of[inverse] = prompt_of_completion
        prompt = prompt_of[used]
    return GroupRecords(
        arm=arm_of[used], size=counts[used].astype(np.int64), correct=n_correct[used].astype(np.int64),
        zero_var=zero[used], prompt=prompt,
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


class PassRateWindow:
    """Each arm's distinct prompts seen in the last `window` steps, binned by pass rate in that window.

    Per prompt: its arm, attempts and successes in the window; and the histogram itself, updated for
    the prompts a step touches (those it saw and those that left the window), never rebuilt. Dataset
    indices address the arrays directly; other keys (hashes, large ids) live in sorted arrays. A
    prompt seen under two arms counts under the one it was last (dense) or first (sorted) seen with.
    """

    def __init__(self, n_arms: int, window: int) -> None:
        self.n_arms = n_arms
        self.window = window
        self.dense = True
        self.keys = np.zeros(0, dtype=np.int64)  # sorted layout only
        self.arm = np.zeros(0, dtype=np.int64)
        self.att = np.zeros(0, dtype=np.int64)
        self.suc = np.zeros(0, dtype=np.int64)
        self._stamp = np.zeros(0, dtype=np.int64)  # dense layout: finds each touched prompt once
        self._code1 = np.zeros(0, dtype=np.int64)  # dense layout: each prompt's slot in _hist1 (0: none)
        self._hist1 = np.zeros(1 + n_arms * PASS_BINS, dtype=np.int64)
        self.hist = self._hist1[1:]  # a view: per arm and bin, the prompts in the window
        self._ring: collections.deque[tuple[IntArray, IntArray, IntArray]] = collections.deque()
        self.seen_any = False

    def _count(self, pos: IntArray) -> IntArray:
        att, suc = self.att[pos], self.suc[pos]
        mid = 1 + np.minimum(2, (3 * suc) // np.maximum(att, 1))
        b = np.where(suc == 0, 0, np.where(suc >= att, PASS_BINS - 1, mid))
        return np.bincount(self.arm[pos] * PASS_BINS + b, minlength=self.hist.size)

    def update(self, g: GroupRecords | None) -> IntArray | None:
        """Fold one step's keyed groups (None: no prompt ids this step) and return the histogram,
        arms x PASS_BINS (None until prompt ids have been seen)."""
        empty = np.zeros(0, dtype=np.int64)
        k, a, c, arm = empty, empty, empty, empty
        if g is not None and g.prompt is not None and g.prompt.size:
            self.seen_any = True
            k, a, c, arm = g.prompt, g.size, g.correct, g.arm
        if not self.seen_any:
            return None
        if self.dense and k.size and (int(k.min()) < 0 or int(k.max()) >= DENSE_KEYS):
            self._to_sorted()
        old = self._ring.popleft() if len(self._ring) == self.window else None
        if self.dense:
            self._update_dense(k, a, c, arm, old)
        else:
            self._update_sorted(k, a, c, arm, old)
        self._ring.append((k, a, c))
        return self.hist.reshape(self.n_arms, PASS_BINS).copy()

    def _update_dense(self, k: IntArray, a: IntArray, c: IntArray, arm: IntArray,
                      old: tuple[IntArray, IntArray, IntArray] | None) -> None:
        if k.size and int(k.max()) >= self.att.size:
            grow = max(int(k.max()) + 1, 2 * self.att.size)
            self.arm, self.att, self.suc, self._stamp = (
                np.concatenate([x, np.zeros(grow - x.size, dtype=np.int64)])
                for x in (self.arm, self.att, self.suc, self._stamp)
            )
            self._code1 = np.concatenate([self._code1, np.zeros(grow - self._code1.size, dtype=np.int64)])
        if old is not None:  # the step leaving the window, subtracted in the same pass
            k, a, c = np.concatenate((k, old[0])), np.concatenate((a, -old[1])), np.concatenate((c, -old[2]))
        if not k.size:
            return
        idx = np.arange(k.size)
        self._stamp[k] = idx
        rep = k[self._stamp[k] == idx]  # each touched prompt once
        np.subtract.at(self._hist1, self._code1[rep], 1)
        np.add.at(self.att, k, a)
        np.add.at(self.suc, k, c)
        self.arm[k[:arm.size]] = arm
        att, suc = self.att[rep], self.suc[rep]
        # 1 + arm * PASS_BINS + bin, bin 0 never solved, 4 always, else 1 + floor(3 * pass rate); 0 once
        # out of the window (the histogram's slot 0 counts those, and is never read)
        after = np.where(att > 0, self.arm[rep] * PASS_BINS + (3 * suc) // np.maximum(att, 1) + (suc > 0) + 1, 0)
        self._code1[rep] = after
        np.add.at(self._hist1, after, 1)

    def _to_sorted(self) -> None:
        live = np.flatnonzero(self.att > 0)
        self.keys, self.arm, self.att, self.suc = live, self.arm[live], self.att[live], self.suc[live]
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
