"""The JSON API over HTTP: the real app under uvicorn, an in-process ingest worker, real Redis and SQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from pydantic import SecretStr

from server.settings import Settings

from .conftest import BACKENDS, LiveServer, free_port, run_start, step_msg, wait_for, xadd

ARMS = ["kk3", "kk4", "kk5", "kk6"]


def start_run(
    srv: LiveServer, rds: redis.Redis, settings: Settings, run: str, steps: int = 3, **step_over: Any
) -> None:
    msgs = [run_start(run, 1, ARMS), *(step_msg(run, s + 2, s, ARMS) for s in range(steps))]
    if step_over:
        last = msgs[-1]
        for rec in last["arms"]:
            rec.update(step_over.get(rec["arm"], {}))
    xadd(rds, settings, *msgs)
    wait_for(lambda: srv.client.get(f"/api/runs/{run}").status_code == 200
             and srv.client.get(f"/api/runs/{run}").json()["last_step"] == steps - 1)


def post(srv: LiveServer, run: str, body: dict[str, Any], **kw: Any) -> Any:
    return srv.client.post(f"/api/runs/{run}/commands", json=body, **kw)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_runs_series_steps(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "api-1", steps=50)
    runs = app_server.client.get("/api/runs").json()
    assert [r["name"] for r in runs] == ["api-1"]
    assert runs[0]["status"] == "running" and runs[0]["stale"] is False
    run = app_server.client.get("/api/runs/api-1").json()
    assert [a["name"] for a in run["arms"]] == ARMS
    assert [a["probability"] for a in run["arms"]] == [0.25] * 4
    assert run["arms"][0]["metadata"] == {"i": 0}
    assert run["scheduler"] == "dump" and run["params"] == {"c": 1.0}

    s = app_server.client.get("/api/runs/api-1/series", params={"metric": "score", "arms": "kk4"}).json()
    assert s["metric"] == "score" and len(s["series"]) == 1
    kk4 = s["series"][0]
    assert kk4["arm"] == "kk4" and kk4["downsampled"] is False
    assert kk4["steps"] == list(range(50))
    assert kk4["values"] == [step_msg("x", 1, st, ARMS)["arms"][1]["score"] for st in range(50)]

    # mean_reward has nulls: those steps are left out, not zero.
    mr = app_server.client.get("/api/runs/api-1/series", params={"metric": "mean_reward", "arms": "kk3"}).json()
    expect = [(st, step_msg("x", 1, st, ARMS)["arms"][0]["mean_reward"]) for st in range(50)]
    expect = [(st, v) for st, v in expect if v is not None]
    assert list(zip(mr["series"][0]["steps"], mr["series"][0]["values"], strict=True)) == expect

    ds = app_server.client.get(
        "/api/runs/api-1/series", params={"metric": "score", "start": 5, "end": 44, "max_points": 10}
    ).json()
    assert len(ds["series"]) == 4
    for one in ds["series"]:
        i = ARMS.index(one["arm"])
        full = {st: step_msg("x", 1, st, ARMS)["arms"][i]["score"] for st in range(5, 45)}
        assert one["downsampled"] is True and len(one["values"]) <= 10
        assert set(one["steps"]) <= set(full)
        assert max(one["values"]) == max(full.values()) and min(one["values"]) == min(full.values())

    steps = app_server.client.get("/api/runs/api-1/steps", params={"start": 10, "end": 12}).json()
    assert [(x["step"], x["metrics"]) for x in steps] == [(10, {"loss": 1.0}), (11, {"loss": 1.1}), (12, {"loss": 1.2})]
    everything = app_server.client.get("/api/runs/api-1/steps", params={"limit": 100_000}).json()
    times = app_server.client.get("/api/runs/api-1/timestamps").json()
    assert times["run"] == "api-1" and len(times["steps"]) == len(everything) > 0
    assert list(zip(times["steps"], times["ts"], strict=True)) == [(x["step"], x["ts"]) for x in everything]
    assert app_server.client.get("/api/runs/nope/timestamps").status_code == 404


def test_read_errors_are_4xx(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "api-2")
    c = app_server.client
    r = c.get("/api/runs/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "run_not_found"
    r = c.get("/api/runs/api-2/series", params={"metric": "bogus"})
    assert r.status_code == 422 and "metric" in r.json()["error"]["message"]
    r = c.get("/api/runs/api-2/series", params={"arms": "kk3,zz9"})
    assert r.status_code == 422 and "no arm 'zz9'" in r.json()["error"]["message"]
    r = c.get("/api/runs/api-2/series", params={"start": 9, "end": 3})
    assert r.status_code == 422
    r = c.get("/api/runs/nope/events")
    assert r.status_code == 404


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_command_validation(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    # kk5 is pinned at 0.6 and kk6 retired, as the agent reports them.
    start_run(app_server, rds, settings, "api-3", kk5={"pin": 0.6}, kk6={"state": "retired", "p": 0.0})
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("nope", {"kind": "pin", "arm": "kk3", "value": 0.1}, 404, "no run named 'nope'"),
        ("api-3", {"kind": "pin", "arm": "zz", "value": 0.1}, 422, "has no arm 'zz'; its arms are: kk3, kk4, kk5, kk6"),
        ("api-3", {"kind": "pin", "arm": "kk3", "value": 1.5}, 422, "pin probability must be in [0, 1], got 1.5"),
        ("api-3", {"kind": "pin", "arm": "kk3", "value": -0.1}, 422, "must be in [0, 1]"),
        ("api-3", {"kind": "pin", "arm": "kk3"}, 422, "pin needs a value"),
        ("api-3", {"kind": "pin", "arm": "kk3", "value": 0.5}, 409, "pins would sum to 1.1 > 1 (other pins: kk5=0.6)"),
        ("api-3", {"kind": "pin", "arm": "kk6", "value": 0.1}, 409, "retired; restore it before pinning"),
        ("api-3", {"kind": "boost", "arm": "kk3", "value": 0}, 422, "boost factor must be > 0"),
        ("api-3", {"kind": "boost", "arm": "kk3", "value": -2}, 422, "boost factor must be > 0"),
        ("api-3", {"kind": "boost", "arm": "kk3", "value": 2, "steps": 0}, 422, "steps must be at least 1"),
        ("api-3", {"kind": "retire", "arm": "kk3", "steps": 3}, 422, "steps applies to boost only"),
        ("api-3", {"kind": "retire", "arm": "kk3", "value": 1}, 422, "retire takes no value"),
        ("api-3", {"kind": "retire", "arm": "kk6"}, 409, "already retired"),
        ("api-3", {"kind": "restore", "arm": "kk3"}, 409, "not retired"),
        ("api-3", {"kind": "explode", "arm": "kk3"}, 422,
         "kind: Input should be 'pin', 'boost', 'retire', 'restore', 'release', 'set_params', 'switch', 'freeze' "
         "or 'unfreeze'"),
        ("api-3", {"arm": "kk3"}, 422, "kind: Field required"),
    ]
    for run, body, status, message in cases:
        r = post(app_server, run, body)
        assert r.status_code == status, (body, r.text)
        assert message in r.json()["error"]["message"], (body, r.text)
    # Nothing invalid reached the audit log or the control stream.
    assert app_server.client.get("/api/runs/api-3/commands").json() == []
    assert rds.xlen(settings.keys.control("api-3")) == 0

    # Retiring down to the last active arm, counting pending retires: kk3, kk4 ok; kk5 is the last.
    assert post(app_server, "api-3", {"kind": "retire", "arm": "kk3"}).status_code == 202
    assert post(app_server, "api-3", {"kind": "retire", "arm": "kk4"}).status_code == 202
    r = post(app_server, "api-3", {"kind": "retire", "arm": "kk5"})
    assert r.status_code == 409 and "last active arm" in r.json()["error"]["message"]
    # A pending release of kk5's pin frees room for a pin of the restored kk6... once restored.
    assert post(app_server, "api-3", {"kind": "restore", "arm": "kk6"}).status_code == 202
    assert post(app_server, "api-3", {"kind": "release", "arm": "kk5"}).status_code == 202
    assert post(app_server, "api-3", {"kind": "pin", "arm": "kk6", "value": 0.9}).status_code == 202


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_command_roundtrip(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "api-4")
    r = post(app_server, "api-4", {"kind": "boost", "arm": "kk4", "value": 2.0, "steps": 10, "reason": "too easy"})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "pending"
    cid = body["id"]
    log = app_server.client.get("/api/runs/api-4/commands").json()
    assert [(c["id"], c["status"], c["kind"], c["arm"], c["value"], c["steps"], c["actor"], c["reason"])
            for c in log] == [(cid, "pending", "boost", "kk4", 2.0, 10, "api", "too easy")]
    entries = rds.xrange(settings.keys.control("api-4"))
    assert len(entries) == 1
    wire = orjson.loads(entries[0][1][b"m"])
    assert {k: wire[k] for k in ("v", "id", "kind", "arm", "value", "steps", "actor", "reason")} == {
        "v": 1, "id": cid, "kind": "boost", "arm": "kk4", "value": 2.0, "steps": 10, "actor": "api",
        "reason": "too easy",
    }
    assert isinstance(wire["ts"], float)
    # The agent applies it at the end of step 3 and acks on the ingest stream.
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": "api-4", "seq": 10, "ts": time.time(), "id": cid,
                         "status": "applied", "applied_step": 3, "message": "boosted"})

    def applied() -> Any:
        c = app_server.client.get("/api/runs/api-4/commands").json()[0]
        return c if c["status"] == "applied" else None

    c = wait_for(applied)
    assert (c["applied_step"], c["message"]) == (3, "boosted")
    assert c["acked_at"] is not None


def test_bearer_token(make_server: Callable[..., LiveServer], rds: redis.Redis, settings: Settings) -> None:
    s = settings.model_copy(update={"api_token": SecretStr("s3cr3t-token-for-tests"), "api_token_name": "ci-bot"})
    srv = make_server(s, ingest=True)
    bearer = {"Authorization": "Bearer s3cr3t-token-for-tests"}
    srv.client.headers.update(bearer)  # a credential exists: reading needs one too
    start_run(srv, rds, s, "api-5")
    del srv.client.headers["Authorization"]
    body = {"kind": "pin", "arm": "kk3", "value": 0.2}
    r = post(srv, "api-5", body)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]["message"]
    r = post(srv, "api-5", body, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = post(srv, "api-5", body, headers=bearer)
    assert r.status_code == 202
    assert srv.client.get("/api/runs/api-5/commands", headers=bearer).json()[0]["actor"] == "ci-bot"
    assert srv.client.get("/api/runs/api-5").status_code == 401  # viewing needs a token or login too


def test_placeholder_token_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(api_token=SecretStr("changeme"), _env_file=None)  # type: ignore[call-arg]


def test_command_to_finished_run_is_refused(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "api-6")
    xadd(rds, settings, {"v": 1, "type": "run_end", "run": "api-6", "seq": 20, "ts": time.time(),
                         "status": "finished", "step": 2})
    wait_for(lambda: app_server.client.get("/api/runs/api-6").json()["status"] == "finished")
    r = post(app_server, "api-6", {"kind": "release", "arm": "kk3"})
    assert r.status_code == 409 and "is finished" in r.json()["error"]["message"]


def test_healthz(app_server: LiveServer, make_server: Callable[..., LiveServer], settings: Settings) -> None:
    r = app_server.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "sql": "ok", "redis": "ok"}
    dead = make_server(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    r = dead.client.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "unavailable" and body["sql"] == "ok"
    assert body["redis"].startswith("error: ")
    # A command needs Redis: 503, and the audit log says it was not sent.
    xr = dead.client.post("/api/runs/nope/commands", json={"kind": "release", "arm": "a"})
    assert xr.status_code == 404


def test_command_not_sent_when_redis_is_down(
    app_server: LiveServer, make_server: Callable[..., LiveServer], rds: redis.Redis, settings: Settings
) -> None:
    start_run(app_server, rds, settings, "api-7")
    dead = make_server(settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"}))
    r = post(dead, "api-7", {"kind": "release", "arm": "kk3"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
    c = app_server.client.get("/api/runs/api-7/commands").json()[0]
    assert c["status"] == "rejected" and c["message"].startswith("not sent")


def test_dead_letters_endpoint(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    ids = xadd(rds, settings, b"garbage", {"v": 1, "type": "nope", "run": "x", "seq": 1, "ts": 0})
    body = wait_for(lambda: (b := app_server.client.get("/api/dead-letters").json())["count"] == 2 and b)
    assert body["retained"] == 2
    assert [e["entry_id"] for e in body["entries"]] == ids[::-1]
    assert body["entries"][1]["m"] == "garbage"
    assert body["entries"][0]["reason"] == "unknown message type 'nope'"


def test_openapi_documents_the_api(app_server: LiveServer) -> None:
    spec = app_server.client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in ("/api/runs", "/api/runs/{run}", "/api/runs/{run}/series", "/api/runs/{run}/steps",
              "/api/runs/{run}/parts", "/api/runs/{run}/timestamps",
              "/api/runs/{run}/commands", "/api/runs/{run}/events", "/healthz", "/api/dead-letters"):
        assert p in paths, p
    post_op = paths["/api/runs/{run}/commands"]["post"]
    assert set(post_op["responses"]) >= {"202", "401", "404", "409", "422", "503"}
    assert post_op["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("CommandAccepted")


def test_bad_input_is_4xx_never_500(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "api-8", steps=20)
    c = app_server.client
    url = "/api/runs/api-8/commands"
    bodies: list[bytes] = [
        b'{"kind": "boost", "arm": "kk3", "value": NaN}',
        b'{"kind": "boost", "arm": "kk3", "value": Infinity}',
        b"not json at all",
        b'{"kind": "boost", "arm": "kk3", "value": 2, "steps": 1000000000000}',
        b'{"kind": "pin", "arm": "kk3", "value": "half"}',
        b'{"kind": "pin", "arm": "kk3", "value": 0.1, "colour": "red"}',
        b"[]",
    ]
    for raw in bodies:
        r = c.post(url, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["error"]["code"] == "invalid_request"
    for params in ({"max_points": 2}, {"max_points": "many"}, {"start": -1}, {"metric": ""}):
        r = c.get("/api/runs/api-8/series", params=params)
        assert r.status_code == 422, (params, r.text)
    # The smallest downsampling still keeps the extremes.
    s = c.get("/api/runs/api-8/series", params={"metric": "accuracy", "arms": "kk3", "max_points": 5}).json()
    vals = [step_msg("x", 1, st, ARMS)["arms"][0]["accuracy"] for st in range(20)]
    got = s["series"][0]
    assert got["downsampled"] is True and len(got["values"]) == 4
    assert (min(got["values"]), max(got["values"])) == (min(vals), max(vals))
    assert c.get("/api/runs/api-8/steps", params={"limit": 0}).status_code == 422
