"""Trainer metrics as chart series (`/api/runs/{run}/metrics`): names, values, min/max downsampling, live
appends, a late step, bad requests; real SQLite / PostgreSQL and the real app over HTTP."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from server.settings import Settings
from server.store.metrics import min_max_buckets

from .conftest import BACKENDS, LiveServer, ingest_docs, run_start, step_msg

on_both = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)

ARMS = ["a", "b"]


def metrics_at(step: int) -> dict[str, float]:
    m = {"loss": 2.0 * math.exp(-step / 300.0) + (0.5 if step == 777 else 0.0), "kl": step / 1e4}
    if step % 10 == 0:
        m["eval_gap"] = step / 100.0  # sent every 10th step only
    return m


def steps(run: str, lo: int, hi: int, seq0: int, **over: Any) -> list[dict[str, Any]]:
    return [step_msg(run, seq0 + s, s, ARMS, metrics=metrics_at(s), **over) for s in range(lo, hi)]


@on_both
def test_names_values_and_a_spike_kept_by_min_max(settings: Settings, engine: Engine,
                                                  make_server: Callable[..., LiveServer]) -> None:
    ingest_docs(engine, [run_start("m1", 1, ARMS), *steps("m1", 0, 3000, 2)])
    c = make_server(settings).client

    r = c.get("/api/runs/m1/metrics")
    assert r.status_code == 200, r.text
    assert r.json() == {"run": "m1", "names": ["eval_gap", "kl", "loss"], "series": []}

    got = c.get("/api/runs/m1/metrics", params={"name": ["loss", "eval_gap"]}).json()["series"]
    loss, gap = got
    assert loss["name"] == "loss" and loss["downsampled"] and len(loss["steps"]) <= 1000
    assert max(loss["values"]) == pytest.approx(metrics_at(0)["loss"])  # the first value is the maximum
    # The spike at step 777 survives downsampling: its bucket keeps its max, at a step of that bucket.
    spike = metrics_at(777)["loss"]
    i = loss["values"].index(max(v for s, v in zip(loss["steps"], loss["values"], strict=True) if 700 < s < 850))
    assert loss["values"][i] == pytest.approx(spike)
    assert abs(loss["steps"][i] - 777) < 6  # buckets of 6 steps: the max is placed at its bucket's first or last
    # A metric sent every 10th step: 300 values, not downsampled, steps as sent.
    assert gap["steps"] == list(range(0, 3000, 10)) and not gap["downsampled"]
    assert gap["values"] == pytest.approx([s / 100.0 for s in range(0, 3000, 10)])

    # A zoom of at most max_points steps gives every step, exactly.
    z = c.get("/api/runs/m1/metrics", params={"name": "kl", "start": 100, "end": 199}).json()["series"][0]
    assert z["steps"] == list(range(100, 200)) and not z["downsampled"]
    assert z["values"] == pytest.approx([s / 1e4 for s in range(100, 200)])


@on_both
def test_live_steps_are_appended_and_a_late_step_lands_in_order(settings: Settings, engine: Engine,
                                                                 make_server: Callable[..., LiveServer]) -> None:
    ingest_docs(engine, [run_start("m2", 1, ARMS), *steps("m2", 0, 50, 2), *steps("m2", 60, 100, 100)])
    c = make_server(settings).client

    def kl() -> dict[str, Any]:
        return c.get("/api/runs/m2/metrics", params={"name": "kl"}).json()["series"][0]

    assert kl()["steps"] == [*range(0, 50), *range(60, 100)]
    ingest_docs(engine, steps("m2", 100, 120, 200))  # a later ingest batch: read from the cache plus new rows
    assert kl()["steps"] == [*range(0, 50), *range(60, 120)]
    ingest_docs(engine, steps("m2", 50, 60, 300))  # late steps (a drained spool) land in step order
    got = kl()
    assert got["steps"] == list(range(0, 120))
    assert got["values"] == pytest.approx([s / 1e4 for s in range(120)])
    # A metric first sent late is listed, with no values before it.
    ingest_docs(engine, [step_msg("m2", 400, 120, ARMS, metrics={"kl": 0.5, "grad_norm": 3.0})])
    r = c.get("/api/runs/m2/metrics", params={"name": "grad_norm"}).json()
    assert "grad_norm" in r["names"] and r["series"][0]["steps"] == [120]


@on_both
def test_bad_requests_are_clear_errors(settings: Settings, engine: Engine,
                                       make_server: Callable[..., LiveServer]) -> None:
    ingest_docs(engine, [run_start("m3", 1, ARMS), *steps("m3", 0, 20, 2)])
    c = make_server(settings).client
    r = c.get("/api/runs/m3/metrics", params={"name": "nope"})
    assert r.status_code == 422 and "no metric 'nope'" in r.json()["error"]["message"]
    assert "kl, loss" in r.json()["error"]["message"]
    assert c.get("/api/runs/none/metrics").status_code == 404
    r = c.get("/api/runs/m3/metrics", params={"name": "kl", "start": 10, "end": 5})
    assert r.status_code == 422 and "before start" in r.json()["error"]["message"]
    assert c.get("/api/runs/m3/metrics", params={"name": ["kl"] * 17}).status_code == 422
    assert c.get("/api/runs/m3/metrics", params={"name": "kl", "end": 2**40}).status_code == 422


def test_min_max_buckets_keep_every_extreme() -> None:
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(100_000, 20_000, replace=False))
    vals = rng.standard_normal(steps.size)
    x, y = min_max_buckets(steps, vals, 250)
    assert x.size <= 500 and (np.diff(x) >= 0).all()
    assert y.max() == vals.max() and y.min() == vals.min()
    # each bucket's two values are the min and max of the input steps between its two points
    for i in range(0, x.size, 2):
        inside = vals[(steps >= x[i]) & (steps <= x[i + 1])]
        assert sorted([y[i], y[i + 1]]) == [inside.min(), inside.max()]
