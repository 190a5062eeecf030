"""Concurrent command posts to one run are decided one after the other, on every backend.

Each post decides against the run's state with the pending commands replayed; two posts deciding at the
same moment must not both pass a check that only one of them can (on PostgreSQL every web process and
thread serialises a run's posts with a transaction-scoped advisory lock; on SQLite the write lock does).
Here: an 8-arm run, eight operators each retire a different arm at once. Retiring the last active arm is
refused, so exactly seven are accepted, whatever the interleaving.
"""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from sqlalchemy import Engine

from .conftest import BACKENDS, LiveServer, ingest_docs, run_start, step_msg

ARMS = [f"c{i}" for i in range(8)]


def _retire_at_once(url: str, run: str, arms: list[str]) -> list[int]:
    """Each arm retired by a client of its own, all posts released together; their status codes."""
    barrier = threading.Barrier(len(arms))
    codes: list[int] = []
    lock = threading.Lock()

    def retire(arm: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            barrier.wait()
            r = client.post(f"/api/runs/{run}/commands", json={"kind": "retire", "arm": arm})
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=retire, args=(a,)) for a in arms]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return codes


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_concurrent_retires_never_retire_every_arm(make_server, settings, engine: Engine) -> None:
    srv: LiveServer = make_server(settings, ingest=False)
    for round_ in range(4):
        run = f"race-{round_}"
        ingest_docs(engine, [run_start(run, 1, ARMS), step_msg(run, 2, 0, ARMS)])
        codes = _retire_at_once(srv.url, run, ARMS)
        assert Counter(codes) == {202: len(ARMS) - 1, 409: 1}, (round_, codes)
        pending = srv.client.get(f"/api/runs/{run}/commands").json()
        assert len([c for c in pending if c["status"] == "pending"]) == len(ARMS) - 1
