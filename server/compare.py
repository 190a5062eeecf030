"""Comparing runs: overlay one metric, per-arm small multiples, what differs, and a summary.

Overall accuracy at a step is the completion-weighted mean over arms: sum_j acc_j * n_j / sum_j n_j
(arms without completions at that step do not count), kept per step on ingest (run_steps.graded and
.correct). "Steps to reach" a target uses a trailing mean over `SMOOTH_WINDOW` steps of the overall
accuracy, so one lucky batch does not count. Charts are downsampled keeping each bucket's min and max:
per-arm series through the rollups (`server.store.series`), overall accuracy with tsdownsample; so comparing
long runs reads a few rows per chart point, not every arm's every step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from sqlalchemy.orm import Session
from tsdownsample import MinMaxDownsampler

from server.errors import InvalidRequest
from server.models import Metric
from server.store import compare as compare_store
from server.store import runs as run_store
from server.store import series as series_store
from server.store.sql import run_id

CompareMetric = Literal["overall_accuracy", "accuracy", "probability"]
METRICS: tuple[CompareMetric, ...] = ("overall_accuracy", "accuracy", "probability")
METRIC_LABELS = {
    "overall_accuracy": "overall accuracy (completion-weighted over arms)",
    "accuracy": "accuracy of one arm",
    "probability": "sampling probability of one arm",
}
SMOOTH_WINDOW = 10
MAX_RUNS = 12
Trace_xy = tuple[list[int], list[float]]


@dataclass(frozen=True, slots=True)
class Trace:
    run: str
    steps: list[int]
    values: list[float]

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "steps": self.steps, "values": self.values}


@dataclass(slots=True)
class ComparedRun:
    """One run of a comparison: where it ended and how fast it reached the target."""

    run: str
    scheduler: str
    status: str
    last_step: int
    final_overall: float | None
    steps_to_target: int | None
    final_by_arm: dict[str, float | None] = field(default_factory=dict)


@dataclass(slots=True)
class Comparison:
    runs: list[str]
    metric: CompareMetric
    arm: str | None
    target: float
    arms: list[str]
    overlay: list[Trace]
    small: dict[str, list[Trace]]
    summaries: list[ComparedRun]
    differing: list[tuple[str, list[str]]]
    all_keys: list[tuple[str, list[str]]]

    def chart_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "arm": self.arm, "overlay": [t.as_json() for t in self.overlay],
            "arms": {a: [t.as_json() for t in ts] for a, ts in self.small.items()},
        }


def parse_runs(values: list[str]) -> list[str]:
    """`runs=a,b` and `runs=a&runs=b` alike; order kept, duplicates dropped."""
    out: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    if len(out) > MAX_RUNS:
        raise InvalidRequest(f"compare at most {MAX_RUNS} runs at once, got {len(out)}")
    return out


def trailing_mean(values: np.ndarray[Any, Any], window: int = SMOOTH_WINDOW) -> np.ndarray[Any, Any]:
    """At each step, the mean of the last `window` values seen so far (NaN values skipped; NaN before any)."""
    valid = ~np.isnan(values)
    sums = np.concatenate([[0.0], np.cumsum(values[valid])])
    seen = np.cumsum(valid)
    first = np.maximum(seen - window, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sums[seen] - sums[first]) / (seen - first)
    out[seen == 0] = np.nan
    return np.asarray(out, dtype=np.float64)


def downsample(steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any], max_points: int) -> Trace_xy:
    """At most `max_points` of the (step, value) points, NaN dropped, keeping each bucket's min and max
    (tsdownsample's MinMax), so no spike disappears."""
    keep = ~np.isnan(values)
    steps, values = steps[keep], values[keep]
    if steps.size > max_points:
        idx = MinMaxDownsampler().downsample(  # type: ignore[no-untyped-call]
            steps, values, n_out=max_points - max_points % 2
        )
        steps, values = steps[idx], values[idx]
    return steps.tolist(), values.tolist()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


def compare(
    session: Session,
    runs: list[str],
    metric: CompareMetric,
    arm: str | None,
    target: float,
    stale_seconds: float,
    max_points: int = 2000,
    small_points: int = 400,
) -> Comparison:
    if metric not in METRICS:
        raise InvalidRequest(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0.0 <= target <= 1.0:
        raise InvalidRequest(f"target accuracy must be in [0, 1], got {target}")
    details = [run_store.get_run(session, r, stale_seconds) for r in runs]
    arms: list[str] = []
    for d in details:
        arms.extend(a.name for a in d.arms if a.name not in arms)
    if metric != "overall_accuracy":
        if arm is None and arms:
            arm = arms[0]
        if arm is not None and arm not in arms:
            raise InvalidRequest(f"none of these runs has an arm {arm!r}; their arms are: {', '.join(arms)}")
    overlay: list[Trace] = []
    summaries: list[ComparedRun] = []
    for d in details:
        rid = run_id(session, d.name)
        steps, overall = compare_store.graded_steps(session, rid)
        smooth = trailing_mean(overall)
        hit = np.flatnonzero(smooth >= target)
        seen = np.flatnonzero(~np.isnan(smooth))
        final = compare_store.final_accuracy(session, rid)
        summaries.append(ComparedRun(
            run=d.name, scheduler=d.scheduler, status=run_store.shown_status(d.status, d.stale), last_step=d.last_step,
            final_overall=float(smooth[seen[-1]]) if seen.size else None,
            steps_to_target=int(steps[hit[0]]) if hit.size else None,
            final_by_arm={a: final.get(a) for a in arms},
        ))
        if metric == "overall_accuracy":
            xs, ys = downsample(steps, overall, max_points)
        elif arm is not None and any(a.name == arm for a in d.arms):
            arm_metric: Metric = "probability" if metric == "probability" else "accuracy"
            (s,) = series_store.series(session, d.name, arm_metric, [arm], None, None, max_points)
            xs, ys = s.steps, s.values
        else:
            xs, ys = [], []
        overlay.append(Trace(d.name, xs, ys))
    small_metric: Metric = "probability" if metric == "probability" else "accuracy"
    small: dict[str, list[Trace]] = {a: [] for a in arms}
    for d in details:
        for s in series_store.series(session, d.name, small_metric, None, None, None, small_points):
            small[s.arm].append(Trace(d.name, s.steps, s.values))
    flat: list[dict[str, str]] = []
    for d in details:
        f: dict[str, str] = {"scheduler": d.scheduler, "project": d.project}
        for name, value in (("params", d.params), ("config", d.config)):
            if value:  # an empty mapping adds no key (rather than a "{}" that differs from every key)
                _flatten(name, value, f)
        flat.append(f)
    keys = sorted({k for f in flat for k in f})
    all_keys = [(k, [f.get(k, "—") for f in flat]) for k in keys]
    differing = [(k, vals) for k, vals in all_keys if len(set(vals)) > 1]
    return Comparison(
        runs=runs, metric=metric, arm=arm if metric != "overall_accuracy" else None, target=target, arms=arms,
        overlay=overlay, small=small, summaries=summaries, differing=differing, all_keys=all_keys,
    )
