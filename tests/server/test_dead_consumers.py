"""Dead consumers leave the ingest group: a live worker removes consumers idle past
STEERBOARD_INGEST_CONSUMER_IDLE_MS that have nothing pending, on its own, and never one that still owns
entries (XAUTOCLAIM hands those to a live worker first) nor a consumer that is still reading."""

from __future__ import annotations

import threading
import time

import redis
from sqlalchemy import Engine

from server.ingest import IngestWorker
from server.settings import Settings

from .conftest import run_start, wait_for, xadd


def consumers(rds: redis.Redis, settings: Settings) -> dict[str, int]:
    return {c["name"].decode(): int(c["pending"]) for c in rds.xinfo_consumers(settings.keys.ingest,
                                                                                settings.ingest_group)}


def test_live_worker_removes_dead_consumers(rds: redis.Redis, settings: Settings, engine: Engine) -> None:
    settings = settings.model_copy(update={"ingest_consumer_idle_ms": 1000, "ingest_maintenance_interval_s": 0.2,
                                           "ingest_claim_idle_ms": 3_600_000})
    stream, group = settings.keys.ingest, settings.ingest_group
    worker = IngestWorker(settings, engine, rds, consumer="live-worker")
    worker.ensure_group()
    xadd(rds, settings, run_start("dc", 1, ["a"]), run_start("dc", 2, ["a"]), run_start("dc", 3, ["a"]))
    # A worker that died after acking what it read (nothing pending), and one that died holding an entry.
    entries = rds.xreadgroup(group, "dead-clean", {stream: ">"}, count=1)[0][1]
    rds.xack(stream, group, entries[0][0])
    rds.xreadgroup(group, "dead-holding", {stream: ">"}, count=1)
    time.sleep(1.2)
    # One that read (and acked) just now: nothing pending, but not idle.
    rds.xack(stream, group, rds.xreadgroup(group, "alive-reader", {stream: ">"}, count=1)[0][1][0][0])
    assert set(consumers(rds, settings)) == {"dead-clean", "dead-holding", "alive-reader"}

    stop = threading.Event()
    t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_for(lambda: "dead-clean" not in consumers(rds, settings), timeout=10)
        left = consumers(rds, settings)
        assert left["dead-holding"] == 1  # still owns an entry: kept until it is reclaimed
        assert "alive-reader" in left
    finally:
        stop.set()
        t.join(10)
    # Once its entry has been claimed by a live worker, the holding one goes too.
    rds.xclaim(stream, group, "live-worker", 0, [rds.xpending_range(stream, group, "-", "+", 10,
                                                                    consumername="dead-holding")[0]["message_id"]])
    time.sleep(1.1)
    assert "dead-holding" in IngestWorker(settings, engine, rds, consumer="another").remove_dead_consumers()
