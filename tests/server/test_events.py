"""SSE: live events after commits, and gapless, duplicate-free resumption with Last-Event-ID."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import redis
from sqlalchemy import Engine

from server.ingest import IngestWorker
from server.settings import Settings

from .conftest import BACKENDS, LiveServer, run_start, step_msg, wait_for, xadd

ARMS = ["a", "b", "c"]


class EventReader:
    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines

    def next(self) -> dict[str, Any]:
        ev: dict[str, Any] = {}
        for line in self.lines:
            if not line:
                if "event" in ev or "data" in ev:
                    if "data" in ev:
                        ev["data"] = orjson.loads(ev["data"])
                    return ev
                continue
            if line.startswith(":"):
                continue  # ping / comment
            key, _, value = line.partition(":")
            ev[key] = value[1:] if value.startswith(" ") else value
        raise AssertionError("stream ended")


@contextmanager
def events(
    srv: LiveServer, run: str, last_event_id: str | None = None, after: int | None = None
) -> Iterator[EventReader]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
    params = {"after": after} if after is not None else {}
    with httpx.Client(base_url=srv.url, timeout=httpx.Timeout(10.0)) as c, c.stream(
        "GET", f"/api/runs/{run}/events", headers=headers, params=params
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        yield EventReader(resp.iter_lines())


def push_step(srv: LiveServer, rds: redis.Redis, settings: Settings, run: str, step: int) -> None:
    xadd(rds, settings, step_msg(run, step + 2, step, ARMS))
    wait_for(lambda: srv.client.get(f"/api/runs/{run}").json()["last_step"] == step)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_live_then_resume_without_gaps_or_duplicates(
    app_server: LiveServer, rds: redis.Redis, settings: Settings
) -> None:
    run = "sse-1"
    xadd(rds, settings, run_start(run, 1, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    push_step(app_server, rds, settings, run, 0)
    base = app_server.client.get(f"/api/runs/{run}").json()["event_seq"]
    assert base >= 1

    with events(app_server, run) as ev:
        ready = ev.next()
        assert (ready["event"], ready["id"], ready["data"]) == ("ready", str(base), {"run": run, "seq": base})
        push_step(app_server, rds, settings, run, 1)
        up = ev.next()
        assert (up["event"], up["id"]) == ("update", str(base + 1))
        assert [s["step"] for s in up["data"]["steps"]] == [1]
        # Every field of the contract: the signals the test's records omit are null (docs/sse.md).
        assert up["data"]["steps"][0]["arms"] == [
            {**r, "n_groups": None, "zero_var": None, "pass_hist": None} for r in step_msg(run, 3, 1, ARMS)["arms"]
        ]
        last_seen = up["id"]

    # Missed while disconnected: two batches and a command ack.
    push_step(app_server, rds, settings, run, 2)
    cmd = {"kind": "boost", "arm": "b", "value": 3}
    cid = app_server.client.post(f"/api/runs/{run}/commands", json=cmd).json()["id"]
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": run, "seq": 50, "ts": 1.0, "id": cid,
                         "status": "applied", "applied_step": 2, "message": ""})
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "applied")
    push_step(app_server, rds, settings, run, 3)

    with events(app_server, run, last_event_id=last_seen) as ev:
        ready = ev.next()
        assert (ready["event"], ready["id"]) == ("ready", last_seen)
        got = [ev.next() for _ in range(3)]
        assert [(e["event"], e["id"]) for e in got] == [("update", str(base + i)) for i in (2, 3, 4)]
        assert [s["step"] for s in got[0]["data"]["steps"]] == [2]
        assert got[0]["data"]["steps"][0]["arms"] == [
            {**r, "n_groups": None, "zero_var": None, "pass_hist": None} for r in step_msg(run, 4, 2, ARMS)["arms"]
        ]
        assert got[1]["data"]["acks"] == [{
            "id": cid, "kind": "boost", "arm": "b", "value": 3.0, "steps": None, "status": "applied",
            "applied_step": 2, "message": "", "label": "boost b×3", "scheduler": None, "params": None,
        }]
        assert [s["step"] for s in got[2]["data"]["steps"]] == [3]
        # Then live again, continuing the sequence.
        push_step(app_server, rds, settings, run, 4)
        live = ev.next()
        assert (live["event"], live["id"]) == ("update", str(base + 5))
        assert [s["step"] for s in live["data"]["steps"]] == [4]


def test_unknown_last_event_id_resets(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "sse-2"
    xadd(rds, settings, run_start(run, 1, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    with events(app_server, run, last_event_id="999") as ev:
        first = ev.next()
        assert first["event"] == "reset" and first["id"] == "1"
        assert ev.next()["event"] == "ready"
    r = app_server.client.get(f"/api/runs/{run}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 422
    with events(app_server, run, last_event_id="-3") as ev:
        assert [(e["event"], e["id"]) for e in (ev.next(), ev.next())] == [("ready", "0"), ("update", "1")]


def test_first_connect_after_the_loaded_state(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "sse-3"
    xadd(rds, settings, run_start(run, 1, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    push_step(app_server, rds, settings, run, 0)
    loaded = app_server.client.get(f"/api/runs/{run}").json()["event_seq"]
    push_step(app_server, rds, settings, run, 1)  # committed after the page loaded, before it connects
    with events(app_server, run, after=loaded) as ev:
        ready, update = ev.next(), ev.next()
        assert (ready["event"], ready["id"]) == ("ready", str(loaded))
        assert (update["event"], update["id"]) == ("update", str(loaded + 1))
        assert [s["step"] for s in update["data"]["steps"]] == [1]


def test_a_lost_live_message_is_filled_from_sql(
    make_server: Callable[..., LiveServer], rds: redis.Redis, settings: Settings, engine: Engine
) -> None:
    srv = make_server(settings, ingest=False)
    worker = IngestWorker(settings, engine, rds)
    worker.ensure_group()
    run = "sse-4"
    xadd(rds, settings, run_start(run, 1, ARMS))
    worker.read_once()
    with events(srv, run) as ev:
        ready = ev.next()
        assert ready["event"] == "ready"
        base = int(ready["id"])
        # Batch 1 commits but its live message never arrives (a publish lost with a Redis blip).
        xadd(rds, settings, step_msg(run, 2, 0, ARMS))
        finish = worker._finish
        worker._finish = lambda ids, dead, events: finish(ids, dead, [])  # type: ignore[method-assign]
        try:
            worker.read_once()
        finally:
            worker._finish = finish  # type: ignore[method-assign]
        assert rds.xpending(settings.keys.ingest, "ingest")["pending"] == 0  # committed and acked
        xadd(rds, settings, step_msg(run, 3, 1, ARMS))
        worker.read_once()
        got = [ev.next(), ev.next()]
        assert [(e["event"], e["id"]) for e in got] == [("update", str(base + 1)), ("update", str(base + 2))]
        assert [[s["step"] for s in e["data"]["steps"]] for e in got] == [[0], [1]]
