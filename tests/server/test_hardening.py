"""Issue 16: every query parameter bounded, non-finite numbers refused at ingest, safe CSV, names escaped in
logs. Real app over HTTP, real Redis and SQLite (PostgreSQL where the database's own limits matter)."""

from __future__ import annotations

import csv
import io
import logging
from urllib.parse import quote

import orjson
import pytest
import redis
from sqlalchemy import Engine

from server.ingest import IngestWorker
from server.logsafe import printable
from server.settings import Settings

from .conftest import BACKENDS, LiveServer, run_start, step_msg, wait_for, xadd
from .test_evals import drain

ARMS = ["kk3", "kk4"]
HUGE = "9" * 30


def _ready(srv: LiveServer, rds: redis.Redis, settings: Settings, run: str, steps: int = 2, **extra: object) -> None:
    xadd(rds, settings, run_start(run, 1, ARMS, **extra), *(step_msg(run, s + 2, s, ARMS) for s in range(steps)))
    wait_for(lambda: srv.client.get(f"/api/runs/{quote(run, safe='')}").status_code == 200
             and srv.client.get(f"/api/runs/{quote(run, safe='')}").json()["last_step"] == steps - 1)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_huge_numbers_in_queries_are_422_not_500(app_server: LiveServer, rds: redis.Redis,
                                                 settings: Settings) -> None:
    _ready(app_server, rds, settings, "hd-big")
    c = app_server.client
    for path, params in [
        ("/api/runs/hd-big/steps", {"start": HUGE}), ("/api/runs/hd-big/steps", {"end": HUGE}),
        ("/api/runs/hd-big/steps", {"start": 2**31}), ("/api/runs/hd-big/series", {"start": 2**31}),
        ("/api/runs/hd-big/series", {"end": 2**63}), ("/api/runs/hd-big/parts", {"end": HUGE}),
        ("/api/runs", {"page": HUGE}), ("/api/runs", {"page": 2**40}), ("/api/runs/hd-big/events", {"after": 2**63}),
        ("/api/runs/hd-big/commands", {"limit": HUGE}), ("/api/runs", {"project": "p" * 300}),
    ]:
        r = c.get(path, params=params)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_request"), (path, params, r.text)
    r = c.get("/api/runs/hd-big/events", headers={"Last-Event-ID": HUGE})
    assert r.status_code == 422 and "Last-Event-ID" in r.json()["error"]["message"]
    assert c.get("/", params={"page": HUGE}).status_code == 422
    # The largest values allowed are answered.
    assert c.get("/api/runs/hd-big/steps", params={"start": 2**31 - 1, "end": 2**31 - 1}).json() == []
    assert c.get("/api/runs", params={"page": 1_000_000}).json() == []
    assert c.get("/", params={"page": 1_000_000}).status_code == 200


def test_non_finite_numbers_are_dead_lettered(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    run = "hd-nan"
    good = orjson.dumps(step_msg(run, 2, 0, ARMS))
    bad = {
        "ts NaN": good.replace(b'"ts":1700000000.0', b'"ts":NaN'),
        "ts huge": good.replace(b'"ts":1700000000.0', b'"ts":1e300'),
        "metric Infinity": good.replace(b'"metrics":{"loss":0.0}', b'"metrics":{"loss":Infinity}'),
        "score 1e400": good.replace(b'"score":0.0', b'"score":1e400', 1),
        "part -Infinity": good.replace(b'"exploit":0.0', b'"exploit":-Infinity', 1),
        "mean |A| NaN": good.replace(b'"mean_abs_adv":0.0', b'"mean_abs_adv":NaN', 1),
    }
    for what, raw in bad.items():
        assert raw != good, what
    xadd(rds, settings, run_start(run, 1, ARMS))
    ids = dict(zip(bad, xadd(rds, settings, *bad.values()), strict=True))
    ok = xadd(rds, settings, good)
    drain(IngestWorker(settings, engine, rds))
    reasons = {f[b"entry_id"].decode(): f[b"reason"].decode() for _, f in rds.xrange(settings.keys.dead)}
    assert ok[0] not in reasons
    got = {what: reasons[eid] for what, eid in ids.items()}
    assert got == {
        "ts NaN": "validation failed: step.ts: Input should be a finite number",
        "ts huge": "validation failed: step.ts: Input should be less than or equal to 253402300799",
        "metric Infinity": "validation failed: step.metrics.loss: Input should be a finite number",
        "score 1e400": "validation failed: step.arms.0.score: Input should be a finite number",
        "part -Infinity": "validation failed: step.arms.0.parts.exploit: Input should be a finite number",
        "mean |A| NaN": "validation failed: step.arms.0.mean_abs_adv: Input should be a finite number",
    }


def test_csv_is_safe_for_spreadsheets_and_any_run_name(app_server: LiveServer, rds: redis.Redis,
                                                       settings: Settings) -> None:
    run = "ünï/cödé ✓"
    _ready(app_server, rds, settings, run)
    c = app_server.client
    q = quote(run, safe="")
    r = c.get(f"/api/runs/{q}/export.csv", params={"what": "arms"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"_n__c_d_ _-arms.csv\"; "
        "filename*=UTF-8''%C3%BCn%C3%AF%2Fc%C3%B6d%C3%A9%20%E2%9C%93-arms.csv"
    )
    # Formulas in the cells a person or a trainer controls are neutralised; numbers stay numbers.
    formulas = ["=HYPERLINK(\"http://evil.example\",\"x\")", "@SUM(1+1)", "+cmd|' /C calc'!A0", "-2+3", "\tx", "\rx"]
    for i, reason in enumerate(formulas):
        assert c.post(f"/api/runs/{q}/commands", json={"kind": "release", "arm": "kk3", "reason": reason},
                      headers={"X-Idem": str(i)}).status_code == 202
    rows = list(csv.DictReader(io.StringIO(c.get(f"/api/runs/{q}/export.csv", params={"what": "commands"}).text)))
    assert sorted(r["reason"] for r in rows) == sorted("'" + f.replace("\r", "\n") for f in formulas)
    assert {r["actor"] for r in rows} == {"api"}
    xadd(rds, settings, step_msg(run, 10, 2, ARMS, metrics={"=1+1": -0.5}))
    wait_for(lambda: c.get(f"/api/runs/{q}").json()["last_step"] == 2)
    steps = list(csv.reader(io.StringIO(c.get(f"/api/runs/{q}/export.csv", params={"what": "steps"}).text)))
    assert steps[0] == ["step", "ts", "'=1+1", "loss"] and steps[-1][2] == "-0.5"


def test_names_cannot_forge_log_lines(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                      caplog: pytest.LogCaptureFixture) -> None:
    assert printable("kk3\n2026-12-02 INFO server: forged") == "kk3\\n2026-12-02 INFO server: forged"
    assert printable("a\rb\x1b[31m\u202ec") == "a\\rb\\u001b[31m\\u202ec"
    _ready(app_server, rds, settings, "hd-log")
    c = app_server.client
    with caplog.at_level(logging.INFO):
        c.post("/api/runs/hd-log/commands", json={"kind": "release", "arm": "kk3\nINFO forged: yes"})
        c.post("/login", data={"name": "eve\nINFO server.auth: login: admin", "password": "x" * 8})
        r = c.post("/login", data={"name": "eve\nINFO server.auth: login: admin", "password": "x" * 8,
                                   "csrf_token": c.get("/login").text.split('name="csrf-token" content="')[1][:43]})
        assert r.status_code == 401
        xadd(rds, settings, step_msg("hd-log", 50, 5, ["kk3\nINFO forged"]))
        wait_for(lambda: any("dead-lettered" in m for m in caplog.messages))
    for rec in caplog.records:
        assert "\n" not in rec.getMessage() and "\r" not in rec.getMessage(), rec.getMessage()
    assert any("login failed: eve\\nINFO server.auth: login: admin" in m for m in caplog.messages)
