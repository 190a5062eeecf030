"""End-to-end latency through the real spine (agent -> Redis -> ingest -> SQL -> SSE, and back).

Starts `steerboard serve` (web + in-process ingest worker) on a fresh SQLite database and a fresh
Redis key prefix, runs a CurriculumAgent (64 arms) stepping at --hz in this process, and measures:

1. agent.end_step() returned -> that step's event received by an SSE client of
   GET /api/runs/{run}/events (p50 / p95; target p95 <= 250 ms);
2. command POST /api/runs/{run}/commands sent -> applied by the agent at a step boundary
   (p50 / p95; target p95 <= 500 ms at 10 Hz), and -> visible as applied in the audit log.

    .venv/bin/python bench/latency.py [--steps 300] [--hz 10] [--commands 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import free_port, number_options, pct  # noqa: E402

from trainer_agent import CurriculumAgent  # noqa: E402

ARMS = [f"arm{i:02d}" for i in range(64)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    number_options(ap, steps=300, hz=10.0, commands=30)
    ap.add_argument("--redis-url", default=os.environ.get("STEERBOARD_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sb-latency-"))
    prefix = f"bench-lat-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {**os.environ, "STEERBOARD_DATABASE_URL": f"sqlite:///{tmp}/lat.db", "STEERBOARD_REDIS_URL": args.redis_url,
           "STEERBOARD_KEY_PREFIX": prefix, "STEERBOARD_INGEST_BLOCK_MS": "100"}
    subprocess.run([sys.executable, "-m", "server", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=10)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)

        run = f"latency-{uuid.uuid4().hex[:6]}"
        agent = CurriculumAgent(run, ARMS, scheduler="dump", redis_url=args.redis_url, key_prefix=prefix,
                                spool_dir=tmp / "spool", heartbeat_s=1.0)
        step_done: dict[int, float] = {}
        received: dict[int, float] = {}
        applied_at: dict[str, float] = {}
        stop = threading.Event()

        def listen() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server goes away at the end
                follow()

        def follow() -> None:
            # Wait for the run to exist, then follow its events.
            while not stop.is_set() and client.get(f"/api/runs/{run}").status_code != 200:
                time.sleep(0.05)
            with httpx.Client(base_url=base, timeout=None) as sse, sse.stream(
                    "GET", f"/api/runs/{run}/events") as resp:
                data: list[str] = []
                for line in resp.iter_lines():
                    if stop.is_set():
                        return
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        now = time.perf_counter()
                        try:
                            doc = json.loads("\n".join(data))
                        except ValueError:
                            doc = {}
                        data = []
                        for st in doc.get("steps", []) if isinstance(doc, dict) else []:
                            received.setdefault(int(st["step"]), now)

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        rng = np.random.default_rng(0)
        period = 1.0 / args.hz
        post_every = max(1, args.steps // (args.commands + 1))
        sent: dict[str, float] = {}
        commands: list[str] = []
        for step in range(args.steps):
            t_next = time.perf_counter() + period
            arms = agent.sample(128)
            comp = [a for a in arms for _ in range(8)]
            agent.observe(comp, rng.random(len(comp)) < 0.5, groups=np.repeat(np.arange(128), 8))
            stats = agent.end_step()
            now = time.perf_counter()
            step_done[stats.step] = now
            for a in stats.acks:
                applied_at.setdefault(a.id, now)
            if step >= 20 and step % post_every == 0 and len(commands) < args.commands:
                arm = ARMS[int(rng.integers(len(ARMS)))]
                t0 = time.perf_counter()
                resp = client.post(f"/api/runs/{run}/commands", json={"kind": "boost", "arm": arm, "value": 1.5,
                                                                         "steps": 3})
                if resp.status_code != 202:
                    raise SystemExit(f"command POST answered {resp.status_code}: {resp.text}")
                sent[resp.json()["id"]] = t0
                commands.append(resp.json()["id"])
            time.sleep(max(0.0, t_next - time.perf_counter()))
        agent.close()
        time.sleep(1.0)
        stop.set()

        audit = {c["id"]: c for c in client.get(f"/api/runs/{run}/commands", params={"limit": 1000}).json()}
        # Steps taken before the listener found the run were never awaited by it.
        first_seen = min(received) if received else 0
        sse_lat = [(received[s] - step_done[s]) * 1000 for s in step_done if s in received]
        missed = [s for s in step_done if s >= first_seen and s not in received]
        cmd_lat = [(applied_at[c] - sent[c]) * 1000 for c in commands if c in applied_at]
        print(f"{args.steps} steps of {len(ARMS)} arms at {args.hz:g} Hz; {len(commands)} commands; SQLite; "
              f"one web process with its ingest worker")
        print(f"end_step -> SSE event received: n={len(sse_lat)}/{len(step_done)} (missed after connecting: "
              f"{len(missed)}) "
              f"p50 {statistics.median(sse_lat):.1f} ms, p95 {pct(sse_lat, 0.95):.1f} ms, "
              f"max {max(sse_lat):.1f} ms (target p95 <= 250 ms)")
        print(f"command POST -> applied by the agent: n={len(cmd_lat)}/{len(commands)} "
              f"p50 {statistics.median(cmd_lat):.1f} ms, p95 {pct(cmd_lat, 0.95):.1f} ms "
              f"(target p95 <= 500 ms; a step every {period * 1000:.0f} ms)")
        applied = sum(1 for c in commands if audit.get(c, {}).get("status") == "applied")
        print(f"audit log: {applied}/{len(commands)} commands recorded as applied with their step")
    finally:
        server.terminate()
        server.wait(10)
        client.close()


if __name__ == "__main__":
    main()
