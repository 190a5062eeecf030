"""SSE fan-out: N viewers of one run on one web process, an agent sending steps.

Per case (`--viewers 500,1000`): a fresh SQLite database, `steerboard serve --no-ingest` (the one web
process measured), `steerboard worker` (its own process), N viewers in a process of their own
(bench/_sse.py: raw asyncio connections that note when each event arrives, without parsing its JSON),
and in this process a CurriculumAgent with `--arms` arms stepping at `--hz` plus a Redis subscriber to
the run's live channel. Prints, over every (viewer, event):

- publish -> receipt: from the worker's PUBLISH (seen by the subscriber) to the event's arrival at the
  viewer: the web process's fan-out (target: 500 viewers p95 <= 50 ms, 1,000 viewers p95 <= 250 ms);
- end_step -> receipt: from the step's end in the agent (its `ts`) to arrival: the whole spine;
- events missed, and the CPU seconds per second of the web process while stepping.

    .venv/bin/python bench/sse_fanout.py [--viewers 500,1000] [--steps 100] [--hz 5] [--arms 64]

Every process shares the machine's cores with the others (and, here, with other people's work): on a
2-core box the viewers' process and the agent compete with the web process they measure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu_seconds, free_port, number_options, pct, stop_processes  # noqa: E402
from _sse import Published  # noqa: E402

from trainer_agent import CurriculumAgent  # noqa: E402
from trainer_agent.protocol import Keys  # noqa: E402


def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def one_case(n_viewers: int, args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sb-fanout-"))
    prefix = f"bench-fan-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {**os.environ, "STEERBOARD_DATABASE_URL": f"sqlite:///{tmp}/fan.db", "STEERBOARD_REDIS_URL": args.redis_url,
           "STEERBOARD_KEY_PREFIX": prefix, "STEERBOARD_INGEST_BLOCK_MS": "100", "STEERBOARD_LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "-m", "server", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    procs: list[subprocess.Popen[bytes]] = []
    web = subprocess.Popen([sys.executable, "-m", "server", "serve", "--no-ingest", "--port", str(port)], env=env,
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(web)
    procs.append(subprocess.Popen([sys.executable, "-m", "server", "worker"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    base = f"http://127.0.0.1:{port}"
    agent = None
    viewers = None
    published = None
    try:
        wait_http(f"{base}/healthz", web)
        run = f"fanout-{uuid.uuid4().hex[:6]}"
        arms = [f"arm{i:02d}" for i in range(args.arms)]
        agent = CurriculumAgent(run, arms, scheduler="dump", redis_url=args.redis_url, key_prefix=prefix,
                                spool_dir=tmp / "spool", heartbeat_s=5.0)
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/api/runs/{run}").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the run never appeared")
            time.sleep(0.1)
        published = Published(args.redis_url, Keys(prefix).live(run))
        viewers = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_sse.py"), base, run, str(n_viewers)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
        assert viewers.stdout is not None and viewers.stdin is not None
        ready = viewers.stdout.readline().decode().split()
        print(f"  {ready[1]}/{n_viewers} viewers connected")
        rng = np.random.default_rng(0)
        period = 1.0 / args.hz
        watched = {"web": web.pid, "worker": procs[1].pid, "viewers": viewers.pid, "agent (this)": os.getpid()}
        cpu0, t0 = {k: cpu_seconds(pid) or 0.0 for k, pid in watched.items()}, time.monotonic()
        for _ in range(args.steps):
            t_next = time.perf_counter() + period
            picked = agent.sample(128)
            comp = [a for a in picked for _ in range(8)]
            agent.observe(comp, rng.random(len(comp)) < 0.5, groups=np.repeat(np.arange(128), 8))
            agent.end_step()
            time.sleep(max(0.0, t_next - time.perf_counter()))
        agent.close()
        agent = None
        deadline = time.monotonic() + 30
        last_step = args.steps - 1
        while not any(s == last_step for v in published.steps.values() for s, _ in v):
            if time.monotonic() > deadline:
                raise SystemExit("the last step was never published")
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        cpu = {k: ((cpu_seconds(pid) or 0.0) - cpu0[k]) / elapsed for k, pid in watched.items()}
        until = max(published.times)
        out, _ = viewers.communicate(json.dumps({"until_seq": {run: until}}).encode() + b"\n", timeout=120)
        got = json.loads(out.decode().splitlines()[-1])
        per_viewer = [{int(k): v for k, v in d.items()} for d in got["times"]]
        fan, e2e, missed = [], [], 0
        for times in per_viewer:
            for seq, t_pub in published.times.items():
                if seq > until:
                    continue  # published after the viewers were told where to stop (the run's end)
                got = times.get(seq)
                if got is None:
                    missed += 1
                    continue
                fan.append((got - t_pub) * 1000)
                e2e.extend((got - ts) * 1000 for _, ts in published.steps.get(seq, ()))
        print(f"{n_viewers} viewers, {args.steps} steps of {args.arms} arms at {args.hz:g} Hz, "
              f"{len(published.times)} events:")
        print(f"  publish -> receipt : p50 {pct(fan, 0.5):7.1f} ms  p95 {pct(fan, 0.95):7.1f} ms  "
              f"max {max(fan):7.1f} ms  ({len(fan)} receipts, {missed} missed)")
        print(f"  end_step -> receipt: p50 {pct(e2e, 0.5):7.1f} ms  p95 {pct(e2e, 0.95):7.1f} ms  "
              f"max {max(e2e):7.1f} ms")
        print("  CPU s/s while stepping: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
              + f"; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    finally:
        if agent is not None:
            agent.close()
        if published is not None:
            published.close()
        if viewers is not None and viewers.poll() is None:
            viewers.kill()
        stop_processes(procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", default="500,1000")
    number_options(ap, steps=100, hz=5.0, arms=64)
    ap.add_argument("--redis-url", default=os.environ.get("STEERBOARD_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = ap.parse_args()
    print("(a shared 2-core machine: viewers, agent, worker and web process share it with other work)")
    for n in (int(x) for x in args.viewers.split(",")):
        one_case(n, args)


if __name__ == "__main__":
    main()
