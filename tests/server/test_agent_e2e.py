"""The whole spine with a real agent: agent -> Redis -> ingest -> SQL -> API, and commands back."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import Engine, text

from server.settings import Settings
from trainer_agent import CurriculumAgent, StepStats

from .conftest import REDIS_URL, LiveServer, wait_for

ARMS = ["kk3", "kk4", "kk5", "kk6"]


class SteppingAgent:
    """A CurriculumAgent stepping at `hz` in a background thread, keeping every StepStats."""

    def __init__(self, run: str, settings: Settings, spool: Path, hz: float = 20.0) -> None:
        self.agent = CurriculumAgent(run, ARMS, scheduler="dump", redis_url=REDIS_URL,
                                     key_prefix=settings.key_prefix, spool_dir=spool, heartbeat_s=0.5)
        self.stats: list[StepStats] = []
        self.period = 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._lock = threading.Lock()

    def _loop(self) -> None:
        rng = np.random.default_rng(0)
        while not self._stop.is_set():
            arms = self.agent.sample(8)
            comp = [a for a in arms for _ in range(4)]
            self.agent.observe(comp, rng.random(len(comp)) < 0.5, groups=np.repeat(np.arange(8), 4))
            s = self.agent.end_step(metrics={"loss": 0.5})
            with self._lock:
                self.stats.append(s)
            time.sleep(self.period)

    def ack(self, command_id: str) -> tuple[StepStats, str, int | None] | None:
        with self._lock:
            for s in self.stats:
                for a in s.acks:
                    if a.id == command_id:
                        return s, a.status, a.applied_step
        return None

    def __enter__(self) -> SteppingAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.agent.close()


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
def test_command_posted_over_http_changes_probabilities_at_next_step(
    app_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    run = "e2e-pin"
    with SteppingAgent(run, settings, tmp_path) as sa:
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200)
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["last_step"] >= 2)
        resp = app_server.client.post(f"/api/runs/{run}/commands",
                                      json={"kind": "pin", "arm": "kk5", "value": 0.7, "reason": "e2e"})
        assert resp.status_code == 202, resp.text
        cid = resp.json()["id"]
        assert resp.json()["status"] == "pending"
        found = wait_for(lambda: sa.ack(cid), timeout=10)
        stats, status, applied_step = found
        # applied at the end of step N: that step's probabilities already carry the pin
        assert status == "applied" and applied_step == stats.step
        assert stats.probabilities["kk5"] == 0.7
        assert sa.agent.probabilities()["kk5"] == 0.7
        # the audit log shows it applied at that step, and the stored step N has the pinned probability
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "applied")
        log = app_server.client.get(f"/api/runs/{run}/commands").json()
        assert [(c["id"], c["status"], c["applied_step"], c["kind"], c["arm"], c["value"]) for c in log] == [
            (cid, "applied", applied_step, "pin", "kk5", 0.7)
        ]
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["last_step"] >= applied_step)
        series = app_server.client.get(f"/api/runs/{run}/series", params={
            "metric": "probability", "arms": "kk5", "start": applied_step - 1, "end": applied_step}).json()
        pts = dict(zip(series["series"][0]["steps"], series["series"][0]["values"], strict=True))
        assert pts[applied_step] == 0.7 and pts[applied_step - 1] != 0.7
        # a rejected command is answered with the agent's reason
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["arms"][2]["pin"] == 0.7)
        resp = app_server.client.post(f"/api/runs/{run}/commands", json={"kind": "retire", "arm": "kk5"})
        assert resp.status_code == 202
        rid = resp.json()["id"]
        wait_for(lambda: sa.ack(rid), timeout=10)
        wait_for(lambda: next(c for c in app_server.client.get(f"/api/runs/{run}/commands").json()
                              if c["id"] == rid)["status"] != "pending")
        rec = next(c for c in app_server.client.get(f"/api/runs/{run}/commands").json() if c["id"] == rid)
        assert rec["status"] == "applied" and "pin/boost cleared" in rec["message"]
    runs = {r["name"]: r for r in app_server.client.get("/api/runs").json()}
    wait_for(lambda: {r["name"]: r for r in app_server.client.get("/api/runs").json()}[run]["status"] == "finished")
    assert run in runs


AWAY_TRAINER = """
import sys, time
import numpy as np
from trainer_agent import CurriculumAgent
run, redis_url, prefix, spool = sys.argv[1:5]
agent = CurriculumAgent(run, ["kk3", "kk4", "kk5", "kk6"], scheduler="dump", redis_url=redis_url,
                        key_prefix=prefix, spool_dir=spool, heartbeat_s=0.5)
rng = np.random.default_rng(0)
while True:  # until killed
    arms = agent.sample(8)
    agent.observe([a for a in arms for _ in range(4)], rng.random(32) < 0.5, groups=np.repeat(np.arange(8), 4))
    agent.end_step()
    time.sleep(0.05)
"""


@pytest.mark.parametrize("empty_db", ["sqlite"], indirect=True)
def test_command_posted_over_http_while_the_agent_is_away_is_applied_once_when_it_returns(
    app_server: LiveServer, settings: Settings, tmp_path: Path
) -> None:
    run = "e2e-away"
    # The trainer dies (kill -9: no run_end, so the run stays "running" and commands are accepted).
    proc = subprocess.Popen([sys.executable, "-c", AWAY_TRAINER, run, REDIS_URL, settings.key_prefix,
                             str(tmp_path / "spool-dead")])
    try:
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200, timeout=30)
        wait_for(lambda: app_server.client.get(f"/api/runs/{run}").json()["last_step"] >= 3, timeout=30)
    finally:
        proc.kill()
        proc.wait(10)
    resp = app_server.client.post(f"/api/runs/{run}/commands", json={"kind": "retire", "arm": "kk6"})
    assert resp.status_code == 202, resp.text
    cid = resp.json()["id"]
    time.sleep(0.5)
    assert app_server.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "pending"
    acks: list[tuple[int, str]] = []
    for _ in range(2):  # it comes back, and once more: the command is applied exactly once
        with SteppingAgent(run, settings, tmp_path) as again:
            wait_for(lambda a=again: a.agent.probabilities()["kk6"] == 0.0, timeout=10)
            time.sleep(0.3)
        acks += [(s.step, a.status) for s in again.stats for a in s.acks if a.id == cid]
    assert len(acks) == 1 and acks[0][1] == "applied"
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}/commands").json()[0]["status"] == "applied")
    rec = app_server.client.get(f"/api/runs/{run}/commands").json()[0]
    assert rec["id"] == cid and rec["applied_step"] == acks[0][0]


def _stored_steps(engine: Engine, run: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT s.step, a.name, s.probability, s.score, s.parts, s.n_step, s.n_total, s.mean_abs_adv, "
            "s.mean_reward, s.accuracy FROM arm_steps s JOIN arms a ON a.id = s.arm_id "
            "JOIN runs r ON r.id = s.run_id WHERE r.name = :run ORDER BY s.step, a.position"), {"run": run}).all())


def _stored_metrics(engine: Engine, run: str) -> dict[int, Any]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT s.step, s.metrics FROM run_steps s JOIN runs r ON r.id = s.run_id WHERE r.name = :run"),
            {"run": run}).all()
    return {row.step: json.loads(row.metrics) if isinstance(row.metrics, str) else row.metrics for row in rows}


@pytest.mark.parametrize("empty_db", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
                         indirect=True)
@pytest.mark.parametrize("resume", ["load_state_dict", "start_step"])
def test_resumed_run_stores_every_step_once_with_the_values_reported(
    app_server: LiveServer, settings: Settings, engine: Engine, tmp_path: Path, resume: str
) -> None:
    run, n_first, n_second = f"e2e-resume-{resume}", 6, 5
    reported: list[StepStats] = []
    data = np.random.default_rng(0)

    def train(agent: CurriculumAgent, steps: int) -> None:
        for _ in range(steps):
            arms = agent.sample(8)
            comp = [a for a in arms for _ in range(4)]
            agent.observe(comp, data.random(len(comp)) < 0.5, groups=np.repeat(np.arange(8), 4))
            reported.append(agent.end_step(metrics={"loss": float(data.random())}))

    def agent_for(part: str, **kw: Any) -> CurriculumAgent:
        return CurriculumAgent(run, ARMS, scheduler="dump", redis_url=REDIS_URL, key_prefix=settings.key_prefix,
                               spool_dir=tmp_path / part, heartbeat_s=0.5, **kw)

    def api_run() -> Any:
        return app_server.client.get(f"/api/runs/{run}").json()

    def ingested(agent: CurriculumAgent) -> bool:
        """Everything the agent sent, its run_end last, is committed."""
        assert agent._transport is not None
        resp = app_server.client.get(f"/api/runs/{run}")
        return resp.status_code == 200 and resp.json()["last_seq"] == agent._transport._seq

    first = agent_for("first")
    train(first, n_first)
    if resume == "load_state_dict":
        first.pin("kk5", 0.4, reason="queued before the checkpoint")  # only the state carries it over
    checkpoint = json.loads(json.dumps(first.state_dict()))
    first.close()
    wait_for(lambda: ingested(first))
    assert api_run()["status"] == "finished" and api_run()["last_step"] == n_first - 1

    # The job is restarted from its checkpoint as a new process would: a new agent for the same run.
    if resume == "load_state_dict":
        second = agent_for("second")
        second.load_state_dict(checkpoint)
    else:
        second = agent_for("second", start_step=n_first)
    train(second, n_second)
    second.close()
    total = n_first + n_second
    wait_for(lambda: ingested(second), timeout=20)
    assert api_run()["status"] == "finished" and api_run()["last_step"] == total - 1

    # Every step the two agents reported is stored once, with the values reported: a step number
    # used twice would keep the first agent's values (the server keeps the first write).
    assert [s.step for s in reported] == list(range(total))
    by_step = {s.step: s for s in reported}
    rows = _stored_steps(engine, run)
    assert [row.step for row in rows] == [s for s in range(total) for _ in ARMS]
    for row in rows:
        sent = next(rec for rec in by_step[row.step].records() if rec["arm"] == row.name)
        parts = json.loads(row.parts) if isinstance(row.parts, str) else row.parts
        assert (row.probability, row.score, parts, row.n_step, row.n_total, row.mean_abs_adv, row.mean_reward,
                row.accuracy) == (sent["p"], sent["score"], sent["parts"], sent["n_step"], sent["n_total"],
                                  sent["mean_abs_adv"], sent["mean_reward"], sent["accuracy"]), (row.step, row.name)
    metrics = _stored_metrics(engine, run)
    assert metrics == {s.step: s.metrics for s in reported}
    # Loaded state: the all-time counts go on and the queued pin is applied at the first resumed
    # step; start_step alone numbers the steps right but starts the statistics afresh.
    at = by_step[n_first]
    if resume == "load_state_dict":
        assert at.n_total == {a: by_step[n_first - 1].n_total[a] + at.n_step[a] for a in ARMS}
        assert at.probabilities["kk5"] == 0.4 and [a.status for a in at.acks] == ["applied"]
    else:
        assert at.n_total == at.n_step
