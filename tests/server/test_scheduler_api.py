"""Scheduler commands over HTTP with a real agent (agent -> Redis -> ingest -> SQL -> API, and back): the
panel's read, the preview, posts accepted (202) or refused (409/422) as the agent would, applied at a step
and audited, kept by a restarted agent; and the preview equal to what the agent then applies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine

from server.settings import Settings
from trainer_agent import CurriculumAgent, StepStats

from .conftest import BACKENDS, REDIS_URL, LiveServer, ingest_docs, run_start, step_msg, wait_for

ARMS = ["kk3", "kk4", "kk5"]
RATES = [0.9, 0.5, 0.1]


def _agent(run: str, settings: Settings, spool: Path) -> CurriculumAgent:
    return CurriculumAgent(run, ARMS, scheduler="dump", redis_url=REDIS_URL, key_prefix=settings.key_prefix,
                           spool_dir=spool, heartbeat_s=0.5, scheduler_snapshot_s=0.0)


def _learn(agent: CurriculumAgent, steps: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        arms = [a for a in ARMS for _ in range(8)]
        rewards = [float(rng.random() < RATES[ARMS.index(a)]) for a in arms]
        agent.observe(arms, rewards, groups=[i // 4 for i in range(len(arms))])
        agent.end_step()


def _until_acked(agent: CurriculumAgent, command_id: str) -> StepStats:
    """Step without observations (nothing else changes) until the command's ack comes back."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stats = agent.end_step()
        if any(a.id == command_id for a in stats.acks):
            return stats
        time.sleep(0.05)
    raise AssertionError(f"command {command_id} never applied")


def _snapshot_at(app_server: LiveServer, run: str, step: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        r = app_server.client.get(f"/api/runs/{run}/scheduler")
        return r.json() if r.status_code == 200 and r.json()["step"] >= step else None
    return wait_for(ready)


def _preview_then_apply(app_server: LiveServer, agent: CurriculumAgent, run: str, body: dict[str, Any]) -> None:
    _snapshot_at(app_server, run, agent.step - 1)
    t0 = time.perf_counter()
    resp = app_server.client.post(f"/api/runs/{run}/scheduler/preview", json=body)
    elapsed = time.perf_counter() - t0
    assert resp.status_code == 200, resp.text
    assert elapsed < 1.0
    preview = resp.json()
    assert preview["snapshot_step"] == agent.step - 1
    now = agent.probabilities()
    for a in preview["arms"]:
        assert a["current"] == pytest.approx(now[a["arm"]], abs=1e-12)
    posted = app_server.client.post(f"/api/runs/{run}/commands", json={**body, "reason": "as previewed"})
    assert posted.status_code == 202, posted.text
    stats = _until_acked(agent, posted.json()["id"])
    [ack] = [a for a in stats.acks if a.id == posted.json()["id"]]
    assert (ack.status, ack.message) == ("applied", preview["message"])
    applied = dict(zip(ARMS, stats.p.tolist(), strict=True))
    for a in preview["arms"]:
        assert a["preview"] == pytest.approx(applied[a["arm"]], abs=1e-12), (body, preview, applied)
    assert agent.scheduler.name == preview["scheduler"] and agent.scheduler.params() == preview["params"]


def test_scheduler_commands_over_http(app_server: LiveServer, settings: Settings, tmp_path: Path) -> None:
    run = "e2e-scheduler"
    agent = _agent(run, settings, tmp_path / "a")
    try:
        _learn(agent, 5)
        panel = _snapshot_at(app_server, run, 4)
        assert (panel["name"], panel["frozen"], panel["previewable"]) == ("dump", False, True)
        assert panel["params"] == {"window": 300, "c": 1.0, "temperature": 0.1}
        assert panel["param_schema"]["temperature"] == {
            "type": "float", "doc": "softmax temperature τ", "low": 0.0, "high": None, "low_open": True,
            "high_open": False, "choices": []}
        assert set(panel["schedulers"]) >= {"uniform", "fixed", "dump", "sec", "learning_progress", "balanced"}

        # The preview is what the agent then applies, for each kind of scheduler command.
        _preview_then_apply(app_server, agent, run, {"kind": "set_params", "params": {"temperature": 0.5, "c": 0.3}})
        _preview_then_apply(app_server, agent, run, {"kind": "freeze"})
        _preview_then_apply(app_server, agent, run, {"kind": "unfreeze"})
        _preview_then_apply(app_server, agent, run, {"kind": "switch", "scheduler": "sec",
                                                     "params": {"temperature": 0.05}})
        _preview_then_apply(app_server, agent, run, {"kind": "switch", "scheduler": "balanced"})
        _learn(agent, 2, seed=1)
        _preview_then_apply(app_server, agent, run, {"kind": "set_params", "params": {"ema": 0.5}})

        # Refused at once with the reason the agent would give.
        def post(body: dict[str, Any]) -> tuple[int, str]:
            r = app_server.client.post(f"/api/runs/{run}/commands", json=body)
            return r.status_code, r.json()["error"]["message"] if r.status_code != 202 else r.json()["id"]

        assert post({"kind": "set_params", "params": {"tau": 1.0}}) == (
            422, "scheduler 'balanced' has no parameter 'tau'; its parameters: ema, eps, init")
        assert post({"kind": "set_params", "params": {"ema": 0.0}}) == (422, "ema must be in (0, 1], got 0.0")
        assert post({"kind": "switch", "scheduler": "dmup"})[0] == 422
        assert "unknown scheduler 'dmup'" in post({"kind": "switch", "scheduler": "dmup"})[1]
        assert post({"kind": "freeze", "arm": "kk3"}) == (422, "freeze acts on the scheduler and takes no arm")
        assert post({"kind": "unfreeze"}) == (
            409, "the scheduler (balanced) is not frozen; there is nothing to unfreeze")
        status, freeze_id = post({"kind": "freeze"})
        assert status == 202
        assert post({"kind": "freeze"}) == (409, "the scheduler (balanced) is already frozen")  # the pending one counts
        stats = _until_acked(agent, freeze_id)
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}/scheduler").json()["frozen"])
        panel = app_server.client.get(f"/api/runs/{run}/scheduler").json()
        labels = [(c["label"], c["status"], c["applied_step"]) for c in panel["history"]]
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}/scheduler").json()["history"][0]["status"]
                 == "applied")
        panel = app_server.client.get(f"/api/runs/{run}/scheduler").json()
        labels = [(c["label"], c["status"], c["applied_step"]) for c in panel["history"]]
        assert labels[0] == ("freeze scheduler", "applied", stats.step)
        assert [c["label"] for c in panel["history"]][1:] == [
            "set ema=0.5", "switch to balanced", "switch to sec (temperature=0.05)", "unfreeze scheduler",
            "freeze scheduler", "set temperature=0.5, c=0.3"]
        log = app_server.client.get(f"/api/runs/{run}/commands").json()
        assert {c["kind"] for c in log} == {"set_params", "freeze", "unfreeze", "switch"}
        assert all(c["status"] == "applied" and c["arm"] == "" for c in log)
    finally:
        agent.close()
    # A restarted agent (no checkpoint) re-applies what the server sent: still balanced, ema 0.5, frozen.
    again = _agent(run, settings, tmp_path / "b")
    try:
        time.sleep(0.5)
        again.end_step()
        assert (again.scheduler.name, again.scheduler.params()["ema"], again._control.frozen) == ("balanced", 0.5, True)
    finally:
        again.close()


def test_preview_needs_a_snapshot_and_follows_the_post_rules(app_server: LiveServer, settings: Settings,
                                                              tmp_path: Path) -> None:
    run = "e2e-preview-rules"
    agent = _agent(run, settings, tmp_path)
    try:
        _learn(agent, 2)
        _snapshot_at(app_server, run, 1)
        r = app_server.client.post(f"/api/runs/{run}/scheduler/preview", json={"kind": "set_params",
                                                                                "params": {"window": 0}})
        assert (r.status_code, r.json()["error"]["message"]) == (422, "window must be in [1, 100000], got 0")
        r = app_server.client.post(f"/api/runs/{run}/scheduler/preview", json={"kind": "pin", "arm": "kk3",
                                                                                "value": 0.5})
        assert r.status_code == 200 and r.json()["arms"][0]["preview"] == 0.5
        assert app_server.client.post("/api/runs/nope/scheduler/preview", json={"kind": "freeze"}).status_code == 404
    finally:
        agent.close()


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_the_runs_scheduler_is_the_one_in_force_after_a_switch(make_server: Any, settings: Settings,
                                                                 engine: Engine) -> None:
    """run_start says dump; a snapshot after a switch says sec with its parameters: the run (API, runs
    list) shows sec from then on."""
    srv = make_server(settings, ingest=False)
    run = "switched"
    ingest_docs(engine, [run_start(run, 1, ["a", "b"]), step_msg(run, 2, 0, ["a", "b"])])
    assert srv.client.get(f"/api/runs/{run}").json()["scheduler"] == "dump"
    ingest_docs(engine, [{"v": 1, "type": "scheduler", "run": run, "seq": 3, "ts": 1700000001.0, "step": 0,
                          "name": "sec", "params": {"alpha": 0.3, "temperature": 1.0}, "frozen": False,
                          "state": None}])
    detail = srv.client.get(f"/api/runs/{run}").json()
    assert (detail["scheduler"], detail["params"]) == ("sec", {"alpha": 0.3, "temperature": 1.0})
    assert [r["scheduler"] for r in srv.client.get("/api/runs").json() if r["name"] == run] == ["sec"]
