"""Retention: `steerboard db prune` drops the raw per-arm rows of runs that ended more than N days ago; their
charts then draw from the rollups, over the whole run and zoomed below the finest rollup width (whole
buckets, never a 500), score parts included; running and recent runs keep everything."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import redis
from sqlalchemy import Engine, func, select, update

from server.settings import Settings
from server.store.sql import ARM_STEPS, RUNS, run_id

from .conftest import BACKENDS, LiveServer, cli_env, run_cli, run_start, step_msg, wait_for, xadd

ARMS = ["a", "b", "c", "d"]
STEPS = 300


def raw_rows(engine: Engine, run: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ARM_STEPS)
                                .where(ARM_STEPS.c.run_id == run_id(conn, run))).scalar_one())


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_prune_keeps_the_charts(app_server: LiveServer, rds: redis.Redis, settings: Settings, engine: Engine) -> None:
    c = app_server.client
    for run in ("old", "recent", "live"):
        msgs = [run_start(run, 1, ARMS), *(step_msg(run, s + 2, s, ARMS) for s in range(STEPS))]
        if run != "live":
            msgs.append({"v": 1, "type": "run_end", "run": run, "seq": STEPS + 2, "ts": time.time(),
                         "status": "finished", "step": STEPS - 1})
        xadd(rds, settings, *msgs)
    wait_for(lambda: all(c.get(f"/api/runs/{r}").json().get("last_step") == STEPS - 1
                         for r in ("old", "recent", "live"))
             and c.get("/api/runs/old").json()["status"] == "finished")
    with engine.begin() as conn:
        conn.execute(update(RUNS).where(RUNS.c.name.in_(["old", "live"]))
                     .values(ended_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=10),
                             last_seen=dt.datetime.now(dt.UTC) - dt.timedelta(days=10)))
    whole = {"metric": "score", "max_points": 20}
    before = c.get("/api/runs/old/series", params=whole).json()["series"]
    raw = {i: [step_msg("x", 1, s, ARMS)["arms"][i]["score"] for s in range(STEPS)] for i in range(len(ARMS))}

    dry = run_cli(["db", "prune", "--older-than-days", "7", "--dry-run"], cli_env(settings))
    assert dry.returncode == 0, dry.stderr
    assert f"old: would drop {STEPS * len(ARMS)} raw arm rows" in dry.stdout and "recent" not in dry.stdout
    assert raw_rows(engine, "old") == STEPS * len(ARMS)
    out = run_cli(["db", "prune", "--older-than-days", "7"], cli_env(settings))
    assert out.returncode == 0, out.stderr
    assert f"old: dropped {STEPS * len(ARMS)} raw arm rows" in out.stdout
    assert "live" not in out.stdout and "recent" not in out.stdout  # running / ended 0 days ago
    assert raw_rows(engine, "old") == 0
    assert raw_rows(engine, "recent") == raw_rows(engine, "live") == STEPS * len(ARMS)
    again = run_cli(["db", "prune", "--older-than-days", "7"], cli_env(settings))
    assert "0 run(s)" in again.stdout

    # The whole run, as before: from the rollups.
    after = c.get("/api/runs/old/series", params=whole).json()["series"]
    assert [s["arm"] for s in after] == ARMS
    for b, a in zip(before, after, strict=True):
        assert a["downsampled"] is True and len(a["values"]) <= 20
        assert (min(a["values"]), max(a["values"])) == (min(b["values"]), max(b["values"]))
    # Zoomed below the finest rollup width (64 steps): the buckets covering the range, min and max of each.
    for start, end in ((100, 110), (0, 0), (299, 299), (250, 5000)):
        r = c.get("/api/runs/old/series", params={"metric": "score", "start": start, "end": end})
        assert r.status_code == 200, r.text
        for i, one in enumerate(r.json()["series"]):
            assert one["downsampled"] is True and one["steps"], (start, end)
            lo, hi = min(one["steps"]), max(one["steps"])
            assert lo <= start and hi >= min(end, STEPS - 1) and hi - lo < 128
            assert min(one["values"]) == min(raw[i][lo:hi + 1]) and max(one["values"]) == max(raw[i][lo:hi + 1])
    # Score parts and the other metrics too; the run page renders.
    parts = c.get("/api/runs/old/parts", params={"start": 10, "end": 20}).json()["series"]
    assert {(p["arm"], p["part"]) for p in parts} == {(a, p) for a in ARMS for p in ("exploit", "explore")}
    for metric in ("probability", "mean_reward", "accuracy"):
        assert c.get("/api/runs/old/series", params={"metric": metric, "start": 5, "end": 9}).status_code == 200
    assert c.get("/runs/old").status_code == 200
    # An unpruned run still answers a short range with its raw rows.
    live = c.get("/api/runs/live/series", params={"metric": "score", "start": 100, "end": 110}).json()["series"]
    assert live[0]["downsampled"] is False and live[0]["steps"] == list(range(100, 111))


def test_prune_needs_a_horizon(settings: Settings) -> None:
    out = run_cli(["db", "prune"], cli_env(settings))
    assert out.returncode != 0 and "--older-than-days" in out.stderr
