"""Evaluations (`eval` messages, agent.log_eval): ingest, the API, the CSV exports and the live events,
against real Redis, real SQLite / PostgreSQL and the real app over HTTP."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, text

from server.ingest import IngestWorker
from server.settings import Settings
from trainer_agent import CurriculumAgent

from .conftest import BACKENDS, LiveServer, run_start, step_msg, wait_for, xadd
from .test_events import events

pytestmark = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)

ARMS = ["easy", "medium", "hard"]


def eval_msg(run: str, seq: int, step: int, arms: list[dict[str, Any]], name: str = "greedy") -> dict[str, Any]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": 1_700_000_000.0 + step, "name": name,
            "step": step, "arms": arms}


def rec(arm: str, accuracy: float, correct: float | None = None, total: int | None = None) -> dict[str, Any]:
    return {"arm": arm, "accuracy": accuracy, "correct": correct, "total": total}


def point(name: str, step: int, arm: str, accuracy: float, correct: float | None = None,
          total: int | None = None) -> dict[str, Any]:
    return {"name": name, "step": step, "arm": arm, "accuracy": accuracy, "correct": correct, "total": total}


def drain(worker: IngestWorker) -> None:
    worker.ensure_group()
    while worker.read_once():
        pass


def eval_rows(engine: Engine, run: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT e.name, e.step, e.arm, e.accuracy, e.correct, e.total, e.ts FROM evals e"
            " JOIN runs r ON r.id = e.run_id WHERE r.name = :run ORDER BY e.name, e.step, e.arm"
        ), {"run": run})]


# -- ingest -------------------------------------------------------------------------------------------
def test_evals_are_stored_and_published_once(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    ps = rds.pubsub()
    ps.subscribe(settings.keys.live("ev1"))
    assert ps.get_message(timeout=2)["type"] == "subscribe"
    worker = IngestWorker(settings, engine, rds)
    xadd(rds, settings, run_start("ev1", 1, ARMS), step_msg("ev1", 2, 0, ARMS), step_msg("ev1", 3, 1, ARMS),
         # A held-out arm that is no training arm, and a second evaluation set at the same step.
         eval_msg("ev1", 4, 0, [rec("hard", 0.25, 5, 20), rec("easy", 0.9, 18, 20), rec("unseen", 0.5)]),
         eval_msg("ev1", 5, 0, [rec("easy", 0.75)], name="sampled"))
    drain(worker)
    first = orjson.loads(ps.get_message(timeout=5)["data"])
    # One batch: the steps and the evaluations, by name, step and arm.
    assert [s["step"] for s in first["steps"]] == [0, 1]
    assert first["evals"] == [
        point("greedy", 0, "easy", 0.9, 18.0, 20), point("greedy", 0, "hard", 0.25, 5.0, 20),
        point("greedy", 0, "unseen", 0.5), point("sampled", 0, "easy", 0.75),
    ]
    assert eval_rows(engine, "ev1") == [
        ("greedy", 0, "easy", 0.9, 18.0, 20, 1_700_000_000.0),
        ("greedy", 0, "hard", 0.25, 5.0, 20, 1_700_000_000.0),
        ("greedy", 0, "unseen", 0.5, None, None, 1_700_000_000.0),
        ("sampled", 0, "easy", 0.75, None, None, 1_700_000_000.0),
    ]
    with engine.connect() as conn:
        # An evaluation is not training progress, and its arms are not training arms.
        assert conn.execute(text("SELECT last_step FROM runs WHERE name = 'ev1'")).scalar_one() == 1
        assert sorted(conn.execute(text("SELECT name FROM arms")).scalars()) == sorted(ARMS)

    # Re-sent with other values (a resumed trainer), next to a new point: the first write wins, and
    # only the new point is published.
    xadd(rds, settings, eval_msg("ev1", 6, 0, [rec("easy", 0.1, 2, 20), rec("hard", 0.0, 0, 20)]),
         eval_msg("ev1", 7, 25, [rec("easy", 0.95, 19, 20), rec("easy", 0.0, 0, 20)][:1]))
    drain(worker)
    second = orjson.loads(ps.get_message(timeout=5)["data"])
    assert second["seq"] == first["seq"] + 1
    assert second["evals"] == [point("greedy", 25, "easy", 0.95, 19.0, 20)]
    assert "steps" not in second
    # Nothing but duplicates: stored as before, and no event.
    xadd(rds, settings, eval_msg("ev1", 8, 25, [rec("easy", 0.05, 1, 20)]))
    drain(worker)
    assert ps.get_message(timeout=1) is None
    ps.close()
    rows = eval_rows(engine, "ev1")
    assert [r[:6] for r in rows] == [
        ("greedy", 0, "easy", 0.9, 18.0, 20), ("greedy", 0, "hard", 0.25, 5.0, 20),
        ("greedy", 0, "unseen", 0.5, None, None),
        ("greedy", 25, "easy", 0.95, 19.0, 20), ("sampled", 0, "easy", 0.75, None, None),
    ]


def test_a_duplicate_within_one_batch_keeps_the_first(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    xadd(rds, settings, run_start("ev2", 1, ARMS), eval_msg("ev2", 2, 5, [rec("easy", 0.5, 10, 20)]),
         eval_msg("ev2", 3, 5, [rec("easy", 0.6, 12, 20)]))
    drain(IngestWorker(settings, engine, rds))
    assert [r[:6] for r in eval_rows(engine, "ev2")] == [("greedy", 5, "easy", 0.5, 10.0, 20)]


def test_invalid_evals_are_dead_lettered_with_the_reason(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    xadd(rds, settings, run_start("ev3", 1, ARMS))
    bad = {
        "accuracy above 1": eval_msg("ev3", 2, 0, [rec("easy", 1.5)]),
        "correct over total": eval_msg("ev3", 3, 0, [rec("easy", 0.5, 30, 20)]),
        "correct without total": eval_msg("ev3", 4, 0, [rec("easy", 0.5, 10)]),
        "total 0": eval_msg("ev3", 5, 0, [rec("easy", 0.0, 0, 0)]),
        "arm twice": eval_msg("ev3", 6, 0, [rec("easy", 0.5), rec("easy", 0.6)]),
        "no arm": eval_msg("ev3", 7, 0, []),
        "negative step": eval_msg("ev3", 8, -1, [rec("easy", 0.5)]),
        "long name": eval_msg("ev3", 9, 0, [rec("easy", 0.5)], name="n" * 65),
        "control in the name": eval_msg("ev3", 10, 0, [rec("easy", 0.5)], name="greedy\n"),
        "blank arm": eval_msg("ev3", 11, 0, [rec(" ", 0.5)]),
    }
    ids = dict(zip(bad, xadd(rds, settings, *bad.values()), strict=True))
    nan = orjson.dumps(eval_msg("ev3", 12, 0, [rec("easy", 0.5)])).replace(b'"accuracy":0.5', b'"accuracy":NaN')
    ids["accuracy NaN"] = xadd(rds, settings, nan)[0]
    good = xadd(rds, settings, eval_msg("ev3", 13, 0, [rec("easy", 0.5)]))
    drain(IngestWorker(settings, engine, rds))
    reasons = {f[b"entry_id"].decode(): f[b"reason"].decode() for _, f in rds.xrange(settings.keys.dead)}
    assert set(reasons) == set(ids.values()) and good[0] not in reasons
    got = {what: reasons[eid] for what, eid in ids.items()}
    assert got == {
        "accuracy above 1": "validation failed: eval.arms.0.accuracy: Input should be less than or equal to 1",
        "correct over total": "validation failed: eval.arms.0: Value error, arm 'easy': correct (30.0) is more than"
                              " total (20)",
        "correct without total": "validation failed: eval.arms.0: Value error, arm 'easy': correct is given"
                                 " without total",
        "total 0": "validation failed: eval.arms.0.total: Input should be greater than or equal to 1",
        "arm twice": "validation failed: eval.arms: Value error, arm 'easy' appears more than once",
        "no arm": "validation failed: eval.arms: List should have at least 1 item after validation, not 0",
        "negative step": "validation failed: eval.step: Input should be greater than or equal to 0",
        "long name": "validation failed: eval.name: Value error, an evaluation name has at most 64 characters,"
                     " got 65",
        "control in the name": "validation failed: eval.name: Value error, evaluation name 'greedy\\n' contains"
                               " the control or unassigned character U+000A",
        "blank arm": "validation failed: eval.arms.0.arm: Value error, arm name must not be empty or blank",
        "accuracy NaN": "validation failed: eval.arms.0.accuracy: Input should be a finite number",
    }
    assert [r[:6] for r in eval_rows(engine, "ev3")] == [("greedy", 0, "easy", 0.5, None, None)]


# -- the API and the CSV exports -------------------------------------------------------------------
def test_evals_api(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "ev-api"
    xadd(rds, settings, run_start(run, 1, ARMS),
         eval_msg(run, 2, 25, [rec("medium", 0.5, 10, 20), rec("easy", 0.8, 16, 20)]),
         eval_msg(run, 3, 0, [rec("easy", 0.4, 8, 20)]),
         eval_msg(run, 4, 0, [rec("held-out/geo", 0.3)], name="aime"))
    wait_for(lambda: len(app_server.client.get(f"/api/runs/{run}/evals").json().get("evals", [])) == 4)
    got = app_server.client.get(f"/api/runs/{run}/evals").json()
    assert got == {"run": run, "names": ["aime", "greedy"], "evals": [
        point("aime", 0, "held-out/geo", 0.3),
        point("greedy", 0, "easy", 0.4, 8.0, 20),
        point("greedy", 25, "easy", 0.8, 16.0, 20), point("greedy", 25, "medium", 0.5, 10.0, 20),
    ]}
    only = app_server.client.get(f"/api/runs/{run}/evals", params={"name": "aime"}).json()
    assert only == {"run": run, "names": ["aime", "greedy"], "evals": [point("aime", 0, "held-out/geo", 0.3)]}
    assert app_server.client.get(f"/api/runs/{run}/evals", params={"name": "nope"}).json()["evals"] == []

    xadd(rds, settings, run_start("ev-none", 1, ARMS))
    wait_for(lambda: app_server.client.get("/api/runs/ev-none").status_code == 200)
    assert app_server.client.get("/api/runs/ev-none/evals").json() == {"run": "ev-none", "names": [], "evals": []}
    missing = app_server.client.get("/api/runs/no-such-run/evals")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "no run named 'no-such-run'"

    r = app_server.client.get(f"/api/runs/{run}/export.csv", params={"what": "evals"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="{run}-evals.csv"' in r.headers["content-disposition"]
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["name", "step", "arm", "accuracy", "correct", "total", "ts"],
        ["aime", "0", "held-out/geo", "0.3", "", "", "1700000000.0"],
        ["greedy", "0", "easy", "0.4", "8.0", "20", "1700000000.0"],
        ["greedy", "25", "easy", "0.8", "16.0", "20", "1700000025.0"],
        ["greedy", "25", "medium", "0.5", "10.0", "20", "1700000025.0"],
    ]
    assert app_server.client.get("/api/runs/no-such-run/export.csv", params={"what": "evals"}).status_code == 404


def test_steps_csv_has_every_metric(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "ev-steps-csv"
    xadd(rds, settings, run_start(run, 1, ARMS),
         step_msg(run, 2, 0, ARMS, metrics={"loss": 0.5, "kl": 0.01}),
         step_msg(run, 3, 1, ARMS, metrics={"loss": 0.25}),
         step_msg(run, 4, 2, ARMS, metrics={"loss": 0.125, "kl": 0.02, "grad norm": 3.0}))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json().get("last_step") == 2)
    r = app_server.client.get(f"/api/runs/{run}/export.csv", params={"what": "steps"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert list(csv.reader(io.StringIO(r.text))) == [
        ["step", "ts", "grad norm", "kl", "loss"],
        ["0", "1700000000.0", "", "0.01", "0.5"],
        ["1", "1700000001.0", "", "", "0.25"],
        ["2", "1700000002.0", "3.0", "0.02", "0.125"],
    ]
    xadd(rds, settings, run_start("ev-no-steps", 1, ARMS))
    wait_for(lambda: app_server.client.get("/api/runs/ev-no-steps").status_code == 200)
    empty = app_server.client.get("/api/runs/ev-no-steps/export.csv", params={"what": "steps"})
    assert empty.text == "step,ts\n"
    wrong = app_server.client.get(f"/api/runs/{run}/export.csv", params={"what": "everything"})
    assert wrong.status_code == 422


# -- live events ------------------------------------------------------------------------------------
def test_evals_live_and_resumed(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "ev-sse"
    xadd(rds, settings, run_start(run, 1, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    base = app_server.client.get(f"/api/runs/{run}").json()["event_seq"]

    def n_evals() -> int:
        return len(app_server.client.get(f"/api/runs/{run}/evals").json()["evals"])

    with events(app_server, run, after=base) as ev:
        assert ev.next()["event"] == "ready"
        xadd(rds, settings, eval_msg(run, 2, 0, [rec("hard", 0.2, 4, 20), rec("easy", 0.7, 14, 20)]))
        up = ev.next()
        assert (up["event"], up["id"]) == ("update", str(base + 1))
        assert up["data"]["evals"] == [
            point("greedy", 0, "easy", 0.7, 14.0, 20), point("greedy", 0, "hard", 0.2, 4.0, 20),
        ]
        assert "steps" not in up["data"] and "acks" not in up["data"]

    # Missed while disconnected: a step, then an evaluation in a batch of its own, then a duplicate.
    xadd(rds, settings, step_msg(run, 3, 0, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["last_step"] == 0)
    xadd(rds, settings, eval_msg(run, 4, 25, [rec("easy", 0.8)], name="sampled"))
    wait_for(lambda: n_evals() == 3)
    xadd(rds, settings, eval_msg(run, 5, 25, [rec("easy", 0.1)], name="sampled"))
    xadd(rds, settings, step_msg(run, 6, 1, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["last_step"] == 1)
    current = app_server.client.get(f"/api/runs/{run}").json()["event_seq"]
    assert current == base + 4

    with events(app_server, run, last_event_id=str(base)) as ev:
        assert ev.next()["event"] == "ready"
        got = [ev.next()["data"] for _ in range(4)]
    assert [e["seq"] for e in got] == [base + 1, base + 2, base + 3, base + 4]
    # Rebuilt alike: the same evaluation points as the live event.
    assert got[0]["evals"] == [point("greedy", 0, "easy", 0.7, 14.0, 20), point("greedy", 0, "hard", 0.2, 4.0, 20)]
    assert "evals" not in got[1] and [s["step"] for s in got[1]["steps"]] == [0]
    assert got[2]["evals"] == [point("sampled", 25, "easy", 0.8)]
    assert "evals" not in got[3] and [s["step"] for s in got[3]["steps"]] == [1]


# -- the agent, end to end ----------------------------------------------------------------------------
def test_agent_log_eval_reaches_the_api(app_server: LiveServer, settings: Settings) -> None:
    run = "ev-agent"
    agent = CurriculumAgent(run, ARMS, redis_url=settings.redis_url, key_prefix=settings.key_prefix)
    try:
        sent = agent.log_eval({"easy": (9, 10), "hard": 0.25, "geometry": {"correct": 1, "total": 4}}, n={"hard": 8},
                              name="heldout", step=0)
        assert sent == {"easy": 0.9, "hard": 0.25, "geometry": 0.25}
        deadline = time.monotonic() + 15
        while not app_server.client.get(f"/api/runs/{run}/evals").json().get("evals"):
            assert time.monotonic() < deadline, "the evaluation never reached the API"
            time.sleep(0.05)
    finally:
        agent.close()
    assert app_server.client.get(f"/api/runs/{run}/evals").json()["evals"] == [
        point("heldout", 0, "easy", 0.9, 9.0, 10), point("heldout", 0, "geometry", 0.25, 1.0, 4),
        point("heldout", 0, "hard", 0.25, 2.0, 8),
    ]
