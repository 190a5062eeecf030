"""Comparing runs: overlay one metric, per-arm small multiples, what differs, and a summary.

Overall accuracy at a step is the completion-weighted mean over arms: sum_j acc_j * n_j / sum_j n_j
(arms without completions at that step do not count). "Steps to reach" a target uses a trailing
mean over `SMOOTH_WINDOW` steps of the overall accuracy, so one lucky batch does not count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.orm import Session

from server import reports, store
from server.errors import InvalidRequest

CompareMetric = Literal["overall_accuracy", "accuracy", "probability"]
METRICS: tuple[CompareMetric, ...] = ("overall_accuracy", "accuracy", "probability")
METRIC_LABELS = {
    "overall_accuracy": "overall accuracy (completion-weighted over arms)",
    "accuracy": "accuracy of one arm",
    "probability": "sampling probability of one arm",
}
SMOOTH_WINDOW = 10
MAX_RUNS = 12


@dataclass(frozen=True, slots=True)
class Trace:
    run: str
    steps: list[int]
    values: list[float | None]

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "steps": self.steps, "values": self.values}


@dataclass(slots=True)
class RunSummary:
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
    summaries: list[RunSummary]
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


def overall_accuracy(traces: dict[str, reports.ArmTrace]) -> tuple[list[int], list[float | None]]:
    num: dict[int, float] = {}
    den: dict[int, int] = {}
    for t in traces.values():
        for s, a, n in zip(t.steps, t.accuracy, t.n_step, strict=True):
            den.setdefault(s, 0)
            num.setdefault(s, 0.0)
            if a is not None and n > 0:
                num[s] += a * n
                den[s] += n
    steps = sorted(den)
    return steps, [num[s] / den[s] if den[s] else None for s in steps]


def trailing_mean(values: list[float | None], window: int = SMOOTH_WINDOW) -> list[float | None]:
    out: list[float | None] = []
    buf: list[float] = []
    for v in values:
        if v is not None:
            buf.append(v)
            if len(buf) > window:
                buf.pop(0)
        out.append(sum(buf) / len(buf) if buf else None)
    return out


def _thin(steps: list[int], values: list[float | None], max_points: int) -> tuple[list[int], list[float | None]]:
    if len(steps) <= max_points:
        return steps, values
    stride = -(-len(steps) // max_points)
    keep = list(range(0, len(steps), stride))
    if keep[-1] != len(steps) - 1:
        keep.append(len(steps) - 1)
    return [steps[i] for i in keep], [values[i] for i in keep]


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


def _metric_of(t: reports.ArmTrace, metric: CompareMetric) -> list[float | None]:
    if metric == "probability":
        return list(t.probability)
    return list(t.accuracy)


def compare(
    session: Session,
    runs: list[str],
    metric: CompareMetric,
    arm: str | None,
    target: float,
    stale_seconds: float,
    max_points: int = 2000,
) -> Comparison:
    if metric not in METRICS:
        raise InvalidRequest(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not 0.0 <= target <= 1.0:
        raise InvalidRequest(f"target accuracy must be in [0, 1], got {target}")
    details = [store.get_run(session, r, stale_seconds) for r in runs]
    traces = {r: reports.arm_traces(session, r) for r in runs}
    arms: list[str] = []
    for d in details:
        arms.extend(a.name for a in d.arms if a.name not in arms)
    if metric != "overall_accuracy":
        if arm is None and arms:
            arm = arms[0]
        if arm is not None and arm not in arms:
            raise InvalidRequest(f"none of these runs has an arm {arm!r}; their arms are: {', '.join(arms)}")
    overlay: list[Trace] = []
    summaries: list[RunSummary] = []
    for d in details:
        tr = traces[d.name]
        steps, overall = overall_accuracy(tr)
        smooth = trailing_mean(overall)
        reached = next((s for s, v in zip(steps, smooth, strict=True) if v is not None and v >= target), None)
        summaries.append(RunSummary(
            run=d.name, scheduler=d.scheduler, status="stale" if d.stale else d.status, last_step=d.last_step,
            final_overall=next((v for v in reversed(smooth) if v is not None), None), steps_to_target=reached,
            final_by_arm={
                a: next((v for v in reversed(tr[a].accuracy) if v is not None), None) if a in tr else None
                for a in arms
            },
        ))
        if metric == "overall_accuracy":
            xs, ys = _thin(steps, overall, max_points)
        elif arm is not None and arm in tr:
            xs, ys = _thin(tr[arm].steps, _metric_of(tr[arm], metric), max_points)
        else:
            xs, ys = [], []
        overlay.append(Trace(d.name, xs, ys))
    small_metric: CompareMetric = "probability" if metric == "probability" else "accuracy"
    small: dict[str, list[Trace]] = {}
    for a in arms:
        small[a] = []
        for d in details:
            t = traces[d.name].get(a)
            if t is not None:
                xs, ys = _thin(t.steps, _metric_of(t, small_metric), max_points)
                small[a].append(Trace(d.name, xs, ys))
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
