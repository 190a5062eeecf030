"""The runs table (store.runs_table) and the JSON runs list: every column's sort (empty values last, ties
newest first), pages, filters, and the summary columns' values, on real SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from server import managing
from server.db import make_sessionmaker
from server.errors import InvalidRequest
from server.settings import Settings
from server.store import commands as command_store
from server.store.manage import LabelChange
from server.store.runs_table import SORTS, RunsQuery, runs_table
from server.store.sql import COMMANDS, RUNS, run_id, utcnow

from .conftest import BACKENDS, LiveServer, ingest_docs, run_start, step_msg

pytestmark = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)

# Taken when the module is collected, which in a full suite is minutes before these tests run: "now"
# is an hour ahead, so the running run t-b stays fresh (not stale) however long the suite takes.
NOW = utcnow() + dt.timedelta(hours=1)
T0 = NOW - dt.timedelta(days=2)
NAMES = ["t-a", "t-b", "t-c", "t-d", "t-e"]  # created in this order (t-e newest)


def eval_msg(run: str, seq: int, step: int, accs: list[float], name: str = "greedy") -> dict[str, Any]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": 1_700_000_000.0 + step, "name": name,
            "step": step, "arms": [{"arm": f"e{i}", "accuracy": a} for i, a in enumerate(accs)]}


def run_end(run: str, seq: int, status: str, step: int) -> dict[str, Any]:
    return {"v": 1, "type": "run_end", "run": run, "seq": seq, "ts": 1_700_000_000.0, "status": status, "step": step}


def steps(run: str, n: int, arms: list[str]) -> list[dict[str, Any]]:
    return [step_msg(run, 10 + s, s, arms) for s in range(n)]


# What each run shows, column by column (None: empty); the sort of every column must agree with these.
EXPECT: dict[str, dict[str, Any]] = {
    "t-a": {"status": "finished", "project": "p1", "scheduler": "dump", "arms": 2, "steps": 5, "duration": 100.0,
            "overrides": 0, "final": 0.6, "best": 0.6, "tags": "zeta", "note": None,
            "last_seen": T0 + dt.timedelta(seconds=100), "started": T0},
    "t-b": {"status": "running", "project": "p2", "scheduler": "uniform", "arms": 3, "steps": 10, "duration": 1000.0,
            "overrides": 2, "final": 0.4, "best": 0.5, "tags": "beta", "note": None, "last_seen": NOW,
            "started": NOW - dt.timedelta(seconds=1000)},
    "t-c": {"status": "failed", "project": "p1", "scheduler": "sec", "arms": 2, "steps": 1, "duration": None,
            "overrides": 0, "final": None, "best": None, "tags": None, "note": None, "last_seen": None,
            "started": None},
    "t-d": {"status": "stale", "project": "p2", "scheduler": "dump", "arms": 1, "steps": 3, "duration": 50.0,
            "overrides": 1, "final": None, "best": None, "tags": "alpha", "note": "hello",
            "last_seen": T0 + dt.timedelta(seconds=50), "started": T0},
    "t-e": {"status": "interrupted", "project": "p1", "scheduler": "balanced", "arms": 2, "steps": 7, "duration": 300.0,
            "overrides": 0, "final": 0.8, "best": 0.9, "tags": "k", "note": "archived one",
            "last_seen": T0 + dt.timedelta(seconds=300), "started": T0},
}
STATUS_ORDER = ("running", "stale", "finished", "failed", "interrupted")


def build(engine: Engine, settings: Settings) -> None:
    ingest_docs(engine, [
        run_start("t-a", 1, ["x", "y"], project="p1", scheduler="dump", config={"tags": ["zeta"]}),
        *steps("t-a", 5, ["x", "y"]),
        eval_msg("t-a", 100, 0, [0.2, 0.4]), eval_msg("t-a", 101, 4, [0.5, 0.7]), run_end("t-a", 102, "finished", 4),
        run_start("t-b", 1, ["x", "y", "z"], project="p2", scheduler="uniform", config={"tags": ["omega", "beta"]}),
        *steps("t-b", 10, ["x", "y", "z"]),
        # The latest evaluation is greedy's at step 9: final 0.4, best 0.5 (greedy's); sampled's 0.9 is another set.
        eval_msg("t-b", 100, 0, [0.5, 0.5]), eval_msg("t-b", 101, 3, [0.9], name="sampled"),
        eval_msg("t-b", 102, 9, [0.3, 0.5]),
        run_start("t-c", 1, ["x", "y"], project="p1", scheduler="sec"), run_end("t-c", 2, "failed", 0),
        run_start("t-d", 1, ["x"], project="p2", scheduler="dump"), *steps("t-d", 3, ["x"]),
        run_start("t-e", 1, ["x", "y"], project="p1", scheduler="balanced", config={"tags": "m, k"}),
        *steps("t-e", 7, ["x", "y"]),
        eval_msg("t-e", 100, 0, [0.9, 0.9]), eval_msg("t-e", 101, 6, [0.7, 0.9]), run_end("t-e", 102, "interrupted", 6),
    ])
    times = {  # started, ended, last_seen: the stream's clock is not this test's
        "t-a": (T0, T0 + dt.timedelta(seconds=100), T0 + dt.timedelta(seconds=100)),
        "t-b": (NOW - dt.timedelta(seconds=1000), None, NOW),
        "t-c": (None, None, None),
        "t-d": (T0, None, T0 + dt.timedelta(seconds=50)),
        "t-e": (T0, T0 + dt.timedelta(seconds=300), T0 + dt.timedelta(seconds=300)),
    }
    with make_sessionmaker(engine)() as session:
        for name, (started, ended, seen) in times.items():
            session.execute(update(RUNS).where(RUNS.c.name == name)
                            .values(started_at=started, ended_at=ended, last_seen=seen))
        for name, applied, pending in (("t-b", 2, 1), ("t-d", 1, 0)):
            rid = run_id(session, name)
            for i in range(applied + pending):
                cmd = command_store.record_command(session, rid, "pin", "x", 0.5, None, "test", "")
                if i < applied:
                    session.execute(update(COMMANDS).where(COMMANDS.c.id == cmd.id).values(status="applied"))
        session.commit()
        managing.update_run(session, "t-d", "test", LabelChange(add_tags=["alpha"], note="hello"))
        managing.update_run(session, "t-e", "test", LabelChange(note="archived one", archived=True))


def expected_order(col: str, order: str) -> list[str]:
    newest_first = list(reversed(NAMES))
    key = (lambda n: STATUS_ORDER.index(EXPECT[n]["status"])) if col == "status" else (
        (lambda n: n) if col == "run" else (lambda n: EXPECT[n][col]))
    present = [n for n in newest_first if key(n) is not None]
    present.sort(key=key, reverse=order == "desc")  # stable: ties stay newest first
    return present + [n for n in newest_first if key(n) is None]


def names(session: Session, settings: Settings, **kw: Any) -> list[str]:
    return [r.name for r in runs_table(session, settings.stale_seconds, RunsQuery(**kw)).rows]


def test_every_column_sorts_both_ways(settings: Settings, engine: Engine) -> None:
    build(engine, settings)
    with make_sessionmaker(engine)() as session:
        assert names(session, settings, archived="all") == list(reversed(NAMES))  # newest first by default
        for col in SORTS:
            for order in ("asc", "desc"):
                assert names(session, settings, archived="all", sort=col, order=order) == expected_order(col, order), (
                    col, order)


def test_summary_columns(settings: Settings, engine: Engine) -> None:
    build(engine, settings)
    with make_sessionmaker(engine)() as session:
        rows = {r.name: r for r in runs_table(session, settings.stale_seconds, RunsQuery(archived="all")).rows}
    got = {n: {"status": r.shown_status, "project": r.project, "scheduler": r.scheduler, "arms": r.arms,
               "steps": r.steps, "duration": r.duration_s, "overrides": r.overrides, "final": r.final_eval,
               "best": r.best_eval,
               "tags": min((t.tag for t in r.tags), default=None), "note": r.note, "last_seen": r.last_seen,
               "started": r.started_at} for n, r in rows.items()}
    for n in NAMES:
        for col in ("final", "best", "duration"):
            assert got[n][col] == (pytest.approx(EXPECT[n][col], abs=1e-3) if EXPECT[n][col] is not None else None), (
                n, col)
        rest = {k: v for k, v in got[n].items() if k not in ("final", "best", "duration")}
        assert rest == {k: v for k, v in EXPECT[n].items() if k not in ("final", "best", "duration")}, n
    assert rows["t-b"].eval_name == "greedy" and rows["t-a"].eval_name == "greedy" and rows["t-c"].eval_name is None
    # The agent's tags first, in config order (a comma-separated string split), then people's.
    assert [(t.tag, t.source) for t in rows["t-b"].tags] == [("omega", "agent"), ("beta", "agent")]
    assert [(t.tag, t.source) for t in rows["t-e"].tags] == [("m", "agent"), ("k", "agent")]
    assert [(t.tag, t.source) for t in rows["t-d"].tags] == [("alpha", "user")]
    assert (rows["t-b"].status, rows["t-b"].stale, rows["t-d"].status, rows["t-d"].stale) == (
        "running", False, "running", True)
    assert rows["t-e"].archived_at is not None and rows["t-a"].archived_at is None


def test_filters_and_pages(settings: Settings, engine: Engine) -> None:
    build(engine, settings)
    with make_sessionmaker(engine)() as session:
        assert names(session, settings) == ["t-d", "t-c", "t-b", "t-a"]  # archived t-e hidden
        assert names(session, settings, archived="only") == ["t-e"]
        assert names(session, settings, status="running") == ["t-b"]
        assert names(session, settings, status="stale") == ["t-d"]
        assert names(session, settings, status="interrupted") == []
        assert names(session, settings, status="interrupted", archived="all") == ["t-e"]
        assert names(session, settings, tag="alpha") == ["t-d"]
        assert names(session, settings, tag="beta") == ["t-b"]
        assert names(session, settings, tag="k", archived="all") == ["t-e"]
        assert names(session, settings, project="p1") == ["t-c", "t-a"]
        assert names(session, settings, search="T-B") == ["t-b"]
        assert names(session, settings, search="%") == []  # a LIKE wildcard is a character here
        # Pages of 2, sorted by steps: every run once, the total on each page, an empty page past the end.
        pages = [runs_table(session, settings.stale_seconds,
                            RunsQuery(archived="all", sort="steps", order="desc", page=p, per_page=2))
                 for p in (1, 2, 3, 4)]
        assert [[r.name for r in p.rows] for p in pages] == [["t-b", "t-e"], ["t-a", "t-d"], ["t-c"], []]
        assert [(p.total, p.pages) for p in pages] == [(5, 3)] * 4
        for bad, message in (({"sort": "nope"}, "sort must be one of"), ({"order": "up"}, "order must be one of"),
                             ({"status": "x"}, "status must be one of"), ({"archived": "x"}, "archived must be one of"),
                             ({"page": 0}, "page and per_page start at 1")):
            with pytest.raises(InvalidRequest, match=message):
                runs_table(session, settings.stale_seconds, RunsQuery(**bad))


def test_the_json_list(settings: Settings, engine: Engine, make_server: Any) -> None:
    build(engine, settings)
    srv: LiveServer = make_server(settings)
    r = srv.client.get("/api/runs", params={"sort": "final", "order": "desc", "archived": "all", "limit": 2, "page": 1})
    assert r.status_code == 200 and r.headers["X-Total-Count"] == "5"
    first = r.json()
    assert [x["name"] for x in first] == ["t-e", "t-a"]
    e = first[0]
    assert (e["status"], e["shown_status"], e["steps"], e["arms"], e["overrides"], e["eval_name"], e["note"]) == (
        "interrupted", "interrupted", 7, 2, 0, "greedy", "archived one")
    assert (e["final_eval"], e["best_eval"], e["duration_s"]) == (pytest.approx(0.8), pytest.approx(0.9), 300.0)
    assert e["tags"] == [{"tag": "m", "source": "agent"}, {"tag": "k", "source": "agent"}]
    assert e["archived_at"] is not None
    nxt = srv.client.get("/api/runs", params={"sort": "final", "order": "desc", "archived": "all", "limit": 2,
                                              "page": 2}).json()
    assert [x["name"] for x in nxt] == ["t-b", "t-d"]  # t-d: no evaluation, so after every run with one
    # The default: newest first, archived runs hidden; a column's own order when none is given.
    assert [x["name"] for x in srv.client.get("/api/runs").json()] == ["t-d", "t-c", "t-b", "t-a"]
    assert [x["name"] for x in srv.client.get("/api/runs", params={"sort": "steps"}).json()] == [
        "t-b", "t-a", "t-d", "t-c"]
    stale = srv.client.get("/api/runs", params={"status": "stale"}).json()
    assert [(x["name"], x["status"], x["stale"], x["shown_status"]) for x in stale] == [
        ("t-d", "running", True, "stale")]
    bad = srv.client.get("/api/runs", params={"sort": "colour"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert "sort must be one of run, status" in bad.json()["error"]["message"]
