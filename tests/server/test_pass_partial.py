"""The pass-rate profile's scalar, `pass_partial` (the share of an arm's window prompts solved in some attempts
but not all: pass_hist bins 1..3): derived on ingest, served by the series endpoint from raw rows and from the
rollups (min/max buckets), still there once retention dropped the raw rows; the migration that added it fills
it, rollups included, from the stored profiles."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, update

from server.db import alembic_config, make_engine
from server.settings import Settings
from server.store.retention import prune_raw
from server.store.sql import RUNS

from .conftest import BACKENDS, LiveServer, ingest_docs, run_start, step_msg, wait_for, xadd

ARMS = ["a", "b", "c", "d"]
STEPS = 300
BEFORE = "2b8d4f6a0c13"  # the revision before arm_steps.pass_partial


def hist(i: int, step: int) -> list[int] | None:
    """Arm d's trainer gives no prompt ids (no profile); arm c's window is empty every 10th step."""
    if i == 3:
        return None
    if i == 2 and step % 10 == 0:
        return [0, 0, 0, 0, 0]
    return [(step + i) % 7, (step * (i + 1)) % 5, i + 1, step % 4, (step + 2 * i) % 9]


def partial(h: list[int] | None) -> float | None:
    if h is None or not sum(h):
        return None
    return (h[1] + h[2] + h[3]) / sum(h)


def messages(run: str) -> list[dict[str, Any]]:
    msgs: list[dict[str, Any]] = [run_start(run, 1, ARMS)]
    for s in range(STEPS):
        m = step_msg(run, s + 2, s, ARMS)
        for i, rec in enumerate(m["arms"]):
            rec.update(n_groups=2, zero_var=0.5, pass_hist=hist(i, s))
        msgs.append(m)
    return msgs


def expected(i: int, lo: int, hi: int) -> list[float]:
    return [v for s in range(lo, hi + 1) if (v := partial(hist(i, s))) is not None]


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_pass_partial_series_from_raw_rows_rollups_and_after_pruning(
    app_server: LiveServer, rds: redis.Redis, settings: Settings, engine: Engine,
) -> None:
    c = app_server.client
    xadd(rds, settings, *messages("prof"), {"v": 1, "type": "run_end", "run": "prof", "seq": STEPS + 2,
                                           "ts": time.time(), "status": "finished", "step": STEPS - 1})
    wait_for(lambda: c.get("/api/runs/prof").json().get("status") == "finished"
             and c.get("/api/runs/prof").json()["last_step"] == STEPS - 1)

    def series(**params: Any) -> list[dict[str, Any]]:
        r = c.get("/api/runs/prof/series", params={"metric": "pass_partial", **params})
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()["series"]
        assert [s["arm"] for s in out] == ARMS
        return out

    # A short range: the raw rows, every step with a profile (none for d, none at c's empty windows).
    for i, one in enumerate(series(start=100, end=120)):
        assert one["downsampled"] is False
        assert one["steps"] == [s for s in range(100, 121) if partial(hist(i, s)) is not None]
        assert one["values"] == pytest.approx(expected(i, 100, 120))
    # The whole run in 20 points: min/max buckets from arm_rollups.
    whole = series(max_points=20)
    for i, one in enumerate(whole):
        if i == 3:
            assert one["steps"] == [] and one["values"] == []
            continue
        assert one["downsampled"] is True and 2 <= len(one["values"]) <= 20
        assert min(one["values"]) == pytest.approx(min(expected(i, 0, STEPS - 1)))
        assert max(one["values"]) == pytest.approx(max(expected(i, 0, STEPS - 1)))

    # Retention drops the raw rows of the run (ended 10 days ago): the rollups answer the same.
    with engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.name == "prof").values(
            ended_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=10)))
    assert [(p.run, p.rows) for p in prune_raw(engine, 7)] == [("prof", STEPS * len(ARMS))]
    assert series(max_points=20) == whole
    # Zoomed below the finest rollup width: the 64-step buckets covering the range, min and max of each.
    for i, one in enumerate(series(start=100, end=110)):
        if i == 3:
            assert one["steps"] == []
            continue
        assert one["downsampled"] is True
        lo, hi = min(one["steps"]), max(one["steps"])
        assert (lo, hi) == (64, 127)
        assert min(one["values"]) == pytest.approx(min(expected(i, 64, 127)))
        assert max(one["values"]) == pytest.approx(max(expected(i, 64, 127)))
    assert c.get("/api/runs/prof/series", params={"metric": "pass_histogram"}).status_code == 422


def _stored(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            steps = [tuple(r) for r in conn.exec_driver_sql(
                "SELECT run_id, arm_id, step, pass_partial FROM arm_steps ORDER BY run_id, arm_id, step")]
            rollups = [tuple(r) for r in conn.exec_driver_sql(
                "SELECT run_id, arm_id, width, bucket, pass_partial_n, pass_partial_min, pass_partial_max,"
                " pass_partial_sum, pass_partial_last FROM arm_rollups ORDER BY run_id, arm_id, width, bucket")]
        return steps, rollups
    finally:
        engine.dispose()


def _close(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x == tuple(v if v is None or isinstance(v, int) else pytest.approx(v) for v in y)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_the_migration_fills_pass_partial_from_stored_profiles(empty_db: str, tmp_path: Path) -> None:
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    engine = make_engine(empty_db)
    try:
        ingest_docs(engine, messages("prof"), batch=37)
        # A run stored by an older server: no profiles at all.
        ingest_docs(engine, [run_start("old", 1, ARMS), *(step_msg("old", s + 2, s, ARMS) for s in range(70))])
    finally:
        engine.dispose()
    steps, rollups = _stored(empty_db)  # what ingest keeps
    assert sum(r[3] is not None for r in steps) == sum(partial(hist(i, s)) is not None
                                                       for i in range(len(ARMS)) for s in range(STEPS))
    assert any(r[4] for r in rollups) and any(r[4] == 0 and r[5] is None for r in rollups)
    command.downgrade(cfg, BEFORE)
    command.upgrade(cfg, "head")
    again_steps, again_rollups = _stored(empty_db)
    _close(again_steps, steps)
    _close(again_rollups, rollups)
