"""Diagnoses end to end: a real agent streams through Redis to the app's ingest worker; the JSON API,
the live event replay and the suggestion endpoints answer over HTTP (docs/diagnosis.md)."""

from __future__ import annotations

import time

import numpy as np
from sqlalchemy import Engine

from server.settings import Settings
from server.store.events import events_since
from tests.server.conftest import REDIS_URL, LiveServer, ingest_docs, run_start, step_msg, wait_for
from trainer_agent import CurriculumAgent

G, PROMPTS = 8, 32


def step_bernoulli(agent: CurriculumAgent, rates: dict[str, float], rng: np.random.Generator, steps: int) -> None:
    """`steps` GRPO steps of PROMPTS groups of G, each completion correct with its arm's rate."""
    for _ in range(steps):
        chosen = agent.sample(PROMPTS)
        q = np.repeat([rates[a] for a in chosen], G)
        agent.observe([a for a in chosen for _ in range(G)], (rng.random(q.size) < q).astype(float),
                      groups=np.repeat(np.arange(PROMPTS), G))
        agent.end_step()


def test_a_saturated_arm_is_diagnosed_live_and_its_suggestion_accepted(
    app_server: LiveServer, settings: Settings, engine: Engine
) -> None:
    c = app_server.client
    rates = {"easy": 1.0, "mid": 0.5, "hard": 0.0}
    rng = np.random.default_rng(0)
    with CurriculumAgent("diag-live", list(rates), scheduler="uniform", redis_url=REDIS_URL,
                         key_prefix=settings.key_prefix, seed=0) as agent:
        step_bernoulli(agent, rates, rng, 40)
        wait_for(lambda: c.get("/api/runs/diag-live").json().get("last_step") == 39)
        got = c.get("/api/runs/diag-live/diagnoses").json()
        by_arm = {a["arm"]: a for a in got["arms"]}
        assert by_arm["easy"]["diagnosis"] == "saturated" and by_arm["hard"]["diagnosis"] == "too_hard"
        assert by_arm["mid"]["diagnosis"] == "learning"
        easy = by_arm["easy"]
        assert easy["suggestion"]["kind"] == "retire" and easy["suggestion"]["arm"] == "easy"
        want = f"saturated since step {easy['since_step']}: accuracy 1.00, 100 % zero-variance"
        assert easy["reason"].startswith(want)
        assert by_arm["hard"]["suggestion"]["kind"] == "boost" and by_arm["hard"]["suggestion"]["value"] == 0.25
        assert {(ch["arm"], ch["diagnosis"]) for ch in got["changes"]} >= {("easy", "saturated"), ("hard", "too_hard")}
        # The zero-variance share is a series like any metric.
        zv = c.get("/api/runs/diag-live/series", params={"metric": "zero_var", "arms": "easy"}).json()
        assert zv["series"][0]["values"] and set(zv["series"][0]["values"]) == {1.0}
        csv = c.get("/api/runs/diag-live/export.csv").text.splitlines()
        header = csv[0].split(",")
        assert header[10:13] == ["n_groups", "zero_var", "pass_hist"]
        easy_rows = [row.split(",") for row in csv[1:] if row.split(",")[2] == "easy"]
        assert easy_rows and all(r[11] == "1.0" and r[12] == "" for r in easy_rows)
        # The live events carried the changes: a resuming client gets them too.
        with engine.connect() as conn:
            replay = events_since(conn, "diag-live", 0, 10_000)
        assert replay is not None
        carried = [d for ev in replay[1] for d in ev.payload.get("diagnoses", [])]
        assert {(d["arm"], d["diagnosis"]) for d in carried} >= {("easy", "saturated")}
        # A stale suggestion is refused; the current one is sent with its reason and audited.
        stale = {"arm": "easy", "diagnosis": "learning", "since_step": 0}
        assert c.post("/api/runs/diag-live/suggestions/accept", json=stale).status_code == 409
        body = {"arm": "easy", "diagnosis": "saturated", "since_step": easy["since_step"]}
        r = c.post("/api/runs/diag-live/suggestions/accept", json=body)
        assert r.status_code == 202, r.text
        cmd_id = r.json()["command_id"]
        log = c.get("/api/runs/diag-live/commands").json()
        audit = [(x["id"], x["kind"], x["arm"], x["reason"]) for x in log]
        assert audit == [(cmd_id, "retire", "easy", easy["reason"])]
        r = c.post("/api/runs/diag-live/suggestions/dismiss",
                   json={"arm": "hard", "diagnosis": "too_hard", "since_step": by_arm["hard"]["since_step"],
                         "reason": "kept on purpose"})
        assert r.status_code == 201, r.text
        # The trainer applies the retire at a step after its transport has read the command.
        for _ in range(100):
            agent.observe(["mid"] * G, np.ones(G), groups=np.zeros(G, dtype=int))
            if any(a.id == cmd_id and a.status == "applied" for a in agent.end_step().acks):
                break
            time.sleep(0.05)
        assert agent.probabilities()["easy"] == 0.0
    responses = c.get("/api/runs/diag-live/diagnoses").json()["responses"]
    assert [(x["arm"], x["response"], x["command_id"]) for x in responses] == [
        ("easy", "accepted", cmd_id), ("hard", "dismissed", None)]
    wait_for(lambda: c.get("/api/runs/diag-live/commands").json()[0]["status"] == "applied")


def test_a_run_stored_before_diagnoses_is_diagnosed_on_first_read(app_server: LiveServer, engine: Engine) -> None:
    arms = ["a", "b"]
    docs = [run_start("old", 1, arms)]
    for step in range(30):
        m = step_msg("old", step + 2, step, arms)
        for r in m["arms"]:  # an older agent: no n_groups / zero_var / pass_hist
            r.update(n_step=64, n_total=64 * (step + 1), accuracy=1.0 if r["arm"] == "a" else 0.5,
                     mean_abs_adv=0.0 if r["arm"] == "a" else 0.9)
        docs.append(m)
    ingest_docs(engine, docs)
    with engine.begin() as conn:  # as if stored before the diagnoses existed
        conn.exec_driver_sql("DELETE FROM run_diagnoses")
        conn.exec_driver_sql("DELETE FROM diagnosis_changes")
    got = app_server.client.get("/api/runs/old/diagnoses").json()
    assert {a["arm"]: a["diagnosis"] for a in got["arms"]} == {"a": "saturated", "b": "learning"}
    assert got["step"] == 29
    assert "mean |A| 0.00" in got["arms"][0]["reason"]
