"""The whole spine with a real agent: agent -> Redis -> ingest -> SQL -> API, and commands back."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

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
