"""Chart series of a run: per arm, a metric or a score part over steps, downsampled so that every
bucket keeps its min and its max (no spike disappears), from raw rows, SQL buckets or the rollups
(`server.store.rollups`) by range length; and the steps' trainer metrics and wall times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Float, Table, func, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from server.errors import InvalidRequest
from server.models import PART_NAME_MAX, PART_ROLLUP_WIDTHS, ROLLUP_WIDTHS, Metric, arm_rollups, part_rollups
from server.store.sql import ARM_STEPS, ARMS, RUN_STEPS, RUNS, fetch_array, run_row


@dataclass(frozen=True, slots=True)
class ArmPoints:
    """One arm's points of a metric: `steps` and `values` side by side."""

    arm: str
    steps: list[int]
    values: list[float]
    downsampled: bool  # each bucket kept only its min and max points


@dataclass(frozen=True, slots=True)
class PartPoints:
    """One arm's points of one part of its scheduler score."""

    arm: str
    part: str
    steps: list[int]
    values: list[float]
    downsampled: bool


@dataclass(frozen=True, slots=True)
class StepMetrics:
    """The trainer's metrics at one step."""

    step: int
    ts: float
    seq: int
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StepTimeline:
    """Every stored step of a run and its wall time (unix seconds), as two arrays."""

    run: str
    steps: list[int]
    ts: list[float]


@dataclass(frozen=True, slots=True)
class _Source:
    """Where one charted quantity lives: its raw value per arm_steps row, and its rollup columns."""

    raw: Any  # SQL expression on arm_steps
    table: Table  # arm_rollups or part_rollups
    prefix: str  # the rollup columns are {prefix}_n/_min/_max/_sum
    widths: tuple[int, ...]  # the bucket widths kept, finest first
    where: tuple[Any, ...] = ()  # more rollup filters (the part's name)


def _metric_source(metric: Metric) -> _Source:
    return _Source(ARM_STEPS.c[metric], arm_rollups, metric, ROLLUP_WIDTHS)


def _part_source(part: str) -> _Source:
    return _Source(ARM_STEPS.c.parts[part].as_float(), part_rollups, "value", PART_ROLLUP_WIDTHS,
                   (part_rollups.c.part == part,))


@dataclass(frozen=True, slots=True)
class _RunArms:
    """What a chart read needs of a run: its id, last step, and the chosen arms' (id, name)."""

    id: int
    last_step: int
    arms: list[tuple[int, str]]
    pruned: bool = False  # its raw rows were dropped (server.store.retention): rollups only


def _chosen_arms(session: Session, run: str, arms: Sequence[str] | None) -> _RunArms:
    # Core selects: no ORM objects on the charts' hot path.
    row = run_row(session, run, RUNS.c.id, RUNS.c.last_step, RUNS.c.raw_pruned_at)
    pruned = row.raw_pruned_at is not None
    all_arms = [(int(i), str(n)) for i, n in session.execute(
        select(ARMS.c.id, ARMS.c.name).where(ARMS.c.run_id == row.id).order_by(ARMS.c.position, ARMS.c.id))]
    if not arms:
        return _RunArms(row.id, row.last_step, all_arms, pruned)
    by_name = {n: (i, n) for i, n in all_arms}
    unknown = [a for a in arms if a not in by_name]
    if unknown:
        raise InvalidRequest(
            f"run {run!r} has no arm {unknown[0]!r}; its arms are: {', '.join(sorted(by_name))}",
            unknown=unknown,
        )
    return _RunArms(row.id, row.last_step, [by_name[a] for a in arms], pruned)


def series(session: Session, run: str, metric: Metric, arms: Sequence[str] | None, start: int | None, end: int | None,
           max_points: int) -> list[ArmPoints]:
    """Per arm, (step, value) of `metric` over [start, end], at most `max_points` points per arm.

    Every bucket keeps its min and its max, so no spike disappears. Three ways, by range length:
    a range of at most `max_points` steps returns the raw rows; a long range (enough rollup buckets
    for the chart) reads `arm_rollups` (kept on ingest at each of ROLLUP_WIDTHS) from the coarsest
    width that has enough buckets, so a 100,000-step run reads a few hundred rows per arm; in between,
    the raw rows are bucketed in SQL.
    When bucketed, a bucket's min and max are placed at its first and last step, in the order its
    trend suggests (zooming in gives exact positions).
    """
    r = _chosen_arms(session, run, arms)
    data = _downsampled(session.connection(), r, _metric_source(metric), [i for i, _ in r.arms], start, end,
                        max_points)
    return [
        ArmPoints(arm=name, steps=st.tolist(), values=v.tolist(), downsampled=d)
        for name, (st, v, d) in ((name, data[i]) for i, name in r.arms)
    ]


def part_names(conn: Connection, run_id: int, pruned: bool = False) -> list[str]:
    """The score parts a run reports (read from its latest step, or its part rollups once pruned)."""
    if pruned:
        t = part_rollups.c
        q = select(t.part).where(t.run_id == run_id, t.width == PART_ROLLUP_WIDTHS[-1]).distinct()
        return sorted(str(p) for p, in conn.execute(q))
    row = conn.execute(
        select(ARM_STEPS.c.parts).where(ARM_STEPS.c.run_id == run_id).order_by(ARM_STEPS.c.step.desc()).limit(1)
    ).first()
    return sorted(str(k) for k in (row[0] or {})) if row else []


def part_series(session: Session, run: str, arms: Sequence[str] | None, start: int | None, end: int | None,
                max_points: int) -> list[PartPoints]:
    """Per arm and numeric part of its scheduler score (DUMP: mu and bonus), downsampled like `series`
    (from part_rollups over long ranges): every bucket keeps its min and max."""
    r = _chosen_arms(session, run, arms)
    conn = session.connection()
    ids = [i for i, _ in r.arms]
    by_part = {
        p: _downsampled(conn, r, _part_source(p), ids, start, end, max_points)
        for p in part_names(conn, r.id, r.pruned) if len(p) <= PART_NAME_MAX
    }
    return [
        PartPoints(arm=name, part=p, steps=st.tolist(), values=v.tolist(), downsampled=d)
        for i, name in r.arms
        for p, data in by_part.items()
        for st, v, d in (data[i],)
        if st.size
    ]


def _downsampled(conn: Connection, r: _RunArms, src: _Source, ids: list[int], start: int | None, end: int | None,
                 max_points: int) -> dict[int, _SeriesData]:
    if not ids:
        return {}
    lo = 0 if start is None else start
    hi = r.last_step if end is None else min(end, max(r.last_step, 0))
    if hi < lo:
        return dict.fromkeys(ids, _EMPTY)
    span = hi - lo + 1
    pairs = max(2, max_points // 2)  # buckets per arm, two points each
    if r.pruned:
        return bucket_points(_pruned_rows(conn, r.id, src, ids, lo, hi, pairs), ids)
    if span <= max_points:
        return _series_rows(conn, r.id, src, ids, lo, hi)
    finest = src.widths[0]
    if span // finest >= pairs // 4 or span * len(ids) > SERIES_SQL_BUCKET_ROWS:
        # The coarsest width that still gives at least half the buckets wanted: few rows, no merging.
        widths = [w for w in src.widths if w == finest or span // w >= pairs // 2]
        return bucket_points(_rollup_rows(conn, r.id, src, ids, lo, hi, pairs, widths), ids)
    return bucket_points(_bucket_rows(conn, r.id, src, ids, lo, hi, -(-span // pairs)), ids)


# Past this many raw rows in range (all chosen arms), bucketing in SQL costs more than reading rollups.
SERIES_SQL_BUCKET_ROWS = 300_000

_SeriesData = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], bool]
_EMPTY: _SeriesData = (np.zeros(0, dtype=np.int64), np.zeros(0), False)


def _series_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 ) -> dict[int, _SeriesData]:
    t = ARM_STEPS.c
    q = (
        select(t.arm_id, t.step, src.raw)
        .where(t.run_id == run_id, t.step.between(lo, hi), t.arm_id.in_(ids), src.raw.is_not(None))
        .order_by(t.step, t.arm_id)  # the key's order: no sort in SQL; grouped by arm below
    )
    a = fetch_array(conn, q, 3)
    a = a[np.argsort(a[:, 0], kind="stable")]  # by arm, each arm's rows still in step order
    arm_ids, steps, vals = a[:, 0], a[:, 1], a[:, 2]
    out = dict.fromkeys(ids, _EMPTY)
    for i in ids:
        i0, i1 = np.searchsorted(arm_ids, [i, i + 1])
        out[i] = (steps[i0:i1].astype(np.int64), vals[i0:i1], False)
    return out


def _bucket_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 width: int) -> np.ndarray[Any, Any]:
    """Raw rows of [lo, hi] bucketed in SQL, `width` steps a bucket: (arm, g, first, last, min, max, mean)."""
    t = ARM_STEPS.c
    col = src.raw
    g = ((t.step - lo) // width).label("g")
    q = (
        # avg of an integer column is NUMERIC (Decimal) on PostgreSQL: make every mean a float.
        select(t.arm_id, g, func.min(t.step), func.max(t.step), func.min(col), func.max(col),
               sql_cast(func.avg(col), Float))
        .where(t.run_id == run_id, t.step.between(lo, hi), t.arm_id.in_(ids), col.is_not(None))
        .group_by(t.arm_id, g)
    )
    return fetch_array(conn, q, 7)


def _rollup_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 groups: int, widths: Sequence[int]) -> np.ndarray[Any, Any]:
    """[lo, hi] in at most `groups` buckets per arm from the rollups of the coarsest of `widths`.

    Rollup buckets wholly inside [lo, hi] are merged `per_group` at a time in SQL; each partial bucket
    at either end is one more bucket, read from the finest width (and raw rows for what is left of it:
    two small queries whatever the level), so nothing outside the requested range is shown.
    """
    if not widths:
        return _bucket_rows(conn, run_id, src, ids, lo, hi, -(-(hi - lo + 1) // groups))
    w = widths[-1]
    b0, b1 = -(-lo // w), (hi + 1) // w - 1
    if b1 < b0:
        return _rollup_rows(conn, run_id, src, ids, lo, hi, groups, widths[:-1])
    head_end, tail_start = b0 * w - 1, (b1 + 1) * w
    edges = int(lo <= head_end) + int(tail_start <= hi)
    per_group = max(1, -(-(b1 - b0 + 1) // max(1, groups - edges)))
    parts = [_rollup_query(conn, run_id, src, ids, w, b0, b1, per_group)]
    if lo <= head_end:
        parts.append(_one_per_arm(_rollup_rows(conn, run_id, src, ids, lo, head_end, 1, widths[:1])))
    if tail_start <= hi:
        parts.append(_one_per_arm(_rollup_rows(conn, run_id, src, ids, tail_start, hi, 1, widths[:1])))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _pruned_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 groups: int) -> np.ndarray[Any, Any]:
    """[lo, hi] of a run without raw rows: the rollup buckets that overlap it, from the coarsest width that
    still gives half the buckets wanted (the finest below that: a zoom under its width shows whole buckets,
    which may reach a little past either end of the range)."""
    w = next((w for w in reversed(src.widths) if (hi - lo + 1) // w >= groups // 2), src.widths[0])
    b0, b1 = lo // w, hi // w
    return _rollup_query(conn, run_id, src, ids, w, b0, b1, max(1, -(-(b1 - b0 + 1) // groups)))


def _rollup_query(conn: Connection, run_id: int, src: _Source, ids: list[int], w: int, b0: int, b1: int,
                  per_group: int) -> np.ndarray[Any, Any]:
    """Rollup buckets b0..b1 of width `w`, merged `per_group` at a time: (arm, g, first, last, min, max, mean)."""
    t = src.table.c
    n = t[f"{src.prefix}_n"]
    vmin, vmax, vsum = t[f"{src.prefix}_min"], t[f"{src.prefix}_max"], t[f"{src.prefix}_sum"]
    where = (t.run_id == run_id, t.arm_id.in_(ids), *src.where, t.width == w, t.bucket.between(b0, b1), n > 0)
    if per_group == 1:  # one rollup row per bucket shown: read the rows as they are, no GROUP BY
        q = select(t.arm_id, t.bucket, t.first_step, t.last_step, vmin, vmax, vsum / n).where(*where)
    else:
        g = ((t.bucket - b0) // per_group).label("g")
        q = (
            select(t.arm_id, g, func.min(t.first_step), func.max(t.last_step), func.min(vmin), func.max(vmax),
                   func.sum(vsum) / func.sum(n))
            .where(*where)
            .group_by(t.arm_id, g)
        )
    return fetch_array(conn, q, 7)


def _one_per_arm(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Merge (arm, g, first, last, min, max, mean) rows into one bucket per arm."""
    if rows.shape[0] == 0:
        return rows
    arm_ids, inverse = np.unique(rows[:, 0], return_inverse=True)
    k = arm_ids.size
    out = np.empty((k, 7))
    out[:, 0] = arm_ids
    out[:, 1] = 0
    for col, ufunc, init in ((2, np.minimum, np.inf), (3, np.maximum, -np.inf), (4, np.minimum, np.inf),
                             (5, np.maximum, -np.inf)):
        acc = np.full(k, init)
        ufunc.at(acc, inverse, rows[:, col])
        out[:, col] = acc
    # The mean only orders a bucket's two points (rising or falling); an unweighted mean will do.
    out[:, 6] = np.bincount(inverse, weights=rows[:, 6], minlength=k) / np.bincount(inverse, minlength=k)
    return out


def bucket_points(rows: np.ndarray[Any, Any], ids: list[int]) -> dict[int, _SeriesData]:
    """(arm, group, first step, last step, min, max, mean) rows, any order -> two points per bucket."""
    order = np.lexsort((rows[:, 2], rows[:, 0]))
    arm_ids, _, first, last, vmin, vmax, mean = (rows[order, c] for c in range(7))
    out = dict.fromkeys(ids, _EMPTY)
    for i in ids:
        i0, i1 = np.searchsorted(arm_ids, [i, i + 1])
        f, la = first[i0:i1].astype(np.int64), last[i0:i1].astype(np.int64)
        mn, mx, me = vmin[i0:i1], vmax[i0:i1], mean[i0:i1]
        # A rising bucket (mean above the previous bucket's) shows its min first, a falling one its max.
        prev = np.concatenate([me[:1], me[:-1]])
        rising = me >= prev
        x = np.empty(2 * mn.size, dtype=np.int64)
        y = np.empty(2 * mn.size, dtype=np.float64)
        x[0::2], x[1::2] = f, la
        y[0::2] = np.where(rising, mn, mx)
        y[1::2] = np.where(rising, mx, mn)
        out[i] = (x, y, True)
    return out



def steps(session: Session, run: str, start: int | None, end: int | None, limit: int) -> list[StepMetrics]:
    """The trainer's metrics of the run's steps in [start, end], the first `limit` of them."""
    rid = run_row(session, run, RUNS.c.id).id
    t = RUN_STEPS.c
    q = select(t.step, t.ts, t.seq, t.metrics).where(t.run_id == rid)
    if start is not None:
        q = q.where(t.step >= start)
    if end is not None:
        q = q.where(t.step <= end)
    return [StepMetrics(*row) for row in session.execute(q.order_by(t.step).limit(limit))]


def step_times(session: Session, run: str) -> StepTimeline:
    """Every stored step and its wall time, as two arrays (what a chart's time axis needs)."""
    rid = run_row(session, run, RUNS.c.id).id
    a = fetch_array(
        session.connection(), select(RUN_STEPS.c.step, RUN_STEPS.c.ts).where(RUN_STEPS.c.run_id == rid)
        .order_by(RUN_STEPS.c.step), 2,
    )
    return StepTimeline(run=run, steps=a[:, 0].astype(np.int64).tolist(), ts=a[:, 1].tolist())
