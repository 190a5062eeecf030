"""Rollups kept on ingest: per arm and bucket of steps, n/min/max/sum/last of each metric
(`arm_rollups`, at every width of ROLLUP_WIDTHS) and of each numeric score part (`part_rollups`, at
PART_ROLLUP_WIDTHS), so a chart of a long run reads a few rows per point (see `server.store.series`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Connection

from server.models import METRICS, PART_NAME_MAX, PART_ROLLUP_WIDTHS, ROLLUP_WIDTHS, arm_rollups, part_rollups
from server.store.sql import upsert

# The layout of the rows merge_rollups reads: the numeric columns of arm_steps, in this order.
NUMERIC_COLS = (
    "run_id", "arm_id", "step", "probability", "score", "n_step", "n_total", "mean_abs_adv", "mean_reward",
    "accuracy", "zero_var", "pass_partial",
)


def merge_rollups(conn: Connection, nums: list[tuple[Any, ...]], parts_of: list[dict[str, Any]]) -> None:
    """Merge a batch's new arm_steps rows (`nums`, NUMERIC_COLS each) into arm_rollups and their numeric
    score parts (`parts_of`, one mapping per row) into part_rollups.

    Only rows inserted by the caller's transaction may reach here (ingest skips a step already stored
    whole), so adding their sums and counts stays exact under re-delivery. Aggregated with numpy from
    memory rather than re-read with SQL: same result, a fraction of the cost.
    """
    a = np.array(nums, dtype=np.float64)  # None becomes NaN
    n = len(a)
    run, arm, step = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64)
    # Sorted by (run, arm, step), the rows of every bucket of every width are contiguous: one sort.
    order = np.lexsort((step, arm, run))
    a, run, arm, step = a[order], run[order], arm[order], step[order]
    parts = _part_columns(parts_of, order)
    # Per column, one numpy array per width (NaN: no value), joined once at the end.
    cols: dict[str, list[Any]] = defaultdict(list)
    part_cols: dict[str, list[Any]] = defaultdict(list)
    for width in ROLLUP_WIDTHS:
        bucket, starts, ends = _buckets((run, arm), step, width)
        if width in PART_ROLLUP_WIDTHS:
            _part_rollup_rows(part_cols, parts, run, arm, step, width, bucket, starts)
        cols["run_id"].append(run[starts])
        cols["arm_id"].append(arm[starts])
        cols["width"].append(np.full(len(starts), width, dtype=np.int64))
        cols["bucket"].append(bucket[starts])
        cols["first_step"].append(step[starts])
        cols["last_step"].append(step[ends])
        cols["n_rows"].append(np.diff(np.append(starts, n)))
        for m in METRICS:
            vals = a[:, NUMERIC_COLS.index(m)]
            _, has, vmin, vmax, vsum = _bucket_stats(vals, starts)
            cols[f"{m}_n"].append(has)
            cols[f"{m}_min"].append(vmin)  # NaN where the bucket has no value
            cols[f"{m}_max"].append(vmax)
            cols[f"{m}_sum"].append(np.where(has > 0, vsum, np.nan))
            cols[f"{m}_last"].append(vals[ends])
    upsert(conn, arm_rollups, _joined(cols), _ROLLUP_MERGE)
    if part_cols:
        upsert(conn, part_rollups, _joined(part_cols), _PART_ROLLUP_MERGE)


def _joined(cols: dict[str, list[Any]]) -> dict[str, Any]:
    """Each column's pieces as one array (a list for the part names)."""
    return {c: np.concatenate(v) if isinstance(v[0], np.ndarray) else [x for piece in v for x in piece]
            for c, v in cols.items()}


# How a rollup row merges into the stored one (see sql.upsert). min/max/sum columns are NULL where a
# bucket has no value yet.
_NULLABLE_MIN = "COALESCE({least}({t}.{c}, {x}.{c}), {t}.{c}, {x}.{c})"
_NULLABLE_MAX = "COALESCE({greatest}({t}.{c}, {x}.{c}), {t}.{c}, {x}.{c})"
_NULLABLE_SUM = "COALESCE({t}.{c} + {x}.{c}, {t}.{c}, {x}.{c})"
_ADD = "{t}.{c} + {x}.{c}"
_BUCKET_SPAN = {"first_step": "{least}({t}.{c}, {x}.{c})", "last_step": "{greatest}({t}.{c}, {x}.{c})"}
_ROLLUP_MERGE: dict[str, str] = {
    **_BUCKET_SPAN,
    "n_rows": _ADD,
    **{
        f"{m}_{agg}": merge
        for m in METRICS
        for agg, merge in (
            ("n", _ADD), ("min", _NULLABLE_MIN), ("max", _NULLABLE_MAX), ("sum", _NULLABLE_SUM),
            ("last", "CASE WHEN {x}.last_step >= {t}.last_step THEN {x}.{c} ELSE {t}.{c} END"),
        )
    },
}
_PART_ROLLUP_MERGE: dict[str, str] = {
    **_BUCKET_SPAN, "value_n": _ADD, "value_min": _NULLABLE_MIN, "value_max": _NULLABLE_MAX, "value_sum": _ADD,
}


def _buckets(
    keys: Sequence[np.ndarray[Any, Any]], step: np.ndarray[Any, Any], width: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Rows sorted by (*keys, step) -> their bucket of `width` steps, and each group's first and last row
    (a group: the rows of one bucket with the same keys)."""
    n = step.size
    bucket = step // width
    brk = np.ones(n, dtype=bool)
    brk[1:] = bucket[1:] != bucket[:-1]
    for k in keys:
        brk[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(brk)
    return bucket, starts, np.append(starts[1:], n) - 1


def _part_columns(parts_of: list[dict[str, Any]], order: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Each numeric score part of the batch's rows as a float column (NaN where a row lacks it), in `order`.

    Parts whose name is longer than PART_NAME_MAX, or whose values are not numbers, stay in
    arm_steps.parts only.
    """
    cols: dict[str, np.ndarray[Any, Any]] = {}
    for name in sorted(set().union(*parts_of)):
        if len(name) > PART_NAME_MAX:
            continue
        got = [p.get(name) for p in parts_of]
        try:
            col = np.array(got, dtype=np.float64)  # None becomes NaN
        except (TypeError, ValueError):
            col = np.array([v if isinstance(v, int | float) else None for v in got], dtype=np.float64)
        col[~np.isfinite(col)] = np.nan
        cols[name] = col[order]
    return cols


def _part_rollup_rows(
    out: dict[str, list[Any]], parts: dict[str, np.ndarray[Any, Any]], run: np.ndarray[Any, Any],
    arm: np.ndarray[Any, Any], step: np.ndarray[Any, Any], width: int, bucket: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
) -> None:
    """Append to `out` (part_rollups columns) the buckets of one width in which each part has values."""
    for name, vals in parts.items():
        present, has, vmin, vmax, vsum = _bucket_stats(vals, starts)
        some = np.flatnonzero(has > 0)
        if not some.size:
            continue
        # A bucket's first and last step with a value: the first/last step of the rows that have one.
        pos = np.where(present, np.arange(step.size), -1)
        last_row = np.maximum.reduceat(pos, starts)
        first_row = np.minimum.reduceat(np.where(present, pos, step.size), starts)
        out["run_id"].append(run[starts][some])
        out["arm_id"].append(arm[starts][some])
        out["part"].append([name] * some.size)
        out["width"].append(np.full(some.size, width, dtype=np.int64))
        out["bucket"].append(bucket[starts][some])
        out["first_step"].append(step[first_row[some]])
        out["last_step"].append(step[last_row[some]])
        out["value_n"].append(has[some])
        out["value_min"].append(vmin[some])
        out["value_max"].append(vmax[some])
        out["value_sum"].append(vsum[some])


def _bucket_stats(vals: np.ndarray[Any, Any], starts: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """Per group starting at `starts` (NaN = no value): which rows have a value, and each group's count,
    min, max and sum of values (min/max NaN and sum 0 where a group has none)."""
    present = ~np.isnan(vals)
    return (
        present,
        np.add.reduceat(present.astype(np.int64), starts),
        np.fmin.reduceat(vals, starts),
        np.fmax.reduceat(vals, starts),
        np.add.reduceat(np.where(present, vals, 0.0), starts),
    )
