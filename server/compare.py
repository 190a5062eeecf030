"""Comparing runs: one metric overlaid, steps to a target and the ranking they imply, override markers,
per-arm small multiples, and what differs between the runs.

The metrics:

- evaluation `eval:<name>` (the default when the runs have one): at each evaluation, the unweighted mean
  of the arms' accuracies on eval set `name` (`agent.log_eval`).
- `train_mean`: at each step, the unweighted mean over arms of their train accuracies, an arm not graded
  at that step counting with its last accuracy (`server.store.compare.mean_arm_accuracy`). It does not
  move with the mix the scheduler chose.
- `train_weighted`: the completion-weighted train accuracy sum_j acc_j n_j / sum_j n_j. It moves with
  the mix: a scheduler that avoids hard arms scores higher without learning more.
- `accuracy` / `probability`: one arm's train accuracy or sampling probability.

Every figure is computed on the points the chart shows (downsampled for long runs, through the
rollups), smoothed with the run page's EMA (`ema` here, `SB.ema` in static/js/charts.js: the same
recurrence on the same points), so "steps to target" is where the curve on the screen crosses it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session
from tsdownsample import MinMaxDownsampler

from server.errors import InvalidRequest
from server.models import Metric
from server.store import commands as command_store
from server.store import compare as compare_store
from server.store import runs as run_store
from server.store import series as series_store
from server.store.compare import Curve
from server.store.sql import run_id

MAX_RUNS = 10
DEFAULT_TARGET = 0.8
MAX_SMOOTHING = 0.99
TRAIN_MEAN, TRAIN_WEIGHTED, ARM_ACCURACY, ARM_PROBABILITY = "train_mean", "train_weighted", "accuracy", "probability"
EVAL_PREFIX = "eval:"
# Metric names of links made before the evaluations (the weighted accuracy was "overall_accuracy").
ALIASES = {"overall_accuracy": TRAIN_WEIGHTED}
MARKERS_PER_RUN = 500
Array = np.ndarray[Any, Any]


@dataclass(frozen=True, slots=True)
class MetricChoice:
    id: str
    label: str
    needs_arm: bool = False


def metric_choices(eval_names: Sequence[str]) -> list[MetricChoice]:
    """The metrics offered for runs whose evaluation sets are `eval_names`, evaluations first."""
    return [
        *(MetricChoice(f"{EVAL_PREFIX}{n}", f"evaluation {n} (mean over arms)") for n in eval_names),
        MetricChoice(TRAIN_MEAN, "train accuracy (mean over arms, unweighted)"),
        MetricChoice(TRAIN_WEIGHTED, "train accuracy (weighted by completions)"),
        MetricChoice(ARM_ACCURACY, "train accuracy of one arm", needs_arm=True),
        MetricChoice(ARM_PROBABILITY, "sampling probability of one arm", needs_arm=True),
    ]


# ---------------------------------------------------------------------------------------------------
# The query: what the URL says, checked field by field
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompareQuery:
    runs: list[str]
    metric: str | None  # None: the default for these runs
    arm: str | None
    target: float
    smoothing: float


def _field_error(fields: dict[str, str]) -> InvalidRequest:
    """One error for the form: the first message, and each field's own (`details["fields"]`)."""
    return InvalidRequest(next(iter(fields.values())), fields=fields)


def _number(raw: str, what: str, default: float, lo: float, hi: float, errors: dict[str, str], key: str) -> float:
    raw = raw.strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and lo <= value <= hi):
        errors[key] = f"{what} must be a number from {lo:g} to {hi:g}, got {raw!r}"
        return default
    return value


def selected_runs(values: Sequence[str]) -> list[str]:
    """`runs=a,b` and `runs=a&runs=b` alike; order kept, duplicates dropped."""
    names: list[str] = []
    for v in values:
        for name in v.split(","):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def parse_query(runs: Sequence[str], metric: str, arm: str, target: str, smoothing: str) -> CompareQuery:
    """The compare page's parameters as the URL gives them. InvalidRequest with `details["fields"]`
    (field -> message) when bad."""
    errors: dict[str, str] = {}
    names = selected_runs(runs)
    if len(names) > MAX_RUNS:
        errors["runs"] = f"compare at most {MAX_RUNS} runs at once; {len(names)} are selected"
    metric = ALIASES.get(metric.strip(), metric.strip())
    known = (TRAIN_MEAN, TRAIN_WEIGHTED, ARM_ACCURACY, ARM_PROBABILITY)
    if metric and metric not in known and not (metric.startswith(EVAL_PREFIX) and len(metric) > len(EVAL_PREFIX)):
        errors["metric"] = (f"unknown metric {metric!r}: choose {', '.join(known)} or an evaluation "
                            f"({EVAL_PREFIX}NAME)")
    query = CompareQuery(
        runs=names, metric=metric or None, arm=arm.strip() or None,
        target=_number(target, "the target", DEFAULT_TARGET, 0.0, 1.0, errors, "target"),
        smoothing=_number(smoothing, "smoothing", 0.0, 0.0, MAX_SMOOTHING, errors, "smoothing"),
    )
    if errors:
        raise _field_error(errors)
    return query


def form_values(result: Comparison | None, typed: dict[str, str], errors: dict[str, str]) -> dict[str, str]:
    """What the form shows: the comparison's settings, or what was typed (with the defaults for blanks)."""
    if result is not None and not errors:
        return {"metric": result.metric, "arm": result.arm or "", "target": f"{result.target:g}",
                "smoothing": f"{result.smoothing:g}"}
    return {"metric": ALIASES.get(typed["metric"], typed["metric"]), "arm": typed["arm"],
            "target": typed["target"] or f"{DEFAULT_TARGET:g}", "smoothing": typed["smoothing"] or "0"}


# ---------------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------------


def ema(values: Sequence[float], weight: float) -> list[float]:
    """The run page's smoothing (static/js/charts.js `SB.ema`): s_0 = v_0, s_i = w s_(i-1) + (1 - w) v_i,
    over the points as shown. Kept identical to it; a browser test compares the two on the page."""
    out: list[float] = []
    s: float | None = None
    for v in values:
        s = v if s is None or not weight else weight * s + (1 - weight) * v
        out.append(s)
    return out


def downsample(steps: Array, values: Array, max_points: int) -> tuple[list[int], list[float]]:
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


@dataclass(frozen=True, slots=True)
class Trace:
    run: str
    steps: list[int]
    values: list[float]

    def as_json(self) -> dict[str, Any]:
        return {"run": self.run, "steps": self.steps, "values": self.values}


@dataclass(frozen=True, slots=True)
class Marker:
    """An applied command of a run, at the step it took effect."""

    run: str
    step: int
    label: str
    arm: str


@dataclass(slots=True)
class RankedRun:
    """A run's outcome on the chosen metric, smoothed as shown."""

    run: str
    index: int  # position in the selection: the run's colour
    status: str
    last_step: int
    points: int
    steps_to_target: int | None
    final: float | None  # the last point, smoothed
    best: float | None
    rank: int = 0


@dataclass(frozen=True, slots=True)
class DiffRow:
    """A key of the runs' scheduler, params and config, with each run's value; `also`: other keys with
    the same values in every run (the demo's config.scheduler repeats scheduler)."""

    key: str
    values: list[str]
    differs: bool
    also: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Comparison:
    runs: list[str]
    metric: str
    metric_label: str
    arm: str | None
    target: float
    smoothing: float
    choices: list[MetricChoice]
    arms: list[str]
    overlay: list[Trace]
    small: dict[str, list[Trace]]
    small_label: str
    markers: list[Marker]
    ranking: list[RankedRun]
    overrides: list[list[str]]
    diff: list[DiffRow]
    bucket: int | None  # steps per point of train_mean on the longest run, when read through the rollups

    @property
    def overrides_differ(self) -> bool:
        return len({tuple(o) for o in self.overrides}) > 1

    @property
    def kind(self) -> str:
        """eval, train_mean, train_weighted, accuracy or probability."""
        return "eval" if self.metric.startswith(EVAL_PREFIX) else self.metric

    def chart_json(self) -> dict[str, Any]:
        """The page data of static/js/compare.js: `runs` (selection order: run i has colour i), `metric`,
        `label`, `target`, `smoothing` (the EMA weight), `overlay` (per run {run, steps, values}: the points
        shown, unsmoothed), `markers` ({run, step, label, arm}: applied commands), `arms` (arm -> per run
        {run, steps, values}: the small multiples)."""
        return {
            "runs": self.runs, "metric": self.metric, "label": self.metric_label, "target": self.target,
            "smoothing": self.smoothing, "overlay": [t.as_json() for t in self.overlay],
            "markers": [{"run": m.run, "step": m.step, "label": m.label, "arm": m.arm} for m in self.markers],
            "arms": {a: [t.as_json() for t in ts] for a, ts in self.small.items()},
        }


def default_metric(evals: dict[str, list[str]]) -> str:
    """An evaluation when the runs have one (the set most of them have; ties by name), else `train_mean`."""
    counts = Counter(n for names in evals.values() for n in names)
    if not counts:
        return TRAIN_MEAN
    return EVAL_PREFIX + min(counts, key=lambda n: (-counts[n], n))


def compare(
    session: Session,
    query: CompareQuery,
    stale_seconds: float,
    max_points: int = 2000,
    small_points: int = 400,
) -> Comparison:
    """The comparison of `query.runs`; InvalidRequest with `details["fields"]` for an unknown run, metric
    or arm."""
    check_runs(session, query.runs)
    details = [run_store.get_run(session, r, stale_seconds) for r in query.runs]
    rids = [run_id(session, r) for r in query.runs]
    evals = {d.name: names for d, names in zip(details, _eval_names(session, rids), strict=True)}
    names = sorted({n for ns in evals.values() for n in ns})
    choices = metric_choices(names)
    metric = query.metric or default_metric(evals)
    choice = next((c for c in choices if c.id == metric), None)
    if choice is None:
        have = ", ".join(names) if names else "none"
        raise _field_error({"metric": f"none of these runs has an evaluation {metric[len(EVAL_PREFIX):]!r} "
                                      f"(their evaluations: {have})"})
    train_arms: list[str] = []
    for d in details:
        train_arms.extend(a.name for a in d.arms if a.name not in train_arms)
    arm = query.arm if choice.needs_arm else None
    if choice.needs_arm:
        arm = arm or (train_arms[0] if train_arms else None)
        if arm is not None and arm not in train_arms:
            raise _field_error({"arm": f"none of these runs has an arm {arm!r}; their arms: {', '.join(train_arms)}"})

    per_arm: Metric = "probability" if metric == ARM_PROBABILITY else "accuracy"
    overlay: list[Trace] = []
    small: dict[str, list[Trace]] = {}
    buckets: list[int] = []
    for d, rid in zip(details, rids, strict=True):
        if metric.startswith(EVAL_PREFIX):
            got = compare_store.eval_set(session, rid, metric[len(EVAL_PREFIX):])
            overlay.append(Trace(d.name, *_points(got.mean, max_points)))
            for a, curve in got.by_arm.items():
                small.setdefault(a, []).append(Trace(d.name, *_points(curve, small_points)))
            continue
        if metric == TRAIN_MEAN:
            curve = compare_store.mean_arm_accuracy(session, rid, d.last_step, max_points)
            buckets.extend([curve.bucket] if curve.bucket else [])
            overlay.append(Trace(d.name, *_points(curve, max_points)))
        elif metric == TRAIN_WEIGHTED:
            overlay.append(Trace(d.name, *downsample(*compare_store.graded_steps(session, rid), max_points)))
        elif arm is not None and any(a.name == arm for a in d.arms):
            (s,) = series_store.series(session, d.name, per_arm, [arm], None, None, max_points)
            overlay.append(Trace(d.name, s.steps, s.values))
        else:
            overlay.append(Trace(d.name, [], []))
        for s in series_store.series(session, d.name, per_arm, None, None, None, small_points):
            small.setdefault(s.arm, []).append(Trace(d.name, s.steps, s.values))
    arms = train_arms if not metric.startswith(EVAL_PREFIX) else sorted(small)

    markers = _markers(session, query.runs)
    return Comparison(
        runs=query.runs, metric=metric, metric_label=choice.label, arm=arm, target=query.target,
        smoothing=query.smoothing, choices=choices, arms=arms, overlay=overlay,
        small={a: small.get(a, []) for a in arms},
        small_label=("evaluation accuracy" if metric.startswith(EVAL_PREFIX)
                     else "sampling probability" if metric == ARM_PROBABILITY else "train accuracy"),
        markers=markers, ranking=rank(overlay, details, query.target, query.smoothing),
        overrides=[[f"{m.label} at step {m.step}" for m in markers if m.run == r] for r in query.runs],
        diff=differences(details), bucket=max(buckets) if buckets else None,
    )


def check_runs(session: Session, runs: Sequence[str]) -> None:
    """InvalidRequest (field `runs`) naming the runs that do not exist."""
    missing = [r for r in runs if r not in run_store.last_steps(session, runs)]
    if missing:
        raise _field_error({"runs": f"no run named {', '.join(repr(r) for r in missing)}"})


def _eval_names(session: Session, rids: list[int]) -> list[list[str]]:
    got = compare_store.eval_names(session, rids)
    return [got.get(rid, []) for rid in rids]


def _points(curve: Curve, max_points: int) -> tuple[list[int], list[float]]:
    return downsample(curve.steps, curve.values, max_points)


def _markers(session: Session, runs: list[str]) -> list[Marker]:
    """Each run's applied commands, oldest first (the audit log, server.store.commands)."""
    out: list[Marker] = []
    for r in runs:
        out.extend(
            Marker(run=r, step=c.applied_step, label=c.label, arm=c.arm)
            for c in reversed(command_store.list_commands(session, r, MARKERS_PER_RUN))
            if c.status == "applied" and c.applied_step is not None
        )
    return out


def rank(
    overlay: list[Trace], details: Sequence[run_store.RunView], target: float, smoothing: float
) -> list[RankedRun]:
    """Each run's steps to `target` on its smoothed points (the first step where the curve as shown reaches
    it), ranked: runs that reached it, fewest steps first (ties: higher final value); then the others,
    higher final value first; runs without points last."""
    out: list[RankedRun] = []
    for i, (t, d) in enumerate(zip(overlay, details, strict=True)):
        smooth = ema(t.values, smoothing)
        hit = next((s for s, v in zip(t.steps, smooth, strict=True) if v >= target), None)
        out.append(RankedRun(
            run=t.run, index=i, status=run_store.shown_status(d.status, d.stale), last_step=d.last_step,
            points=len(smooth), steps_to_target=hit, final=smooth[-1] if smooth else None,
            best=max(smooth) if smooth else None,
        ))

    def key(r: RankedRun) -> tuple[int, float, float]:
        final = -(r.final if r.final is not None else 0.0)
        if r.steps_to_target is not None:
            return 0, r.steps_to_target, final
        return (1, final, 0.0) if r.final is not None else (2, 0.0, 0.0)

    out.sort(key=key)
    for n, r in enumerate(out, 1):
        r.rank = n
    return out


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


def differences(details: Sequence[run_store.RunView]) -> list[DiffRow]:
    """The runs' scheduler, project, params and config, one row per key. A config key whose last part and
    values (in every run) repeat those of scheduler, project or a params key is folded into that row
    (`also`): the demo's config.scheduler and config.scheduler_params.c say what scheduler and params.c
    say."""
    flat: list[dict[str, str]] = []
    for d in details:
        f: dict[str, str] = {"scheduler": d.scheduler, "project": d.project}
        for name, value in (("params", d.params), ("config", d.config)):
            if value:  # an empty mapping adds no key (rather than a "{}" that differs from every key)
                _flatten(name, value, f)
        flat.append(f)
    keys: list[str] = []
    for f in flat:
        keys.extend(k for k in f if k not in keys)
    order = {"scheduler": 0, "project": 1, "params": 2, "config": 3}
    keys.sort(key=lambda k: (order.get(k.split(".", 1)[0], 4), k))
    rows: list[DiffRow] = []
    seen: dict[tuple[str, tuple[str, ...]], DiffRow] = {}
    for k in keys:
        values = [f.get(k, "—") for f in flat]
        said = (k.rsplit(".", 1)[-1], tuple(values))
        if k.startswith("config.") and said in seen:
            seen[said].also.append(k)
            continue
        row = DiffRow(k, values, len(set(values)) > 1)
        if not k.startswith("config."):
            seen.setdefault(said, row)
        rows.append(row)
    return rows
