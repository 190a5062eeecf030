"""The series endpoint's two paths: raw rows (exact) and rollups (long ranges), on both backends."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from server.models import ROLLUP_BUCKET, part_rollups
from server.store import series as series_store

from .conftest import ingest_docs, run_start

ARMS = ["a", "b", "c"]
STEPS = ROLLUP_BUCKET * 40 + 17  # 40 full rollup buckets and a partial one


def values(step: int, i: int) -> float:
    """A smooth curve per arm, with one spike on arm b that no downsampling may lose."""
    v = 0.5 + 0.4 * math.sin(step / 97.0 + i)
    if i == 1 and step == 1234:
        v = 7.5
    return v


def fill(engine: Engine, run: str) -> None:
    docs = [run_start(run, 1, ARMS)]
    for step in range(STEPS):
        recs = [{"arm": a, "p": 1 / 3, "score": values(step, i),
                 "parts": {"mu": values(step, i), "bonus": -values(step, i)}, "n_step": 1, "n_total": step + 1,
                 "mean_abs_adv": None, "mean_reward": None, "accuracy": None, "state": "active", "pin": None,
                 "boost": None} for i, a in enumerate(ARMS)]
        doc = {"v": 1, "type": "step", "run": run, "seq": step + 2, "ts": 1.7e9 + step, "step": step,
               "metrics": {}, "dropped": 0, "arms": recs}
        docs.append(doc)
    ingest_docs(engine, docs)


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_long_range_reads_rollups_and_keeps_every_bucket_min_and_max(engine: Engine) -> None:
    fill(engine, "long")
    truth = {a: np.array([values(s, i) for s in range(STEPS)]) for i, a in enumerate(ARMS)}
    with Session(engine) as session:
        out = series_store.series(session, "long", "score", None, None, None, max_points=20)
    assert [s.arm for s in out] == ARMS
    for s in out:
        assert s.downsampled is True and len(s.steps) <= 20
        v = np.array(s.values)
        # the extremes of the whole series survive, the spike included
        assert v.max() == truth[s.arm].max() and v.min() == truth[s.arm].min()
        # every value shown is a true value within the bucket it stands for
        steps = np.array(s.steps)
        assert np.all(np.diff(steps) >= 0) and steps[0] >= 0 and steps[-1] <= STEPS - 1
        # each pair of points is one bucket: its first and last step, and exactly its min and max
        for x0, x1, y0, y1 in zip(steps[0::2], steps[1::2], v[0::2], v[1::2], strict=True):
            window = truth[s.arm][x0: x1 + 1]
            assert (x1 + 1) % ROLLUP_BUCKET == 0 or x1 == STEPS - 1
            assert sorted([y0, y1]) == [window.min(), window.max()]
    spike = next(s for s in out if s.arm == "b")
    assert 7.5 in spike.values


@pytest.mark.parametrize("empty_db", ["sqlite"], indirect=True)
def test_short_range_reads_raw_rows_with_exact_positions(engine: Engine) -> None:
    fill(engine, "short")
    with Session(engine) as session:
        exact = series_store.series(session, "short", "score", ["b"], 1200, 1300, max_points=1000)
        down = series_store.series(session, "short", "score", ["b"], 1000, 1499, max_points=50)
    assert exact[0].steps == list(range(1200, 1301)) and exact[0].downsampled is False
    assert exact[0].values == [values(s, 1) for s in range(1200, 1301)]
    assert down[0].downsampled is True and len(down[0].steps) <= 50
    # bucketed in SQL: each pair of points is a bucket's first/last step and exactly its min and max
    truth = {st: values(st, 1) for st in range(1000, 1500)}
    for x0, x1, y0, y1 in zip(down[0].steps[0::2], down[0].steps[1::2], down[0].values[0::2],
                              down[0].values[1::2], strict=True):
        window = [truth[st] for st in range(x0, x1 + 1)]
        assert sorted([y0, y1]) == [min(window), max(window)]
    assert 7.5 in down[0].values


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_rollup_range_with_partial_edge_buckets_shows_nothing_outside_it(engine: Engine) -> None:
    fill(engine, "edges")
    lo, hi = 100, STEPS - 30  # neither end on a rollup bucket boundary
    with Session(engine) as session:
        out = series_store.series(session, "edges", "score", ["a", "b"], lo, hi, max_points=24)
    for s in out:
        i = ARMS.index(s.arm)
        assert s.downsampled is True and len(s.steps) <= 24
        assert s.steps[0] == lo and s.steps[-1] == hi
        for x0, x1, y0, y1 in zip(s.steps[0::2], s.steps[1::2], s.values[0::2], s.values[1::2], strict=True):
            window = [values(st, i) for st in range(x0, x1 + 1)]
            assert lo <= x0 <= x1 <= hi
            assert sorted([y0, y1]) == [min(window), max(window)]


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_integer_metric_through_rollups_and_edges(engine: Engine) -> None:
    """n_total is a BIGINT: its bucket means come back as NUMERIC on PostgreSQL and must still work."""
    fill(engine, "ints")
    lo, hi = 100, STEPS - 30
    with Session(engine) as session:
        out = series_store.series(session, "ints", "n_total", ["a"], lo, hi, max_points=24)
    s = out[0]
    assert s.downsampled is True and s.steps[0] == lo and s.steps[-1] == hi
    for x0, x1, y0, y1 in zip(s.steps[0::2], s.steps[1::2], s.values[0::2], s.values[1::2], strict=True):
        assert sorted([y0, y1]) == [x0 + 1, x1 + 1]  # n_total = step + 1, rising: min first
        assert (y0, y1) == (x0 + 1, x1 + 1)


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_score_parts_read_part_rollups_and_keep_every_bucket_min_and_max(engine: Engine) -> None:
    fill(engine, "parts")
    lo, hi = 100, STEPS - 30  # partial rollup buckets at both ends
    with Session(engine) as session:
        whole = series_store.part_series(session, "parts", None, None, None, max_points=20)
        edges = series_store.part_series(session, "parts", ["b"], lo, hi, max_points=24)
        exact = series_store.part_series(session, "parts", ["b"], 1230, 1240, max_points=1000)
    assert [(s.arm, s.part) for s in whole] == [(a, p) for a in ARMS for p in ("bonus", "mu")]
    sign = {"mu": 1.0, "bonus": -1.0}
    for s in whole + edges:
        i = ARMS.index(s.arm)
        assert s.downsampled is True and len(s.steps) <= 24
        for x0, x1, y0, y1 in zip(s.steps[0::2], s.steps[1::2], s.values[0::2], s.values[1::2], strict=True):
            window = [sign[s.part] * values(st, i) for st in range(x0, x1 + 1)]
            assert sorted([y0, y1]) == [min(window), max(window)]
    assert edges[0].steps[0] == lo and edges[0].steps[-1] == hi
    spikes = {s.part: s.values for s in whole if s.arm == "b"}
    assert 7.5 in spikes["mu"] and -7.5 in spikes["bonus"]  # one step's spike survives 1,000x downsampling
    assert [(s.part, s.steps, s.downsampled) for s in exact] == [
        ("bonus", list(range(1230, 1241)), False), ("mu", list(range(1230, 1241)), False)]
    assert exact[1].values == [values(st, 1) for st in range(1230, 1241)]


@pytest.mark.parametrize("empty_db", ["sqlite"], indirect=True)
def test_part_rollups_skip_rows_without_the_part_and_overlong_names(engine: Engine) -> None:
    """A part reported on some steps only is bucketed over those steps; a name past 64 characters is
    kept in the step rows but not rolled up."""
    long_name = "p" * 65
    docs = [run_start("sparse", 1, ["a"])]
    for step in range(1000):
        parts = {"odd": float(step)} if step % 2 else {long_name: 1.0}
        recs = [{"arm": "a", "p": 1.0, "score": 0.0, "parts": parts, "n_step": 1, "n_total": step + 1,
                 "mean_abs_adv": None, "mean_reward": None, "accuracy": None, "state": "active", "pin": None,
                 "boost": None}]
        docs.append({"v": 1, "type": "step", "run": "sparse", "seq": step + 2, "ts": 1.7e9 + step, "step": step,
                     "metrics": {}, "dropped": 0, "arms": recs})
    ingest_docs(engine, docs, batch=300)  # batches that end mid-bucket: rows merge across batches
    with engine.connect() as conn:
        rows = conn.execute(select(part_rollups.c.part, part_rollups.c.width, part_rollups.c.bucket,
                                   part_rollups.c.first_step, part_rollups.c.last_step, part_rollups.c.value_n,
                                   part_rollups.c.value_min, part_rollups.c.value_max)).all()
    assert {r.part for r in rows} == {"odd"}
    for r in rows:
        lo, hi = r.bucket * r.width, min(999, (r.bucket + 1) * r.width - 1)
        odd = [s for s in range(lo, hi + 1) if s % 2]
        assert (r.first_step, r.last_step, r.value_n, r.value_min, r.value_max) == (
            odd[0], odd[-1], len(odd), float(odd[0]), float(odd[-1]))
    with Session(engine) as session:
        (odd_series,) = series_store.part_series(session, "sparse", None, None, None, max_points=40)
    assert odd_series.part == "odd" and odd_series.downsampled
    assert all(s % 2 for s in odd_series.steps) and odd_series.values == [float(s) for s in odd_series.steps]
