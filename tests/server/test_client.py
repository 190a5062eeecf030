"""trainer_agent.client.SteerboardClient against the real app over HTTP (real Redis, SQLite)."""

from __future__ import annotations

import pandas as pd
import pytest
import redis

from server.settings import Settings
from trainer_agent.client import ClientError, SteerboardClient

from .conftest import LiveServer, arm_record, free_port, run_start, step_msg, wait_for, xadd

ARMS = ["easy", "medium", "hard"]


def eval_msg(run: str, seq: int, step: int, name: str, arms: list[dict[str, object]]) -> dict[str, object]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": 1_700_000_000.0 + step, "name": name,
            "step": step, "arms": arms}


def fill(srv: LiveServer, rds: redis.Redis, settings: Settings, run: str) -> str:
    """A run with 3 steps, 2 evaluation sets and one applied command; returns the command's id."""
    xadd(rds, settings, run_start(run, 1, ARMS),
         *(step_msg(run, s + 2, s, ARMS, metrics={"loss": 1.0 / (s + 1), "kl": s / 100.0}) for s in range(3)),
         eval_msg(run, 10, 0, "greedy", [{"arm": "easy", "accuracy": 0.5, "correct": 5, "total": 10},
                                         {"arm": "hard", "accuracy": 0.1, "correct": 1, "total": 10}]),
         eval_msg(run, 11, 2, "greedy", [{"arm": "easy", "accuracy": 0.7, "correct": 7, "total": 10}]),
         eval_msg(run, 12, 2, "aime", [{"arm": "geometry", "accuracy": 0.25, "correct": None, "total": None}]))
    wait_for(lambda: len(srv.client.get(f"/api/runs/{run}/evals").json().get("evals", [])) == 4)
    cid: str = srv.client.post(f"/api/runs/{run}/commands", json={"kind": "pin", "arm": "hard", "value": 0.5,
                                                                  "reason": "more hard"}).json()["id"]
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": run, "seq": 13, "ts": 1.0, "id": cid,
                         "status": "applied", "applied_step": 2, "message": ""})
    wait_for(lambda: srv.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "applied")
    return cid


def test_client_reads_a_run_as_data_frames(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "client kk-dump=1"  # a space and '=': the run name is quoted into the URL
    cid = fill(app_server, rds, settings, run)
    sb = SteerboardClient(app_server.url)

    runs = sb.runs()
    assert isinstance(runs, pd.DataFrame)
    assert runs.set_index("name").loc[run, ["project", "scheduler", "status", "last_step"]].tolist() == [
        "test", "dump", "running", 2,
    ]
    assert sb.runs(project="elsewhere").empty

    detail = sb.run(run)
    assert detail["name"] == run and [a["name"] for a in detail["arms"]] == ARMS

    acc = sb.series(run, "accuracy")
    assert list(acc.columns) == ["arm", "step", "accuracy"]
    assert len(acc) == 9
    want = {(a, s): arm_record(a, s, i)["accuracy"] for i, a in enumerate(ARMS) for s in range(3)}
    assert {(r.arm, r.step): r.accuracy for r in acc.itertuples()} == pytest.approx(want)
    assert sorted(sb.series(run, "accuracy", arms=["hard"], start=1).step) == [1, 2]

    metrics = sb.metrics(run)
    assert list(metrics.columns) == ["step", "ts", "loss", "kl"]
    assert metrics.step.tolist() == [0, 1, 2]
    assert metrics.loss.tolist() == pytest.approx([1.0, 0.5, 1 / 3])
    assert sb.metrics(run, start=1, end=1).step.tolist() == [1]

    evals = sb.evals(run)
    assert list(evals.columns) == ["name", "step", "arm", "accuracy", "correct", "total"]
    assert evals[["name", "step", "arm"]].values.tolist() == [
        ["aime", 2, "geometry"], ["greedy", 0, "easy"], ["greedy", 0, "hard"], ["greedy", 2, "easy"],
    ]
    assert evals.accuracy.tolist() == [0.25, 0.5, 0.1, 0.7]
    assert sb.evals(run, name="greedy").groupby("step").accuracy.mean().tolist() == pytest.approx([0.3, 0.7])

    commands = sb.commands(run)
    assert commands[["id", "kind", "arm", "value", "status", "applied_step", "reason"]].values.tolist() == [
        [cid, "pin", "hard", 0.5, "applied", 2, "more hard"],
    ]

    plain = SteerboardClient(app_server.url, as_frame=False)
    assert plain.evals(run, name="aime") == [
        {"name": "aime", "step": 2, "arm": "geometry", "accuracy": 0.25, "correct": None, "total": None},
    ]
    assert isinstance(plain.runs(), list)


def test_empty_tables_keep_their_columns(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "client-empty"
    xadd(rds, settings, run_start(run, 1, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
    sb = SteerboardClient(app_server.url)
    # A run with nothing yet gives empty frames with the columns a notebook goes on to use.
    assert list(sb.evals(run).columns) == ["name", "step", "arm", "accuracy", "correct", "total"]
    assert list(sb.series(run, "probability").columns) == ["arm", "step", "probability"]
    assert list(sb.metrics(run).columns) == ["step", "ts"]
    assert {"id", "kind", "arm", "status"} <= set(sb.commands(run).columns)
    assert sb.runs(project="nothing-here").empty


def test_errors_carry_the_servers_message(app_server: LiveServer) -> None:
    sb = SteerboardClient(app_server.url)
    with pytest.raises(ClientError) as err:
        sb.evals("no-such-run")
    assert err.value.status == 404
    assert str(err.value) == "404 from /api/runs/no-such-run/evals: no run named 'no-such-run'"
    with pytest.raises(ClientError) as err:
        sb.run("no such run?")
    assert err.value.status == 404
    assert str(err.value) == "404 from /api/runs/no%20such%20run%3F: no run named 'no such run?'"
    with pytest.raises(ClientError) as err:
        sb.series("no-such-run", metric="loudness")
    assert err.value.status == 422
    assert str(err.value).startswith("422 from /api/runs/no-such-run/series: invalid request: metric: Input should be")
    unreachable = SteerboardClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ClientError) as err:
        unreachable.runs()
    assert err.value.status is None and str(err.value).startswith(f"cannot reach {unreachable.url}")
