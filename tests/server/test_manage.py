"""Managing runs through the JSON API: tags, note and archiving (PATCH), deleting (DELETE), who may, and
the audit log; on real SQLite and PostgreSQL, real Redis, the real app over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from bs4 import BeautifulSoup
from sqlalchemy import Engine, Table, func, select

from server import auth
from server.db import make_sessionmaker
from server.models import Base
from server.settings import Settings
from server.store import manage, users
from server.store.sql import RUNS

from .conftest import BACKENDS, LiveServer, ingest_docs, run_start, step_msg

backends = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)

ARMS = ["a1", "a2", "a3"]


def eval_msg(run: str, seq: int, step: int) -> dict[str, Any]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": 1_700_000_000.0 + step, "name": "greedy",
            "step": step, "arms": [{"arm": a, "accuracy": 0.5} for a in ARMS]}


def make_run(engine: Engine, run: str, steps: int = 300) -> None:
    """A run with a row in every run-keyed table but commands (posted through the API) and people's tags."""
    ingest_docs(engine, [
        run_start(run, 1, ARMS, config={"tags": ["from-config"]}),
        *(step_msg(run, s + 2, s, ARMS) for s in range(steps)),
        eval_msg(run, steps + 10, 0), eval_msg(run, steps + 11, steps - 1),
        {"v": 1, "type": "scheduler", "run": run, "seq": steps + 12, "ts": 1700000000.0, "step": steps - 1,
         "name": "uniform", "params": {}, "frozen": False, "state": None},
    ])


def run_keyed_tables() -> list[Table]:
    return [t for t in Base.metadata.sorted_tables if "run_id" in t.c]


def counts(engine: Engine, run_id: int) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: int(conn.scalar(select(func.count()).select_from(t).where(t.c.run_id == run_id)) or 0)
                for t in run_keyed_tables()}


def rid(engine: Engine, run: str) -> int | None:
    with engine.connect() as conn:
        return conn.scalar(select(RUNS.c.id).where(RUNS.c.name == run))


def test_every_run_keyed_table_is_deleted() -> None:
    """A new table keyed by a run must be added to manage.RUN_TABLES, or deleting a run would leave rows."""
    assert {t.name for t in run_keyed_tables()} == {t.name for t, _ in manage.RUN_TABLES}


@backends
def test_tags_note_and_archive(settings: Settings, engine: Engine, make_server: Callable[..., LiveServer]) -> None:
    make_run(engine, "mg-1", steps=3)
    srv = make_server(settings)
    c = srv.client
    r = c.patch("/api/runs/mg-1", json={"add_tags": ["ablation", " lr-sweep ", "ablation"], "note": "  try 2e-6  "})
    assert r.status_code == 200, r.text
    assert r.json() == {"name": "mg-1", "archived_at": None, "note": "try 2e-6", "tags": [
        {"tag": "from-config", "source": "agent"}, {"tag": "ablation", "source": "user"},
        {"tag": "lr-sweep", "source": "user"}]}
    r = c.patch("/api/runs/mg-1", json={"remove_tags": ["ablation"], "add_tags": ["zz"], "archived": True})
    body = r.json()
    assert [t["tag"] for t in body["tags"]] == ["from-config", "lr-sweep", "zz"] and body["archived_at"] is not None
    # Archived: hidden from the default list, shown when asked for.
    assert [x["name"] for x in c.get("/api/runs").json()] == []
    assert [x["name"] for x in c.get("/api/runs", params={"archived": "only"}).json()] == ["mg-1"]
    assert [x["name"] for x in c.get("/api/runs", params={"tag": "lr-sweep", "archived": "all"}).json()] == ["mg-1"]
    # Nothing to change changes nothing and is not audited; "" clears the note.
    assert c.patch("/api/runs/mg-1", json={"archived": True, "add_tags": ["zz"]}).status_code == 200
    r = c.patch("/api/runs/mg-1", json={"archived": False, "note": ""})
    assert (r.json()["archived_at"], r.json()["note"]) == (None, None)
    log = c.get("/api/runs/mg-1/actions").json()
    assert [(a["action"], a["detail"], a["actor"]) for a in reversed(log)] == [
        ("tag", "ablation", "api"), ("tag", "lr-sweep", "api"), ("note", "try 2e-6", "api"),
        ("untag", "ablation", "api"), ("tag", "zz", "api"), ("archive", "", "api"),
        ("note", "", "api"), ("unarchive", "", "api"),
    ]
    # Refused, with nothing changed: the agent's tag, a tag the run lacks, bad tags, a long note, unknown fields.
    for body, status, message in (
        ({"remove_tags": ["from-config"]}, 422, "comes from the run's config"),
        ({"remove_tags": ["nope"], "add_tags": ["new"]}, 422, "run 'mg-1' has no tag 'nope'"),
        ({"add_tags": ["a,b"]}, 422, "commas or control characters"),
        ({"add_tags": ["x" * 65]}, 422, "at most 64 characters"),
        ({"add_tags": ["   "]}, 422, "a tag cannot be empty"),
        ({"note": "n" * 10_001}, 422, "note"),
        ({"colour": "red"}, 422, "colour"),
    ):
        r = c.patch("/api/runs/mg-1", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, "invalid_request"), (body, r.text)
        assert message in r.json()["error"]["message"], (body, r.text)
    assert [t["tag"] for t in c.patch("/api/runs/mg-1", json={}).json()["tags"]] == ["from-config", "lr-sweep", "zz"]
    assert len(c.get("/api/runs/mg-1/actions").json()) == len(log)
    r = c.patch("/api/runs/nope", json={"note": "x"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "run_not_found")
    # A new run_start replaces the agent's tags; people's stay.
    ingest_docs(engine, [run_start("mg-1", 50, ARMS, config={"tags": ["v2", "zz"]})])
    assert [(t["tag"], t["source"]) for t in c.get("/api/runs").json()[0]["tags"]] == [
        ("v2", "agent"), ("lr-sweep", "user"), ("zz", "user")]


@backends
def test_viewers_and_anonymous_are_refused(
    settings: Settings, engine: Engine, make_server: Callable[..., LiveServer]
) -> None:
    make_run(engine, "mg-2", steps=3)
    view, view_hash = auth.new_token()
    op, op_hash = auth.new_token()
    with make_sessionmaker(engine)() as session:
        users.add_token(session, "watcher", view_hash, "viewer")
        users.add_token(session, "ops-bot", op_hash, "operator")
        session.commit()
    srv = make_server(settings)
    c = srv.client
    for headers, status, code in (({"Authorization": f"Bearer {view}"}, 403, "forbidden"), ({}, 401, "unauthorized")):
        r = c.patch("/api/runs/mg-2", json={"note": "x"}, headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
        r = c.delete("/api/runs/mg-2", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    # Viewers see what operators set.
    r = c.patch("/api/runs/mg-2", json={"note": "by ops"}, headers={"Authorization": f"Bearer {op}"})
    assert r.status_code == 200
    listed = c.get("/api/runs", headers={"Authorization": f"Bearer {view}"}).json()
    assert [(x["name"], x["note"]) for x in listed] == [("mg-2", "by ops")]
    actions = c.get("/api/runs/mg-2/actions", headers={"Authorization": f"Bearer {view}"}).json()
    assert [(a["action"], a["actor"]) for a in actions] == [("note", "ops-bot")]
    assert c.get("/api/runs/mg-2/actions").status_code == 401  # a credential exists: viewing needs one
    assert rid(engine, "mg-2") is not None


@backends
def test_delete_removes_the_run_everywhere(
    settings: Settings, engine: Engine, rds: redis.Redis, make_server: Callable[..., LiveServer]
) -> None:
    make_run(engine, "mg-del")
    make_run(engine, "mg-keep")
    srv = make_server(settings)
    c = srv.client
    for run in ("mg-del", "mg-keep"):
        assert c.post(f"/api/runs/{run}/commands", json={"kind": "pin", "arm": "a1", "value": 0.5}).status_code == 202
        assert c.patch(f"/api/runs/{run}", json={"add_tags": ["mine"], "note": "n"}).status_code == 200
        rds.set(settings.keys.control_applied(run), "0-1")  # what the run's agent keeps
        # A person's answer to an arm's diagnosis (suggestion_responses).
        arm = next(a for a in c.get(f"/api/runs/{run}/diagnoses").json()["arms"] if a["diagnosis"])
        r = c.post(f"/api/runs/{run}/suggestions/dismiss",
                   json={"arm": arm["arm"], "diagnosis": arm["diagnosis"], "since_step": arm["since_step"]})
        assert r.status_code == 201, r.text
    del_id, keep_id = rid(engine, "mg-del"), rid(engine, "mg-keep")
    assert del_id is not None and keep_id is not None
    before, keep_before = counts(engine, del_id), counts(engine, keep_id)
    assert all(n > 0 for n in before.values()), repr(before)  # the deletion has something to do in every table
    keys = [settings.keys.control("mg-del"), settings.keys.control_applied("mg-del")]
    assert rds.exists(*keys) == 2

    r = c.delete("/api/runs/mg-del")
    assert r.status_code == 200, r.text
    by_label = {label: n for label, n in r.json()["rows"].items()}
    assert by_label == {**{label: before[t.name] for t, label in manage.RUN_TABLES}, "run": 1}
    assert r.json()["redis_keys"] == 2

    assert counts(engine, del_id) == {t.name: 0 for t in run_keyed_tables()}
    assert rid(engine, "mg-del") is None
    assert rds.exists(*keys) == 0
    assert counts(engine, keep_id) == keep_before and rds.exists(settings.keys.control("mg-keep")) == 1
    assert [x["name"] for x in c.get("/api/runs", params={"archived": "all"}).json()] == ["mg-keep"]
    for path in ("/api/runs/mg-del", "/api/runs/mg-del/series", "/api/runs/mg-del/commands"):
        assert c.get(path).status_code == 404, path
    assert c.get("/runs/mg-del").status_code == 404
    compare = c.get("/compare", params={"runs": ["mg-del", "mg-keep"]})
    assert compare.status_code == 400  # the compare form, with its error
    assert "no run named 'mg-del'" in BeautifulSoup(compare.text, "html.parser").get_text()
    assert "mg-del" not in c.get("/compare").text
    # The audit row outlives the run.
    log = c.get("/api/runs/mg-del/actions").json()
    assert (log[0]["action"], log[0]["actor"]) == ("delete", "api")
    assert f"{before['arm_steps']} arm step rows" in log[0]["detail"]
    r = c.delete("/api/runs/mg-del")
    assert (r.status_code, r.json()["error"]["code"]) == (404, "run_not_found")

    # A trainer that keeps sending recreates the run, without its history.
    ingest_docs(engine, [step_msg("mg-del", 900, 300, ARMS)])
    back = c.get("/api/runs/mg-del").json()
    assert (back["last_step"], back["scheduler"], back["project"]) == (300, "unknown", "default")
    new_id = rid(engine, "mg-del")
    assert new_id is not None and new_id != del_id
    assert counts(engine, new_id)["evals"] == 0 and counts(engine, new_id)["commands"] == 0


@backends
def test_delete_needs_redis(
    settings: Settings, engine: Engine, make_server: Callable[..., LiveServer], private_redis: Any
) -> None:
    """When Redis cannot be reached, nothing is deleted (the control stream would outlive the run)."""
    make_run(engine, "mg-3", steps=3)
    srv = make_server(settings.model_copy(update={"redis_url": private_redis.url}))
    before = counts(engine, rid(engine, "mg-3") or -1)
    private_redis.stop()
    r = srv.client.delete("/api/runs/mg-3")
    assert (r.status_code, r.json()["error"]["code"]) == (503, "service_unavailable")
    assert counts(engine, rid(engine, "mg-3") or -1) == before
    assert srv.client.get("/api/runs/mg-3/actions").json() == []

