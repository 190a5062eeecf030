"""The ingest worker against real Redis and real SQLite / PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

import server.ingest as ingest_module
from server.ingest import IngestWorker
from server.models import METRICS, ROLLUP_BUCKET, ROLLUP_WIDTHS
from server.settings import Settings

from .conftest import BACKENDS, run_start, step_msg, wait_for, xadd

pytestmark = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)

ARMS = ["easy", "medium", "hard"]


def drain(worker: IngestWorker) -> None:
    worker.ensure_group()
    while worker.read_once():
        pass


def q(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params).all())


def arm_rows(engine: Engine, run: str) -> list[Any]:
    return q(
        engine,
        "SELECT a.name, s.step, s.probability, s.score, s.parts, s.n_step, s.n_total, s.mean_abs_adv, "
        "s.mean_reward, s.accuracy FROM arm_steps s JOIN arms a ON a.id = s.arm_id JOIN runs r ON r.id = s.run_id "
        "WHERE r.name = :run ORDER BY s.step, a.name",
        run=run,
    )


def test_run_start_and_steps_are_stored(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    xadd(rds, settings, run_start("r1", 1, ARMS), *(step_msg("r1", s + 2, s, ARMS) for s in range(5)))
    worker = IngestWorker(settings, engine, rds)
    drain(worker)

    run = q(engine, "SELECT name, project, scheduler, status, last_step, last_seq, started_at FROM runs")
    assert [(r.name, r.project, r.scheduler, r.status, r.last_step, r.last_seq) for r in run] == [
        ("r1", "test", "dump", "running", 4, 6)
    ]
    assert run[0].started_at is not None
    arms = q(engine, "SELECT name, state, probability, last_step FROM arms ORDER BY position")
    assert [(a.name, a.state, a.last_step) for a in arms] == [(a, "active", 4) for a in ARMS]
    assert all(a.probability == pytest.approx(1 / 3) for a in arms)
    rows = arm_rows(engine, "r1")
    assert len(rows) == 15
    first = next(r for r in rows if r.name == "hard" and r.step == 3)
    exp = step_msg("r1", 5, 3, ARMS)["arms"][2]
    parts = first.parts if isinstance(first.parts, dict) else orjson.loads(first.parts)
    assert (first.score, parts, first.n_step, first.n_total, first.mean_abs_adv, first.mean_reward,
            first.accuracy) == (exp["score"], exp["parts"], exp["n_step"], exp["n_total"], exp["mean_abs_adv"],
                                exp["mean_reward"], exp["accuracy"])
    assert q(engine, "SELECT step, metrics FROM run_steps ORDER BY step")[4].step == 4
    pending = rds.xpending(settings.keys.ingest, "ingest")
    assert pending["pending"] == 0


def test_redelivery_is_idempotent(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    msgs = [run_start("r2", 1, ARMS), *(step_msg("r2", s + 2, s, ARMS) for s in range(3))]
    worker = IngestWorker(settings, engine, rds)
    xadd(rds, settings, *msgs)
    drain(worker)
    before = arm_rows(engine, "r2")
    rollups_before = q(engine, "SELECT * FROM arm_rollups ORDER BY arm_id, bucket")
    seq_before = q(engine, "SELECT event_seq FROM runs")[0].event_seq
    # The same (run, seq) entries again, in another batch and within one batch.
    xadd(rds, settings, *msgs[1:], msgs[2])
    drain(worker)
    assert arm_rows(engine, "r2") == before
    assert len(before) == 9
    assert q(engine, "SELECT * FROM arm_rollups ORDER BY arm_id, bucket") == rollups_before
    assert q(engine, "SELECT count(*) AS n FROM run_steps")[0].n == 3
    assert q(engine, "SELECT event_seq FROM runs")[0].event_seq == seq_before  # nothing new to tell


def test_rollups_match_the_rows(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    steps = 2 * ROLLUP_BUCKET + 10
    msgs = [run_start("r3", 1, ARMS), *(step_msg("r3", s + 2, s, ARMS) for s in range(steps))]
    worker = IngestWorker(settings.model_copy(update={"ingest_batch": 37}), engine, rds)
    xadd(rds, settings, *msgs)
    drain(worker)
    expected: dict[tuple[str, int, int], dict[str, Any]] = defaultdict(lambda: defaultdict(list))
    for width in ROLLUP_WIDTHS:
        for s in range(steps):
            for i, a in enumerate(ARMS):
                rec = step_msg("r3", 0, s, ARMS)["arms"][i]
                g = expected[(a, width, s // width)]
                g["steps"].append(s)
                for m in METRICS:
                    g[m].append(rec["p"] if m == "probability" else rec.get(m))  # an older agent sends no zero_var
    got = q(engine, "SELECT a.name, r.* FROM arm_rollups r JOIN arms a ON a.id = r.arm_id")
    # 3 arms x (3 buckets of 64 steps + one bucket at each coarser width)
    assert len(got) == len(expected) == 3 * (3 + len(ROLLUP_WIDTHS) - 1)
    for row in got:
        g = expected[(row.name, row.width, row.bucket)]
        assert (row.first_step, row.last_step, row.n_rows) == (min(g["steps"]), max(g["steps"]), len(g["steps"]))
        for m in METRICS:
            vals = [v for v in g[m] if v is not None]
            d = row._mapping
            assert d[f"{m}_n"] == len(vals)
            if not vals:  # a metric no record carried (zero_var from an older agent): nothing rolled up
                assert (d[f"{m}_min"], d[f"{m}_max"], d[f"{m}_sum"]) == (None, None, None)
                continue
            assert d[f"{m}_min"] == pytest.approx(min(vals))
            assert d[f"{m}_max"] == pytest.approx(max(vals))
            assert d[f"{m}_sum"] == pytest.approx(sum(vals))
            last = g[m][-1]
            assert d[f"{m}_last"] == (pytest.approx(last) if last is not None else None)


def test_ack_end_resume_and_heartbeat(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    worker = IngestWorker(settings, engine, rds)
    xadd(rds, settings, run_start("r4", 1, ARMS), step_msg("r4", 2, 0, ARMS))
    drain(worker)
    run_id = q(engine, "SELECT id FROM runs")[0].id
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO commands (id, run_id, kind, arm, value, steps, actor, reason, created_at, status) "
            "VALUES ('c-1', :r, 'pin', 'easy', 0.5, NULL, 'api', '', :t, 'pending')"
        ), {"r": run_id, "t": "2026-11-26 10:00:00"})
    started = q(engine, "SELECT started_at FROM runs")[0].started_at
    xadd(
        rds, settings,
        {"v": 1, "type": "command_ack", "run": "r4", "seq": 3, "ts": time.time(), "id": "c-1",
         "status": "applied", "applied_step": 1, "message": "ok"},
        {"v": 1, "type": "heartbeat", "run": "r4", "seq": 4, "ts": time.time(), "step": 1},
        {"v": 1, "type": "run_end", "run": "r4", "seq": 5, "ts": time.time(), "status": "interrupted", "step": 1},
    )
    drain(worker)
    cmd = q(engine, "SELECT status, applied_step, message FROM commands")[0]
    assert (cmd.status, cmd.applied_step, cmd.message) == ("applied", 1, "ok")
    run = q(engine, "SELECT status, ended_at, last_step, last_seen FROM runs")[0]
    assert (run.status, run.last_step) == ("interrupted", 1)
    assert run.ended_at is not None and run.last_seen is not None
    # A second ack of the same command changes nothing (the first outcome stands).
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": "r4", "seq": 6, "ts": time.time(), "id": "c-1",
                         "status": "rejected", "applied_step": None, "message": "late"})
    # The agent restarts: run_start again resumes the run, keeping its rows and first start time.
    xadd(rds, settings, run_start("r4", 7, ARMS), step_msg("r4", 8, 1, ARMS))
    drain(worker)
    assert q(engine, "SELECT status FROM commands")[0].status == "applied"
    run = q(engine, "SELECT status, ended_at, started_at FROM runs")[0]
    assert (run.status, run.ended_at) == ("running", None)
    assert run.started_at == started
    assert q(engine, "SELECT count(*) AS n FROM runs")[0].n == 1
    assert len(arm_rows(engine, "r4")) == 6
    # An old run_end redelivered after the resume does not end the run again.
    xadd(rds, settings, {"v": 1, "type": "run_end", "run": "r4", "seq": 5, "ts": time.time(),
                         "status": "interrupted", "step": 1})
    drain(worker)
    assert q(engine, "SELECT status FROM runs")[0].status == "running"


def test_live_event_published_after_commit(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    ps = rds.pubsub()
    ps.subscribe(settings.keys.live("r5"))
    assert ps.get_message(timeout=2)["type"] == "subscribe"
    worker = IngestWorker(settings, engine, rds)
    ids = xadd(rds, settings, run_start("r5", 1, ARMS), step_msg("r5", 2, 0, ARMS), step_msg("r5", 3, 1, ARMS))
    drain(worker)
    msg = ps.get_message(timeout=5)
    ps.close()
    assert msg is not None and msg["type"] == "message"
    ev = orjson.loads(msg["data"])
    assert ev["run"] == "r5" and ev["seq"] == 1
    assert ev["entry_ids"] == ids
    assert [s["step"] for s in ev["steps"]] == [0, 1]
    # Every field of the contract is present: the signals an older agent omits are null.
    assert ev["steps"][1]["arms"][0] == {**step_msg("r5", 3, 1, ARMS)["arms"][0], "n_groups": None, "zero_var": None,
                                         "pass_hist": None}
    assert ev["status"]["status"] == "running"
    # Committed before it was published.
    assert len(arm_rows(engine, "r5")) == 6


def test_bad_entries_are_dead_lettered(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    s = settings.model_copy(update={"ingest_max_bytes": 4096})
    good = step_msg("r6", 2, 0, ARMS)
    big = step_msg("r6", 3, 1, [f"arm{i}" for i in range(40)])
    xadd(rds, s, run_start("r6", 1, ARMS))
    bad_ids = xadd(rds, s, b"{not json", {"v": 1, "type": "teleport", "run": "r6", "seq": 9, "ts": 1.0},
                   {"v": 1, "type": "step", "run": "r6", "seq": 10, "ts": 1.0, "step": -3, "arms": []}, big)
    no_m = rds.xadd(s.keys.ingest, {"x": b"1"}).decode()
    xadd(rds, s, good)
    worker = IngestWorker(s, engine, rds)
    drain(worker)
    dead = rds.xrange(s.keys.dead)
    reasons = {f[b"entry_id"].decode(): f[b"reason"].decode() for _, f in dead}
    assert set(reasons) == {*bad_ids, no_m}
    assert reasons[bad_ids[0]].startswith("invalid JSON")
    assert reasons[bad_ids[1]] == "unknown message type 'teleport'"
    assert reasons[bad_ids[2]].startswith("validation failed: step.step")
    assert reasons[bad_ids[3]].startswith("oversized: ")
    assert reasons[no_m] == "entry has no field 'm'"
    assert int(rds.get(s.keys.dead_count)) == 5
    assert rds.xpending(s.keys.ingest, "ingest")["pending"] == 0
    assert len(arm_rows(engine, "r6")) == 3  # the good step after them landed


def test_xautoclaim_takes_over_a_dead_consumers_entries(
    settings: Settings, engine: Engine, rds: redis.Redis
) -> None:
    s = settings.model_copy(update={"ingest_claim_idle_ms": 100})
    xadd(rds, s, run_start("r7", 1, ARMS), *(step_msg("r7", i + 2, i, ARMS) for i in range(4)))
    worker = IngestWorker(s, engine, rds)
    worker.ensure_group()
    # A consumer that reads and then dies without acking.
    got = rds.xreadgroup("ingest", "ghost", {s.keys.ingest: ">"}, count=100)
    assert len(got[0][1]) == 5
    assert worker.read_once() == 0  # nothing new for the group
    time.sleep(0.15)
    assert worker.claim_once() == 5
    assert rds.xpending(s.keys.ingest, "ingest")["pending"] == 0
    assert len(arm_rows(engine, "r7")) == 12


def test_worker_thread_runs_until_stopped(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    worker = IngestWorker(settings, engine, rds)
    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,))
    t.start()
    try:
        xadd(rds, settings, run_start("r8", 1, ARMS), *(step_msg("r8", i + 2, i, ARMS) for i in range(20)))
        wait_for(lambda: len(arm_rows(engine, "r8")) == 60)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()
    # A clean stop leaves the group (it held no entries).
    assert worker.consumer.encode() not in {c["name"] for c in rds.xinfo_consumers(settings.keys.ingest, "ingest")}


def test_an_entry_the_database_refuses_is_isolated(
    settings: Settings, engine: Engine, rds: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ingest_module.apply_ingest
    outages = [1]

    def flaky(conn: Any, entries: Any) -> Any:
        if outages:  # the database is down once: retried, nothing dead-lettered
            outages.pop()
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        if any(e.msg.run == "poison" for e in entries):  # stands in for a constraint the data breaks
            raise IntegrityError("INSERT", {}, Exception("violates check constraint"))
        return real(conn, entries)

    monkeypatch.setattr(ingest_module, "apply_ingest", flaky)
    ids = xadd(rds, settings, run_start("r9", 1, ARMS), step_msg("poison", 1, 0, ARMS), step_msg("r9", 2, 0, ARMS))
    worker = IngestWorker(settings, engine, rds)
    drain(worker)
    assert outages == []
    dead = rds.xrange(settings.keys.dead)
    assert [(f[b"entry_id"].decode(), f[b"reason"].decode()) for _, f in dead] == [
        (ids[1], "database rejected: violates check constraint")
    ]
    assert orjson.loads(dead[0][1][b"m"])["run"] == "poison"
    assert len(arm_rows(engine, "r9")) == 3
    assert rds.xpending(settings.keys.ingest, "ingest")["pending"] == 0
