"""A fleet on one server: `--agents` runs of `--arms` arms at `--hz` steps/s into PostgreSQL, `--workers`
ingest workers (`steerboard worker`), one web process (`steerboard serve --no-ingest`) with `--viewers` SSE
viewers spread over the runs.

Every part is a process of its own: the agents (`--agent-procs` processes, each stepping its share of the
runs on a fixed schedule), the workers, the web process, the viewers (bench/_sse.py) and, in this process,
a subscriber to every run's live channel. After `--warmup` seconds it measures for `--seconds` and prints:

- ingest lag: from a step's end in its agent (the step's `ts`) to the PUBLISH of the live event carrying
  it, which the worker sends right after the transaction that stored the step commits (p50 / p95 / max;
  target p95 <= 1 s);
- SSE: from that PUBLISH to the event's arrival at each viewer of the run, and from the step's end;
- steps sent, stored and published per second, and the CPU seconds per second of every process
  (agents, workers, web, viewers; PostgreSQL's and Redis's processes summed by name, shared with
  whatever else uses them).

    .venv/bin/python bench/fleet.py [--agents 40] [--arms 64] [--hz 5] [--workers 2] [--viewers 200]
                                    [--seconds 30] [--warmup 5] [--pg-url URL]

On a 2-core machine the figures are those of the whole fleet sharing two cores: 40 agents at 5 steps/s
(200 steps/s of 64 arms, 12,800 arm rows/s), two workers, PostgreSQL, Redis, a web process and 200
viewers all compete for them, and the agents alone (sampling, statistics, JSON encoding of 20 kB per
step) take a good share. A lag that grows during the run means the fleet does not fit the cores, not
that one component is slow: compare each process's CPU with the cores available. On a server, agents
run on the training nodes and PostgreSQL on its own machine; there, this bench gives each part its
own cores and the figures are the server's.

What it showed here (2026-12-01, shared 2-core box, other sessions' work beside it): 8 agents (40 steps/s,
2 workers, 40 viewers, load 0.2) lag p95 69 ms, SSE publish -> viewer p95 3 ms. 40 agents at 5 steps/s:
at first the lag grew through the run (p95 13-19 s after 30 s): per batch a worker merges every run's
rollups (64 arms x 4 widths), folds its diagnosis and updates its arms, so batches of a few steps of each of
40 runs cost the most. Rollups sent as binary arrays, the writer taking everything its reader fetched
meanwhile into one transaction, and the batch's diagnosis states and run updates in one statement each
brought it to a steady lag: p95 4.4 s with 2 workers, 2.8 s with 1, SSE publish -> viewer p95 66 ms, each
worker at ~0.2 s/s of CPU. Two workers do not add up: each batch locks the row of every run it touches
(event seqs), so two workers whose batches span the same 40 runs take turns.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis
from alembic import command

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu_seconds, drop_pg_schema, number_options, pct, pg_schema, stop_processes  # noqa: E402
from _sse import Subscriber, event_steps  # noqa: E402
from sse_fanout import wait_http  # noqa: E402

from server.db import alembic_config  # noqa: E402
from trainer_agent.protocol import Keys  # noqa: E402


def agents_main(args: argparse.Namespace) -> None:
    """--role agents: step the runs given at `--hz` each until `--seconds` have passed, then close."""
    from trainer_agent import CurriculumAgent

    runs = args.runs.split(",")
    arms = [f"arm{i:02d}" for i in range(args.arms)]
    agents = [CurriculumAgent(run, arms, scheduler="dump", redis_url=args.redis_url, key_prefix=args.prefix,
                              spool_dir=Path(args.spool) / run, heartbeat_s=5.0) for run in runs]
    rng = np.random.default_rng(abs(hash(args.runs)) % 2**32)
    groups = np.repeat(np.arange(128), 8)
    period = 1.0 / args.hz
    t0 = time.perf_counter()
    end = t0 + args.seconds
    # Agent k steps at t0 + (n + k / len) * period: the fleet's steps spread evenly over time.
    due = [t0 + k / len(agents) * period for k in range(len(agents))]
    late = 0
    while True:
        k = int(np.argmin(due))
        if due[k] >= end:
            break
        wait = due[k] - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -period:
            late += 1
        ag = agents[k]
        picked = ag.sample(128)
        ag.observe([a for a in picked for _ in range(8)], rng.random(1024) < 0.5, groups=groups)
        ag.end_step(metrics={"loss": float(rng.random())})
        due[k] += period
    for ag in agents:
        ag.close()
    t = os.times()
    print(json.dumps({"steps": sum(ag.step for ag in agents), "late": late, "cpu": t.user + t.system}), flush=True)


class LiveTimes(Subscriber):
    """A thread pattern-subscribed to every run's live channel: when each (run, seq) was published, and
    the steps (step, ts) each event carried."""

    def __init__(self, redis_url: str, keys: Keys) -> None:
        self.keys = keys
        self.times: dict[tuple[str, int], float] = {}
        self.steps: dict[tuple[str, int], list[tuple[int, float]]] = {}
        self.xadd_ms: dict[tuple[str, int], float] = {}  # the batch's first entry: when it was XADDed
        super().__init__(redis_url, keys.live_pattern, pattern=True)

    def on_message(self, msg: dict[str, Any], now: float) -> None:
        run = self.keys.run_of_live(msg["channel"].decode())
        doc = orjson.loads(msg["data"])
        key = (str(run), int(doc["seq"]))
        self.times.setdefault(key, now)
        self.steps[key] = event_steps(doc)
        ids = doc.get("entry_ids") or []
        if ids:
            self.xadd_ms[key] = min(int(str(i).split("-")[0]) for i in ids) / 1000.0


def pids_named(name: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    out.append(int(d.name))
            except OSError:
                continue
    return out


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def fmt(xs: list[float]) -> str:
    if not xs:
        return "no samples"
    return f"p50 {pct(xs, 0.5):7.1f} ms  p95 {pct(xs, 0.95):7.1f} ms  max {max(xs):7.1f} ms  (n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    number_options(ap, agents=40, arms=64, hz=5.0, workers=2)
    ap.add_argument("--viewers", type=int, default=200, help="in all, spread evenly over the runs")
    number_options(ap, seconds=30.0, warmup=5.0, agent_procs=2)
    ap.add_argument("--ingest-batch", type=int, default=2000,
                    help="STEERBOARD_INGEST_BATCH of the workers: a batch holds few steps of each of many runs, and "
                         "each run's rollups are merged once per batch (64 arms x 4 widths)")
    ap.add_argument("--pg-url", default=os.environ.get("STEERBOARD_BENCH_PG",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--redis-url", default=os.environ.get("STEERBOARD_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    ap.add_argument("--role", default="main", help=argparse.SUPPRESS)
    ap.add_argument("--runs", default="", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    ap.add_argument("--spool", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "agents":
        agents_main(args)
        return

    schema = f"bench_fleet_{uuid.uuid4().hex[:6]}"
    url, _ = pg_schema(args.pg_url, schema, False)
    command.upgrade(alembic_config(url), "head")
    prefix = f"bench-fleet-{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    spool = Path(f"/tmp/{schema}-spool")
    env = {**os.environ, "STEERBOARD_DATABASE_URL": url, "STEERBOARD_REDIS_URL": args.redis_url,
           "STEERBOARD_KEY_PREFIX": prefix, "STEERBOARD_LOG_LEVEL": "WARNING", "STEERBOARD_INGEST_BLOCK_MS": "50",
           "STEERBOARD_INGEST_BATCH": str(args.ingest_batch)}
    from _common import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    live: LiveTimes | None = None
    rds = redis.Redis.from_url(args.redis_url)
    runs = [f"fleet-{i:03d}" for i in range(args.agents)]
    print(f"(a shared 2-core machine, load average {os.getloadavg()[0]:.1f}: every process below shares "
          f"{os.cpu_count()} cores with the others and with other work)")
    try:
        procs["web"] = subprocess.Popen([sys.executable, "-m", "server", "serve", "--no-ingest", "--port", str(port)],
                                        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for w in range(args.workers):
            procs[f"worker{w + 1}"] = subprocess.Popen([sys.executable, "-m", "server", "worker"], env=env, cwd=ROOT,
                                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(f"{base}/healthz", procs["web"])
        live = LiveTimes(args.redis_url, keys)
        share = [runs[i::args.agent_procs] for i in range(args.agent_procs)]
        # The runs exist before the viewers connect: one run_start each, then the clock starts.
        agent_procs = []
        total = args.warmup + args.seconds
        for i, mine in enumerate(share):
            if not mine:
                continue
            agent_procs.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--role", "agents", "--runs", ",".join(mine),
                 "--arms", str(args.arms), "--hz", str(args.hz), "--seconds", str(total), "--prefix", prefix,
                 "--spool", str(spool), "--redis-url", args.redis_url],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
            procs[f"agents{i + 1}"] = agent_procs[-1]
        t_start = time.time()
        deadline = time.monotonic() + 60
        while not all(httpx.get(f"{base}/api/runs/{r}").status_code == 200 for r in runs[-3:] + runs[:3]):
            if time.monotonic() > deadline:
                raise SystemExit("the runs did not appear")
            time.sleep(0.2)
        per_run = max(1, args.viewers // len(runs)) if args.viewers else 0
        viewers = None
        if per_run:
            viewers = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_sse.py"), base, ",".join(runs),
                                        str(per_run)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT)
            procs["viewers"] = viewers
            assert viewers.stdout is not None
            print(f"  {viewers.stdout.readline().decode().split()[1]}/{per_run * len(runs)} viewers connected")
        time.sleep(max(0.0, t_start + args.warmup - time.time()))
        pg_pids, redis_pids = pids_named("postgres"), pids_named("redis-server")
        cpu0 = {k: cpu_of([p.pid]) for k, p in procs.items()}
        cpu0["postgres (all)"], cpu0["redis-server (all)"] = cpu_of(pg_pids), cpu_of(redis_pids)
        t0 = time.time()
        for p in agent_procs:
            p.wait(timeout=total + 120)
        t1 = time.time()
        cpu = {k: (cpu_of([p.pid]) if p.poll() is None else None) for k, p in procs.items()}
        cpu["postgres (all)"], cpu["redis-server (all)"] = cpu_of(pg_pids), cpu_of(redis_pids)
        reports = {k: json.loads(p.stdout.read().decode().splitlines()[-1]) for k, p in procs.items()
                   if k.startswith("agents") and p.stdout is not None}
        sent = sum(r["steps"] for r in reports.values())
        for k, r in reports.items():  # their CPU until they exited (they stop at the window's end)
            cpu[k] = r["cpu"]
        # Let the workers catch up with what was sent before judging.
        deadline = time.monotonic() + 120
        while sum(len(v) for v in live.steps.values()) < sent and time.monotonic() < deadline:
            time.sleep(0.2)
        t_end = time.time()
        # Ingest lag of the steps that ended inside the measured window.
        lag = [(t_pub - ts) * 1000 for key, t_pub in live.times.items() for _, ts in live.steps.get(key, ())
               if t0 <= ts <= t1]
        stored = sum(len(v) for v in live.steps.values())
        # Split: step end -> XADD (the agent's transport thread), XADD -> publish (the workers).
        to_xadd = [(live.xadd_ms[k] - ts) * 1000 for k in live.times if k in live.xadd_ms
                   for _, ts in live.steps.get(k, ())[:1] if t0 <= ts <= t1]
        to_pub = [(t_pub - live.xadd_ms[k]) * 1000 for k, t_pub in live.times.items() if k in live.xadd_ms
                  and any(t0 <= ts <= t1 for _, ts in live.steps.get(k, ()))]
        sse: list[float] = []
        sse_e2e: list[float] = []
        missed = 0
        if viewers is not None:
            until = {}
            for (run, seq) in live.times:
                until[run] = max(until.get(run, 0), seq)
            out, _ = viewers.communicate(json.dumps({"until_seq": until}).encode() + b"\n", timeout=180)
            got = json.loads(out.decode().splitlines()[-1])
            for run, times in zip(got["runs"], got["times"], strict=True):
                for (r, seq), t_pub in live.times.items():
                    if r != run:
                        continue
                    steps = [ts for _, ts in live.steps.get((r, seq), ()) if t0 <= ts <= t1]
                    if not steps:
                        continue
                    arrived = times.get(str(seq))
                    if arrived is None:
                        missed += 1
                        continue
                    sse.append((arrived - t_pub) * 1000)
                    sse_e2e.extend((arrived - ts) * 1000 for ts in steps)
        window = t1 - t0
        print(f"{args.agents} agents x {args.arms} arms at {args.hz:g} steps/s into PostgreSQL, {args.workers} "
              f"workers (batches of up to {args.ingest_batch}), 1 web process, "
              f"{per_run * len(runs) if viewers else 0} viewers; measured {window:.0f} s "
              f"after {args.warmup:g} s warm-up")
        print(f"  steps: {sent} sent in {total:.0f} s ({sent / total:.0f}/s, target {args.agents * args.hz:.0f}/s), "
              f"{stored} stored and published (all caught up {t_end - t1:.1f} s after the agents stopped)")
        print(f"  ingest lag, step end -> committed + published: {fmt(lag)} (target p95 <= 1000 ms)")
        print(f"    of which step end -> XADD (agent side):   {fmt(to_xadd)}")
        print(f"    and XADD -> committed + published:        {fmt(to_pub)}")
        print(f"  SSE, publish -> viewer:                        {fmt(sse)} ({missed} events missed)")
        print(f"  SSE, step end -> viewer:                       {fmt(sse_e2e)}")
        print("  CPU s/s while measuring: " + ", ".join(
            f"{k} {(cpu[k] - cpu0[k]) / window:.2f}" for k in cpu if cpu[k] is not None and k in cpu0)
            + f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        if live is not None:
            live.close()
        stop_processes(procs.values())
        for k in rds.scan_iter(match=f"{prefix}*"):
            rds.delete(k)
        rds.close()
        if not args.keep:
            drop_pg_schema(args.pg_url, schema)


if __name__ == "__main__":
    main()
