"""Accepting a suggestion on SQLite while ingest commits: the audit row is written under the write lock.

`POST /suggestions/accept` sends the command (steering.submit commits its own transaction), then reads
the run and writes the acceptance. Read in a deferred transaction, an ingest commit between that read
and the write made the write fail at once ("database is locked", a 503), which a CI run hit in the
cockpit's browser test. Here a writer on another connection tries to commit at exactly that moment.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from server.app import create_app
from server.routes import diagnoses as diagnoses_route
from server.settings import Settings
from tests.server.conftest import arm_record, engine, ingest_docs, run_start, settings, step_msg  # noqa: F401

ARMS = ["easy", "mid"]


def saturating_run(eng: Engine, run: str, steps: int = 40) -> None:
    """`easy` always solved (no gradient: saturated, retire suggested), `mid` learning."""
    docs: list[dict[str, Any]] = [run_start(run, 1, ARMS, scheduler="uniform", params={})]
    for s in range(steps):
        recs = [
            arm_record("easy", s, 0, p=0.5, n_step=64, n_total=64 * (s + 1), accuracy=1.0, mean_abs_adv=0.0,
                       zero_var=1.0, n_groups=8),
            arm_record("mid", s, 1, p=0.5, n_step=64, n_total=64 * (s + 1), accuracy=0.5, mean_abs_adv=0.5,
                       zero_var=0.1, n_groups=8),
        ]
        docs.append({**step_msg(run, s + 2, s, ARMS), "arms": recs})
    ingest_docs(eng, docs)


def test_accepting_a_suggestion_waits_for_an_ingest_commit_instead_of_failing(
    settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    saturating_run(engine, "race")
    real = diagnoses_route.store.record_response
    done = threading.Event()

    def ingest_commits_meanwhile(*args: Any, **kwargs: Any) -> Any:
        # Another connection (the ingest worker) writes and commits between the route's read and its write.
        def writer() -> None:
            with engine.begin() as conn:
                conn.execute(text("UPDATE runs SET last_seq = last_seq + 1 WHERE name = 'race'"))
            done.set()

        threading.Thread(target=writer, daemon=True).start()
        done.wait(0.5)  # committed at once unless this request holds the write lock
        return real(*args, **kwargs)

    monkeypatch.setattr(diagnoses_route.store, "record_response", ingest_commits_meanwhile)
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as c:
        arms = {a["arm"]: a for a in c.get("/api/runs/race/diagnoses").json()["arms"]}
        easy = arms["easy"]
        assert easy["diagnosis"] == "saturated" and easy["suggestion"]["kind"] == "retire"
        r = c.post("/api/runs/race/suggestions/accept",
                   json={"arm": "easy", "diagnosis": "saturated", "since_step": easy["since_step"]})
        assert r.status_code == 202, r.text
        assert done.wait(5)  # the other writer went through once the request committed
        responses = c.get("/api/runs/race/diagnoses").json()["responses"]
        assert [(x["arm"], x["response"]) for x in responses] == [("easy", "accepted")]
