"""Fault tests with real `steerboard worker` processes: kill -9 mid-run, poison entries, dead consumers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
import redis
from sqlalchemy import Engine, text

from server.settings import Settings

from .conftest import BACKENDS, ROOT, cli_env, run_start, step_msg, wait_for

pytestmark = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)

ARMS = [f"arm{i:02d}" for i in range(16)]


@contextmanager
def worker_process(settings: Settings, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "worker"], env=cli_env(settings, **env), cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def group_state(rds: redis.Redis, settings: Settings) -> tuple[int, int]:
    """(entries delivered to the group, entries pending)."""
    for g in rds.xinfo_groups(settings.keys.ingest):
        if g["name"] == b"ingest":
            return int(g["entries-read"] or 0), int(g["pending"])
    return 0, 0


def test_kill_9_mid_run_loses_and_duplicates_nothing(
    settings: Settings, engine: Engine, rds: redis.Redis
) -> None:
    steps = 1500
    total = steps * len(ARMS)
    pipe = rds.pipeline(transaction=False)
    pipe.xadd(settings.keys.ingest, {"m": orjson.dumps(run_start("fault-1", 1, ARMS))})
    for s in range(steps):
        pipe.xadd(settings.keys.ingest, {"m": orjson.dumps(step_msg("fault-1", s + 2, s, ARMS))})
    pipe.execute()
    fast_claim = {"STEERBOARD_INGEST_CLAIM_IDLE_MS": "500", "STEERBOARD_INGEST_CLAIM_INTERVAL_S": "0.2"}

    with worker_process(settings, STEERBOARD_INGEST_BATCH="20", **fast_claim) as first:
        wait_for(lambda: count(engine, "SELECT count(*) FROM arm_steps") > 0, timeout=30, interval=0.005)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
    before = count(engine, "SELECT count(*) FROM arm_steps")
    _, pending = group_state(rds, settings)
    assert 0 < before < total, "the worker was not killed mid-run"
    assert pending > 0, "the dead worker left nothing pending; XAUTOCLAIM would not be exercised"

    with worker_process(settings, **fast_claim) as second:
        wait_for(lambda: group_state(rds, settings) == (steps + 1, 0), timeout=90, interval=0.1)
        assert second.poll() is None

    assert count(engine, "SELECT count(*) FROM arm_steps") == total
    assert count(engine, "SELECT count(*) FROM (SELECT DISTINCT arm_id, step FROM arm_steps) d") == total
    assert count(engine, "SELECT count(*) FROM run_steps") == steps
    assert count(
        engine, f"SELECT count(*) FROM (SELECT step FROM arm_steps GROUP BY step HAVING count(*) <> {len(ARMS)}) d"
    ) == 0
    # Re-delivered entries were not counted twice in the rollups either.
    assert count(engine, "SELECT sum(n_rows) FROM arm_rollups WHERE width = 64") == total
    assert count(engine, "SELECT last_step FROM runs") == steps - 1


def test_poison_entries_and_a_dead_consumer(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    key = settings.keys.ingest
    rds.xgroup_create(key, "ingest", id="0", mkstream=True)
    rds.xadd(key, {"m": orjson.dumps(run_start("fault-2", 1, ARMS))})
    for s in range(10):
        rds.xadd(key, {"m": orjson.dumps(step_msg("fault-2", s + 2, s, ARMS))})
    # A consumer takes those entries and dies without acking them.
    taken = rds.xreadgroup("ingest", "crashed-worker", {key: ">"}, count=100)
    assert len(taken[0][1]) == 11
    bad = {
        rds.xadd(key, {"m": b"\xff\xfe not json"}).decode(): "invalid JSON",
        rds.xadd(key, {"m": b"x" * 5000}).decode(): "oversized: 5000 bytes > limit 4096",
        rds.xadd(key, {"m": orjson.dumps({"v": 1, "type": "step", "run": "fault-2", "seq": 99, "ts": 1})}).decode():
            "validation failed",
        rds.xadd(key, {"m": orjson.dumps({"v": 7, "type": "heartbeat", "run": "fault-2", "seq": 98, "ts": 1,
                                          "step": 1})}).decode(): "validation failed: heartbeat.v: Input should be 1",
    }
    for s in range(10, 20):
        rds.xadd(key, {"m": orjson.dumps(step_msg("fault-2", s + 2, s, ARMS))})

    env = {"STEERBOARD_INGEST_MAX_BYTES": "4096", "STEERBOARD_INGEST_CLAIM_IDLE_MS": "300",
           "STEERBOARD_INGEST_CLAIM_INTERVAL_S": "0.2"}
    with worker_process(settings, **env) as proc:
        wait_for(lambda: count(engine, "SELECT count(*) FROM arm_steps") == 20 * len(ARMS), timeout=30)
        wait_for(lambda: group_state(rds, settings)[1] == 0, timeout=10)
        assert proc.poll() is None  # it went on
    dead = {f[b"entry_id"].decode(): f[b"reason"].decode() for _, f in rds.xrange(settings.keys.dead)}
    assert set(dead) == set(bad)
    for eid, reason in bad.items():
        assert dead[eid].startswith(reason), (dead[eid], reason)
    assert int(rds.get(settings.keys.dead_count)) == 4
    assert count(engine, "SELECT count(*) FROM run_steps") == 20
    # The crashed consumer's entries were claimed by the worker, not left pending.
    assert rds.xpending_range(key, "ingest", min="-", max="+", count=10, consumername="crashed-worker") == []


def test_two_workers_share_the_group(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    runs, steps = ["multi-a", "multi-b", "multi-c"], 300
    pipe = rds.pipeline(transaction=False)
    for run in runs:
        pipe.xadd(settings.keys.ingest, {"m": orjson.dumps(run_start(run, 1, ARMS))})
    for s in range(steps):  # the runs interleaved, as several trainers would send them
        for run in runs:
            pipe.xadd(settings.keys.ingest, {"m": orjson.dumps(step_msg(run, s + 2, s, ARMS))})
    pipe.execute()
    total = len(runs) * (steps + 1)
    with worker_process(settings, STEERBOARD_INGEST_BATCH="25") as a, worker_process(
        settings, STEERBOARD_INGEST_BATCH="25"
    ) as b:
        wait_for(lambda: group_state(rds, settings) == (total, 0), timeout=90, interval=0.1)
        assert a.poll() is None and b.poll() is None
        assert len(rds.xinfo_consumers(settings.keys.ingest, "ingest")) == 2
    assert count(engine, "SELECT count(*) FROM arm_steps") == len(runs) * steps * len(ARMS)
    assert count(engine, "SELECT sum(n_rows) FROM arm_rollups WHERE width = 64") == len(runs) * steps * len(ARMS)
    # Each run's live events stayed one gapless sequence across both workers' commits: every event
    # id up to the run's latest was used by its steps, or by its run_start (its status event).
    with engine.connect() as conn:
        for run_id, seq, status_seq in conn.execute(text("SELECT id, event_seq, status_event_seq FROM runs")):
            used = {r[0] for r in conn.execute(
                text("SELECT DISTINCT event_seq FROM run_steps WHERE run_id = :r"), {"r": run_id}
            )}
            assert used | {status_seq} == set(range(1, seq + 1))
