"""Redis Cluster: a real three-node cluster on loopback ports (redis-server --cluster-enabled yes, made with
redis-cli --cluster create), with an agent, a `steerboard worker` process and a web process all pointed at
it by a `redis+cluster://` URL: steps reach SQL and the page's SSE stream, a command reaches the agent and
its ack the audit log, and each run's keys sit in one slot (its `{run}` hash tag) while runs spread over
the nodes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from redis.cluster import RedisCluster

from server.settings import Settings
from trainer_agent import CurriculumAgent
from trainer_agent.protocol import Keys

from .conftest import LiveServer, cli_env, wait_for

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
pytestmark = pytest.mark.skipif(not Path(REDIS_SERVER).exists() or not Path(REDIS_CLI).exists(),
                                reason="redis-server / redis-cli are not installed: no Redis Cluster to test against")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ports(n: int) -> list[int]:
    """n ports whose cluster bus ports (+10000) are free too."""
    out: list[int] = []
    base = 20000 + (time.time_ns() // 1000) % 20000
    p = base
    while len(out) < n:
        if _free(p) and _free(p + 10000):
            out.append(p)
        p += 1
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    tmp = tmp_path_factory.mktemp("redis-cluster")
    ports = _ports(3)
    procs = []
    try:
        for port in ports:
            d = tmp / str(port)
            d.mkdir()
            procs.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000", "--appendonly", "no",
                 "--save", "", "--dir", str(d)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in ports:
            wait_for(lambda port=port: subprocess.run([REDIS_CLI, "-p", str(port), "ping"], capture_output=True,
                                                      text=True).stdout.strip() == "PONG", timeout=20)
        made = subprocess.run([REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                               "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stdout + made.stderr
        wait_for(lambda: all("cluster_state:ok" in subprocess.run(
            [REDIS_CLI, "-p", str(p), "cluster", "info"], capture_output=True, text=True).stdout for p in ports),
            timeout=30)
        yield ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_agent_worker_and_web_on_a_cluster(cluster: list[int], db_url: str, make_server, tmp_path: Path) -> None:
    url = f"redis+cluster://127.0.0.1:{cluster[1]}/0"
    prefix = "sbcluster:"
    settings = Settings(database_url=db_url, redis_url=url, key_prefix=prefix, ingest_block_ms=50,
                        api_token=None, _env_file=None)  # type: ignore[call-arg]
    worker = subprocess.Popen(
        [__import__("sys").executable, "-m", "server", "worker"], env=cli_env(settings),
        cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    srv: LiveServer = make_server(settings, ingest=False)
    rc = RedisCluster(host="127.0.0.1", port=cluster[0])
    keys = Keys(prefix)
    try:
        runs = [f"cl-run-{i}" for i in range(6)]
        # Each run's keys share a slot; the runs spread over more than one node.
        for run in runs:
            assert len({rc.keyslot(k) for k in (keys.control(run), keys.control_applied(run), keys.live(run))}) == 1
        nodes = {rc.get_node_from_key(keys.control(run)).port for run in runs}
        assert len(nodes) > 1, nodes

        rng = np.random.default_rng(0)
        agents = [CurriculumAgent(run, ["a", "b", "c"], redis_url=url, key_prefix=prefix,
                                  spool_dir=tmp_path / run, heartbeat_s=0.5) for run in runs[:2]]

        def step_all() -> None:
            for ag in agents:
                arms = ag.sample(8)
                ag.observe([a for a in arms for _ in range(2)], rng.random(16) < 0.5,
                           groups=np.repeat(np.arange(8), 2))
                ag.end_step()

        step_all()
        wait_for(lambda: all(srv.client.get(f"/api/runs/{r}").status_code == 200 for r in runs[:2]), timeout=20)
        # The web process's live hub relays what the worker publishes (SSE).
        run = runs[0]
        seq = srv.client.get(f"/api/runs/{run}").json()["event_seq"]
        with httpx.Client(base_url=srv.url, timeout=20) as c, c.stream(
                "GET", f"/api/runs/{run}/events", params={"after": seq}) as resp:
            lines = resp.iter_lines()
            assert any(line.startswith("event: ready") for line in lines)
            step_all()
            got = None
            for line in lines:
                if line.startswith("data:") and '"steps"' in line:
                    got = line
                    break
            assert got is not None and '"step":1' in got
        # A command through the control stream of the run's slot, applied and acked into the audit log.
        r = srv.client.post(f"/api/runs/{run}/commands", json={"kind": "pin", "arm": "b", "value": 0.5})
        assert r.status_code == 202, r.text
        cid = r.json()["id"]

        def applied() -> bool:
            step_all()
            log = srv.client.get(f"/api/runs/{run}/commands").json()
            return any(e["id"] == cid and e["status"] == "applied" for e in log)

        wait_for(applied, timeout=20, interval=0.2)
        assert agents[0].probabilities()["b"] == pytest.approx(0.5)
        for ag in agents:
            ag.close()
        wait_for(lambda: all(srv.client.get(f"/api/runs/{r}").json()["status"] == "finished" for r in runs[:2]),
                 timeout=20)
        assert agents[0]._transport is not None and agents[0]._transport.spool.nbytes == 0  # nothing spooled
    finally:
        worker.terminate()
        worker.wait(15)
        for k in rc.scan_iter(match=f"{prefix}*"):
            rc.delete(k)
        rc.close()
