"""The diagnosis of each arm at each step, from the statistics the server stores (docs/diagnosis.md).

Pure numpy, no SQL: `fold` takes what an arm's steps carried (probability, completions, accuracy,
mean |A|, zero-variance share, groups, retired) as step x arm matrices, plus evaluations, and the
state carried from the steps before; it returns the diagnosis changes and the new state. Ingest calls
it on each batch's new steps (server/store/diagnoses.py), `steerboard runs diagnose` on stored runs,
so every scheduler and every past run is diagnosed the same way.

Everything is a decayed (exponentially weighted) sum over steps, lambda = 1 - 1/window: a weighted
mean keeps its value while an arm gets no completions (its last signal), and its weight says how
much recent evidence there is. The recurrences are evaluated for a whole batch at once (scaled
cumulative sums, in chunks that cannot overflow), not step by step in Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F = npt.NDArray[np.float64]

# Diagnosis codes; NONE: not enough evidence yet (no diagnosis).
DIAGNOSES: Final[tuple[str, ...]] = (
    "learning", "saturated", "too_hard", "starved", "unstable", "regressing", "retired",
)
NONE: Final = -1
_CODE = {d: i for i, d in enumerate(DIAGNOSES)}
LEARNING, SATURATED, TOO_HARD, STARVED, UNSTABLE, REGRESSING, RETIRED = range(len(DIAGNOSES))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The rules' parameters; server.settings documents each default (docs/diagnosis.md)."""

    window: int = 20
    confirm_steps: int = 5
    min_samples: int = 64
    saturated_accuracy: float = 0.9
    too_hard_accuracy: float = 0.1
    low_signal_zero_var: float = 0.7
    low_signal_abs_adv: float = 0.25
    high_signal_zero_var: float = 0.5
    high_signal_abs_adv: float = 0.4
    starved_share: float = 0.25
    unstable_ratio: float = 3.0
    unstable_min_steps: int = 8
    regress_drop: float = 0.15
    regress_z: float = 3.0
    assumed_group_size: int = 8


# Matrices `fold` reads, step x arm; NaN where a step has no value for an arm.
INPUTS: Final = ("p", "n", "acc", "mab", "zv", "ng", "retired")


@dataclass(slots=True)
class ArmCarry:
    """What one arm's diagnosis carries from one batch to the next (JSON-able)."""

    sums: dict[str, float] = field(default_factory=dict)  # decayed sums, by name
    n_total: float = 0.0  # completions ever
    prev_acc: float = math.nan  # accuracy at the last step with completions (unstable's difference)
    prev_var: float = math.nan  # its sampling variance
    peak: float = math.nan  # best confident decayed accuracy (regressing)
    evals: dict[str, list[float]] = field(default_factory=dict)  # name -> [best, best_total, last, last_total]
    cand: int = NONE  # the candidate diagnosis, and since which step and for how many steps it has held
    cand_since: int = -1
    cand_len: int = 0
    diag: int = NONE  # the diagnosis in force and the step it began
    since: int = -1
    figures: dict[str, Any] = field(default_factory=dict)  # the figures behind it, when it was decided

    def to_json(self) -> dict[str, Any]:
        return {
            "sums": self.sums, "n_total": self.n_total, "prev_acc": _j(self.prev_acc), "prev_var": _j(self.prev_var),
            "peak": _j(self.peak), "evals": self.evals, "cand": self.cand, "cand_since": self.cand_since,
            "cand_len": self.cand_len, "diag": self.diag, "since": self.since, "figures": self.figures,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ArmCarry:
        nan = math.nan
        return cls(
            sums=dict(d.get("sums", {})), n_total=float(d.get("n_total", 0.0)),
            prev_acc=_f(d.get("prev_acc", nan)), prev_var=_f(d.get("prev_var", nan)), peak=_f(d.get("peak", nan)),
            evals={k: list(v) for k, v in d.get("evals", {}).items()}, cand=int(d.get("cand", NONE)),
            cand_since=int(d.get("cand_since", -1)), cand_len=int(d.get("cand_len", 0)),
            diag=int(d.get("diag", NONE)), since=int(d.get("since", -1)), figures=dict(d.get("figures", {})),
        )

    @property
    def diagnosis(self) -> str | None:
        return None if self.diag == NONE else DIAGNOSES[self.diag]


def _j(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def _f(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True, slots=True)
class Change:
    """An arm's diagnosis changed: `diagnosis` began at `since` (confirmed at `step`)."""

    arm: int  # column index
    step: int
    since: int
    diagnosis: str | None
    previous: str | None
    figures: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ArmEval:
    """One evaluation of one arm (column index) at a step."""

    arm: int
    step: int
    name: str
    accuracy: float
    total: int | None


# Decayed sums kept per arm: name -> (value matrix, weight matrix) built in `fold`.
_SUMS = ("acc", "acc_w", "mab", "mab_w", "zv", "zv_w", "groups", "d2", "e2", "pairs")


def _decayed(prev: F, inc: F, lam: float) -> F:
    """S_t = lam * S_{t-1} + inc_t for every row t (axis 0), from S_{-1} = prev; NaN in inc counts as 0."""
    inc = np.nan_to_num(inc, nan=0.0)
    t_all = inc.shape[0]
    out = np.empty_like(inc)
    # lam^-L must stay far from overflow: chunks of at most L rows.
    chunk = max(1, int(300.0 / max(1e-12, -math.log10(lam)))) if lam < 1 else t_all
    start, carry = 0, prev
    while start < t_all:
        end = min(t_all, start + chunk)
        n = end - start
        up = lam ** -np.arange(1, n + 1, dtype=np.float64)  # lam^-(t+1)
        down = lam ** np.arange(1, n + 1, dtype=np.float64)
        out[start:end] = down[:, None] * (carry[None, :] + np.cumsum(inc[start:end] * up[:, None], axis=0))
        carry = out[end - 1]
        start = end
    return out


def fold(carry: list[ArmCarry], steps: npt.NDArray[np.int64], m: dict[str, F], evals: list[ArmEval],
         th: Thresholds) -> list[Change]:
    """Fold a batch of steps (rows, increasing) into the arms' carry (updated in place); return the
    diagnosis changes, in step order. `m` holds the INPUTS matrices, steps x arms."""
    t_n, k = m["p"].shape
    if t_n == 0:
        return []
    lam = 1.0 - 1.0 / th.window
    present = ~np.isnan(m["p"])
    n = np.nan_to_num(m["n"])
    acc, mab, zv, ng = m["acc"], m["mab"], m["zv"], m["ng"]
    has_acc = ~np.isnan(acc) & (n > 0)
    has_mab = ~np.isnan(mab) & (n > 0)
    has_zv = ~np.isnan(zv) & ~np.isnan(ng) & (ng > 0)
    groups = np.where(has_zv, ng, n / th.assumed_group_size)  # groups behind the step's accuracy

    # Unstable: the step-to-step change of accuracy against what sampling alone would give it.
    prev_acc = np.array([c.prev_acc for c in carry])
    prev_var = np.array([c.prev_var for c in carry])
    obs = has_acc & (groups >= 2)
    idx = np.where(obs, np.arange(t_n)[:, None], -1)
    last = np.maximum.accumulate(idx, axis=0)  # the latest observed row at or before t
    before = np.vstack([np.full((1, k), -1), last[:-1]])  # ... strictly before t
    acc_f = np.where(obs, acc, np.nan)
    var_step = np.clip(np.nan_to_num(acc_f), 0.1, 0.9)
    var_step = var_step * (1 - var_step) / np.maximum(groups, 1.0)
    cols = np.arange(k)[None, :]
    pa = np.where(before >= 0, acc_f[np.maximum(before, 0), cols], prev_acc[None, :])
    pv = np.where(before >= 0, var_step[np.maximum(before, 0), cols], prev_var[None, :])
    pair = obs & ~np.isnan(pa)
    d2 = np.where(pair, (acc_f - pa) ** 2, 0.0)
    e2 = np.where(pair, var_step + np.nan_to_num(pv), 0.0)

    incs = {
        "acc": np.where(has_acc, acc * n, 0.0), "acc_w": np.where(has_acc, n, 0.0),
        "mab": np.where(has_mab, mab * n, 0.0), "mab_w": np.where(has_mab, n, 0.0),
        "zv": np.where(has_zv, zv * ng, 0.0), "zv_w": np.where(has_zv, ng, 0.0),
        "groups": np.where(has_acc, groups, 0.0), "d2": d2, "e2": e2, "pairs": pair.astype(np.float64),
    }
    s = {name: _decayed(np.array([c.sums.get(name, 0.0) for c in carry]), inc, lam) for name, inc in incs.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_e = s["acc"] / s["acc_w"]
        mab_e = s["mab"] / s["mab_w"]
        zv_e = s["zv"] / s["zv_w"]
        ratio = s["d2"] / s["e2"]
    n_total = np.array([c.n_total for c in carry])[None, :] + np.cumsum(n, axis=0)
    retired = np.nan_to_num(m["retired"]) > 0
    active = (present & ~retired).sum(axis=1, keepdims=True)

    # Regressing: the confident decayed accuracy fell from its best by more than noise and the threshold.
    g_e = s["groups"]
    confident = s["acc_w"] >= th.min_samples
    peak0 = np.array([c.peak for c in carry])
    peaks = np.fmax.accumulate(np.vstack([peak0[None, :], np.where(confident, acc_e, np.nan)]), axis=0)[1:]
    spread = np.clip(np.fmax(peaks, acc_e), 0.05, 0.95)
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = th.regress_z * np.sqrt(2 * spread * (1 - spread) / np.maximum(g_e, 1.0))
    drop = peaks - acc_e
    regress_train = confident & (drop >= th.regress_drop) & (drop >= noise)
    regress_eval = _eval_regress(carry, steps, evals, th)

    zv_known = s["zv_w"] > 0
    low = np.where(zv_known, zv_e >= th.low_signal_zero_var, mab_e <= th.low_signal_abs_adv)
    high = np.where(zv_known, zv_e <= th.high_signal_zero_var, mab_e >= th.high_signal_abs_adv)
    p = np.nan_to_num(m["p"])
    known = n_total >= th.min_samples

    code = np.full((t_n, k), LEARNING, dtype=np.int64)
    code[low & (acc_e <= th.too_hard_accuracy)] = TOO_HARD
    code[low & (acc_e >= th.saturated_accuracy)] = SATURATED
    code[(ratio >= th.unstable_ratio) & (s["pairs"] >= th.unstable_min_steps)] = UNSTABLE
    code[regress_train | regress_eval] = REGRESSING
    code[high & (p < th.starved_share / np.maximum(active, 1))] = STARVED
    code[~known | np.isnan(acc_e)] = NONE
    code[retired] = RETIRED

    figures = {"accuracy": acc_e, "zero_var": zv_e, "mean_abs_adv": mab_e, "p": p, "recent_completions": s["acc_w"],
               "instability": ratio, "peak_accuracy": peaks,
               "active_arms": np.broadcast_to(active, (t_n, k)).astype(np.float64)}
    changes = _confirm(carry, steps, code, present, th, figures, k)

    for j, c in enumerate(carry):
        c.sums = {name: float(s[name][-1, j]) for name in _SUMS}
        c.n_total = float(n_total[-1, j])
        if last[-1, j] >= 0:
            c.prev_acc, c.prev_var = float(acc_f[last[-1, j], j]), float(var_step[last[-1, j], j])
        c.peak = float(peaks[-1, j])
    return changes


def _eval_regress(carry: list[ArmCarry], steps: npt.NDArray[np.int64], evals: list[ArmEval],
                  th: Thresholds) -> npt.NDArray[np.bool_]:
    """Per row and arm: does an evaluation set show the arm's accuracy fallen from its best (by the
    threshold, and by `regress_z` standard errors when the counts are known)? Evaluations are folded in
    step order; one taken at step e counts from the first row at or after e."""
    t_n, k = steps.size, len(carry)
    out = np.zeros((t_n, k), dtype=bool)
    flag = np.array([_eval_flag(c, th) for c in carry])
    pending = sorted(evals, key=lambda e: e.step)
    row = 0
    for e in [*pending, None]:
        until = t_n if e is None else int(np.searchsorted(steps, e.step))
        if until > row:
            out[row:until] = flag[None, :]
            row = until
        if e is None:
            break
        c = carry[e.arm]
        best = c.evals.get(e.name)
        total = float(e.total) if e.total else 0.0
        if best is None or e.accuracy > best[0]:
            c.evals[e.name] = [e.accuracy, total, e.accuracy, total]
        else:
            best[2], best[3] = e.accuracy, total
        flag[e.arm] = _eval_flag(c, th)
    return out


def _eval_flag(c: ArmCarry, th: Thresholds) -> bool:
    for best, best_n, last, last_n in c.evals.values():
        drop = best - last
        if drop < th.regress_drop:
            continue
        if best_n > 0 and last_n > 0:
            se = math.sqrt(max(best * (1 - best), 0.01) / best_n + max(last * (1 - last), 0.01) / last_n)
            if drop < th.regress_z * se:
                continue
        return True
    return False


def _confirm(carry: list[ArmCarry], steps: npt.NDArray[np.int64], code: npt.NDArray[np.int64],
             present: npt.NDArray[np.bool_], th: Thresholds, figures: dict[str, F], k: int) -> list[Change]:
    """A candidate diagnosis becomes the diagnosis once it has held `confirm_steps` evaluated steps in a
    row (retired: at once); the change is dated at the step the candidate began. Sequential per arm, but
    over the rows where the candidate changes or confirms only."""
    changes: list[Change] = []
    for j in range(k):
        c = carry[j]
        rows = np.flatnonzero(present[:, j])
        if not rows.size:
            continue
        col = code[rows, j]
        # Rows where the candidate differs from the one before it (the carried one for the first row).
        prev = np.concatenate(([c.cand], col[:-1]))
        starts = np.flatnonzero(col != prev)
        bounds = [int(b) for b in np.append(starts, rows.size)]
        seg_start = 0
        for b in bounds:  # each run of one candidate: [seg_start, b)
            if b > seg_start:
                cand = int(col[seg_start])
                continuing = seg_start == 0 and cand == c.cand
                run_since = c.cand_since if continuing else int(steps[rows[seg_start]])
                base = c.cand_len if continuing else 0
                need = 1 if cand in (RETIRED, NONE) else th.confirm_steps
                length = b - seg_start
                if cand != c.diag and base + length >= need:
                    at = seg_start + max(0, need - base - 1)  # the row where it is confirmed
                    r = int(rows[at])
                    figs = _figures(figures, r, j)
                    changes.append(Change(j, int(steps[r]), run_since, _name(cand), _name(c.diag), figs))
                    c.diag, c.since, c.figures = cand, run_since, figs
                c.cand, c.cand_since, c.cand_len = cand, run_since, base + length
            seg_start = b
        if c.diag != NONE:
            c.figures = _figures(figures, int(rows[-1]), j)  # the figures as of the latest step
    changes.sort(key=lambda ch: ch.step)
    return changes


def _name(code: int) -> str | None:
    return None if code == NONE else DIAGNOSES[code]


def _figures(figures: dict[str, F], r: int, j: int) -> dict[str, Any]:
    return {name: _j(float(v[r, j])) for name, v in figures.items()}


def code_of(name: str) -> int:
    return _CODE[name]
