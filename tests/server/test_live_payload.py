"""The live `update` document (docs/sse.md): every documented field, published and replayed alike,
whatever the agent left out of its wire message."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server.store import commands as command_store
from server.store import ingest as ingest_store
from server.store.events import events_since
from server.store.sql import run_id
from server.wire import INGEST_ADAPTER

from .conftest import BACKENDS, run_start

ARMS = ["a", "b"]


def _apply(engine: Engine, *raws: bytes, first: int = 1) -> list[dict[str, Any]]:
    """Write raw wire documents in one batch; the published payloads, as a client parses them."""
    entries = [
        ingest_store.Entry(f"{first + n}-0", INGEST_ADAPTER.validate_json(raw), raw) for n, raw in enumerate(raws)
    ]
    with engine.begin() as conn:
        events = ingest_store.apply_ingest(conn, entries)
    return [orjson.loads(orjson.dumps(e.payload)) for e in events]


def _replayed(engine: Engine, run: str, after: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        got = events_since(conn, run, after, 100)
    assert got is not None
    return [orjson.loads(orjson.dumps(e.payload)) for e in got[1]]


def test_labels() -> None:
    label = command_store.command_label
    assert label("pin", "kk3", 0.5, None) == "pin kk3=0.5"
    assert label("boost", "kk4", 2.0, 50) == "boost kk4×2 for 50 steps"
    assert label("boost", "kk4", 1.5, None) == "boost kk4×1.5"
    assert label("retire", "kk5", None, None) == "retire kk5"
    assert label("release", "kk5", None, None) == "release kk5"


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_steps_carry_every_field(engine: Engine) -> None:
    run = "doc-steps"
    start = orjson.dumps(run_start(run, 1, ARMS))
    # Only the required arm keys and a key the contract does not know. (A non-finite number is refused at
    # ingest: tests/server/test_hardening.py.)
    step = (
        b'{"v": 1, "type": "step", "run": "doc-steps", "seq": 2, "ts": 1700000000.5, "step": 0, '
        b'"metrics": {"loss": 1e300, "kl": 0.25}, "colour": "red", "arms": ['
        b'{"arm": "a", "p": 0.25, "n_step": 3, "n_total": 3, "extra": 1}, '
        b'{"arm": "b", "p": 0.75, "n_step": 0, "n_total": 0, "state": "retired", "pin": 0.75}]}'
    )
    (published,) = _apply(engine, start, step)
    assert set(published) == {"run", "seq", "entry_ids", "steps", "status", "diagnoses"}
    assert (published["run"], published["seq"]) == (run, 1)
    # Arm b is retired from its first step: a diagnosis change, dated at that step (docs/diagnosis.md).
    assert [(d["arm"], d["diagnosis"], d["previous"], d["since_step"], d["step"], d["suggestion"])
            for d in published["diagnoses"]] == [("b", "retired", None, 0, 0, None)]
    assert published["steps"] == [{
        "step": 0, "ts": 1700000000.5, "metrics": {"loss": 1e300, "kl": 0.25},
        "arms": [
            {"arm": "a", "p": 0.25, "score": None, "parts": {}, "n_step": 3, "n_total": 3, "mean_abs_adv": None,
             "mean_reward": None, "accuracy": None, "state": "active", "pin": None, "boost": None,
             "n_groups": None, "zero_var": None, "pass_hist": None},
            {"arm": "b", "p": 0.75, "score": None, "parts": {}, "n_step": 0, "n_total": 0, "mean_abs_adv": None,
             "mean_reward": None, "accuracy": None, "state": "retired", "pin": 0.75, "boost": None,
             "n_groups": None, "zero_var": None, "pass_hist": None},
        ],
    }]
    assert published["status"] == {
        "status": "running", "started_at": published["status"]["started_at"], "ended_at": None, "last_step": 0,
    }
    (replayed,) = _replayed(engine, run, 0)
    assert replayed["entry_ids"] == ["2-0"]  # the steps' entries
    assert {k: v for k, v in replayed.items() if k != "entry_ids"} == {
        k: v for k, v in published.items() if k != "entry_ids"
    }


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_acks_say_what_the_command_was(engine: Engine) -> None:
    run = "doc-acks"
    _apply(engine, orjson.dumps(run_start(run, 1, ARMS)))
    with Session(engine) as session:
        rid = run_id(session, run)
        boost = command_store.record_command(session, rid, "boost", "a", 2.0, 50, "tester", "why not")
        retire = command_store.record_command(session, rid, "retire", "b", None, None, "tester", "")
        session.commit()

    def ack(seq: int, cid: str, status: str, step: int | None, message: str) -> bytes:
        return orjson.dumps({"v": 1, "type": "command_ack", "run": run, "seq": seq, "ts": 1700000000.0, "id": cid,
                             "status": status, "applied_step": step, "message": message})

    (published,) = _apply(engine, ack(2, boost.id, "applied", 7, ""), ack(3, retire.id, "rejected", None, "last arm"),
                          first=2)
    expected = [
        {"id": boost.id, "kind": "boost", "arm": "a", "value": 2.0, "steps": 50, "status": "applied",
         "applied_step": 7, "message": "", "label": "boost a×2 for 50 steps", "scheduler": None, "params": None},
        {"id": retire.id, "kind": "retire", "arm": "b", "value": None, "steps": None, "status": "rejected",
         "applied_step": None, "message": "last arm", "label": "retire b", "scheduler": None, "params": None},
    ]
    assert set(published) == {"run", "seq", "entry_ids", "acks"}
    assert published["acks"] == expected
    (replayed,) = _replayed(engine, run, published["seq"] - 1)
    assert replayed == {"run": run, "seq": published["seq"], "entry_ids": [], "acks": expected}
    # A second answer to a settled command changes nothing, so it is no event.
    assert _apply(engine, ack(4, boost.id, "rejected", None, "late"), first=4) == []
