"""The trainer's metrics of a run (loss, KL, grad norm, reward mean...) as chart series.

Metrics arrive as one JSON object per step (`run_steps.metrics`), with names only the trainer knows,
so they have no rollup columns. A chart reads them from a per-process cache of each run's metrics as
float columns: the first read of a run parses its steps once (about 0.2 s for 100,000 steps), every
later read of any of its metrics is numpy on memory, and a live run's new steps are appended by
reading only the rows stored since (`run_steps.event_seq` grows with every ingest batch). The cache
is bounded in bytes, least recently used first out.

Long ranges are downsampled as the arm series are: each bucket keeps its min and its max (no spike
disappears), placed at the bucket's first and last step in the order its trend suggests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Text, select
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session

from server.errors import InvalidRequest
from server.store.series import bucket_points
from server.store.sql import RUN_STEPS, RUNS, run_row

# Names a chart request may ask for at once, and the names listed for a run (a trainer that sends a
# metric per arm per layer would otherwise send the page thousands).
MAX_NAMES_PER_REQUEST = 16
MAX_NAMES_LISTED = 500
# Bytes of metric columns kept per web process across runs.
CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True, slots=True)
class MetricPoints:
    """One metric's points: `steps` and `values` side by side (steps without the metric left out)."""

    name: str
    steps: list[int]
    values: list[float]
    downsampled: bool  # each bucket kept only its min and max points


class _Columns:
    """One run's metrics as columns: steps (sorted) and, per name, values (NaN where a step lacks it)."""

    __slots__ = ("event_seq", "key", "nbytes", "steps", "values")

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self.event_seq = -1
        self.steps = np.zeros(0, dtype=np.int64)
        self.values: dict[str, np.ndarray[Any, Any]] = {}
        self.nbytes = 0

    def extend(self, rows: Sequence[tuple[int, int, str | None]]) -> None:
        """Add rows of (step, event_seq, metrics JSON text) stored since the last read.

        Ingest validated every value as a number (a non-finite one is stored as null), so a column is
        numpy's conversion of the values as parsed, None becoming NaN: no Python work per value.
        """
        if not rows:
            return
        n_old, n_new = self.steps.size, len(rows)
        new_steps = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n_new)
        # One parse of all the rows as one JSON array: a call per row cost as much as the query.
        parsed: list[dict[str, Any]] = orjson.loads("[" + ",".join(r[2] or "{}" for r in rows) + "]")
        names = set(self.values)
        for m in parsed:
            names.update(m)
        values: dict[str, np.ndarray[Any, Any]] = {}
        for name in names:
            old = self.values.get(name)
            col = np.empty(n_old + n_new)
            col[:n_old] = np.nan if old is None else old
            col[n_old:] = np.array([m.get(name) for m in parsed], dtype=np.float64)
            values[name] = col
        steps = np.concatenate([self.steps, new_steps])
        if steps.size > 1 and not (steps[1:] >= steps[:-1]).all():
            order = np.argsort(steps, kind="stable")  # a late step (a drained spool): keep steps sorted
            steps = steps[order]
            values = {k: v[order] for k, v in values.items()}
        self.steps, self.values = steps, values
        self.event_seq = max(self.event_seq, max(int(r[1]) for r in rows))
        self.nbytes = steps.nbytes + sum(v.nbytes for v in values.values())


class _Cache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._runs: OrderedDict[tuple[Any, ...], _Columns] = OrderedDict()
        self._lock = threading.Lock()

    def columns(self, session: Session, run: str) -> _Columns:
        row = run_row(session, run, RUNS.c.id, RUNS.c.started_at, RUNS.c.event_seq)
        # The name and start time too: SQLite may give a deleted run's id to the next run created.
        key = (int(row.id), run, row.started_at)
        with self._lock:
            cols = self._runs.pop(key, None) or _Columns(key)
            self._runs[key] = cols
        if cols.event_seq < int(row.event_seq or 0):
            t = RUN_STEPS.c
            res = session.connection().execute(
                select(t.step, t.event_seq, sql_cast(t.metrics, Text))
                .where(t.run_id == row.id, t.event_seq > cols.event_seq)
                .order_by(t.step)
            )
            try:
                rows = res.cursor.fetchall()  # the driver's tuples: Row objects cost as much as the query
            finally:
                res.close()
            with self._lock:
                cols.extend(rows)
                self._evict()
        return cols

    def _evict(self) -> None:
        total = sum(c.nbytes for c in self._runs.values())
        while total > self.max_bytes and len(self._runs) > 1:
            _, old = self._runs.popitem(last=False)
            total -= old.nbytes


_CACHE = _Cache(CACHE_BYTES)


@dataclass(frozen=True, slots=True)
class RunMetrics:
    names: list[str]  # every metric the run sent, sorted; at most MAX_NAMES_LISTED
    series: list[MetricPoints]  # those asked for, in that order


def run_metrics(
    session: Session,
    run: str,
    names: Sequence[str],
    start: int | None,
    end: int | None,
    max_points: int,
) -> RunMetrics:
    """The run's metric names and, per name asked for, (step, value) over [start, end], at most
    `max_points` points (min/max buckets). One read of the run's columns for both."""
    if len(names) > MAX_NAMES_PER_REQUEST:
        raise InvalidRequest(f"at most {MAX_NAMES_PER_REQUEST} metrics per request, got {len(names)}")
    cols = _CACHE.columns(session, run)
    known = sorted(cols.values)
    unknown = [n for n in names if n not in cols.values]
    if unknown:
        raise InvalidRequest(f"run {run!r} sent no metric {unknown[0]!r}; its metrics are: "
                             f"{', '.join(known[:20]) or 'none'}", unknown=unknown)
    i0 = int(np.searchsorted(cols.steps, -1 if start is None else start, side="left"))
    i1 = int(np.searchsorted(cols.steps, 2**62 if end is None else end, side="right"))
    steps = cols.steps[i0:i1]
    out = []
    for name in dict.fromkeys(names):
        vals = cols.values[name][i0:i1]
        keep = ~np.isnan(vals)
        st, v = steps[keep], vals[keep]
        if st.size > max_points:
            st, v = min_max_buckets(st, v, max(2, max_points // 2))
        out.append(MetricPoints(name, st.tolist(), v.tolist(), st.size < int(keep.sum())))
    return RunMetrics(known[:MAX_NAMES_LISTED], out)


def min_max_buckets(
    steps: np.ndarray[Any, Any], values: np.ndarray[Any, Any], buckets: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """At most `buckets` buckets of equal step span, two points each (their min and max), placed as the
    arm series place them (`series.bucket_points`)."""
    width = -(-(int(steps[-1] - steps[0]) + 1) // buckets)
    g = (steps - steps[0]) // width
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    ends = np.append(starts[1:], steps.size) - 1
    rows = np.column_stack([
        np.zeros(starts.size), np.arange(starts.size), steps[starts], steps[ends],
        np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts),
        np.add.reduceat(values, starts) / np.diff(np.append(starts, steps.size)),
    ])
    x, y, _ = bucket_points(rows, [0])[0]
    return x, y
