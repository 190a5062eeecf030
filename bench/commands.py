"""Command posts under concurrency, and as unanswered commands pile up.

Starts `steerboard serve --no-ingest` (one web process, no ingest worker) on a fresh database per
backend, stores a running 64-arm run straight through the ingest store, and posts
`POST /api/runs/{run}/commands` (a boost of a random arm: always valid whatever is pending) from 1 and
from 16 concurrent clients (threads with their own HTTP connection, local dev mode), first on a run with
no pending command, then on one with `--pending` (1,000) commands already pending. No agent answers, so
every post adds one more pending command: a case starts at its pending count and ends `--posts` higher.
Prints p50 / p95 / max latency, posts per second and the web process's CPU per post per case (target:
16 clients p95 <= 100 ms, flat from 0 to 1,000 pending).

    .venv/bin/python bench/commands.py [--posts 400] [--pending 1000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import random
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
from alembic import command
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu_seconds, database, drop_pg_schema, parser, pct, serve_web  # noqa: E402

from server.db import alembic_config, make_engine  # noqa: E402
from server.store import ingest as ingest_store  # noqa: E402
from server.store.sql import COMMANDS, run_id, utc_from_ts  # noqa: E402
from server.wire import INGEST_ADAPTER  # noqa: E402

ARMS = [f"arm{i:02d}" for i in range(64)]


def make_run(url: str, name: str, pending: int) -> None:
    """A running run with one step of every arm, and `pending` unanswered commands in its audit log."""
    now = time.time()
    docs = [
        {"v": 1, "type": "run_start", "run": name, "seq": 1, "ts": now, "project": "bench", "scheduler": "dump",
         "params": {}, "config": {}, "arms": [{"name": a, "metadata": {}} for a in ARMS], "host": "h", "pid": 1},
        {"v": 1, "type": "step", "run": name, "seq": 2, "ts": now, "step": 0, "metrics": {}, "dropped": 0,
         "arms": [{"arm": a, "p": 1 / len(ARMS), "score": None, "parts": {}, "n_step": 0, "n_total": 0,
                   "mean_abs_adv": None, "mean_reward": None, "accuracy": None, "state": "active", "pin": None,
                   "boost": None} for a in ARMS]},
    ]
    engine = make_engine(url)
    try:
        entries = [ingest_store.Entry(f"{i + 1}-0", INGEST_ADAPTER.validate_json(orjson.dumps(d)), orjson.dumps(d))
                   for i, d in enumerate(docs)]
        with engine.begin() as conn:
            ingest_store.apply_ingest(conn, entries)
            rid = run_id(conn, name)
            t0 = time.time() - pending
            rows = [
                {"id": str(uuid.uuid4()), "run_id": rid, "kind": "boost", "arm": ARMS[i % len(ARMS)], "value": 1.5,
                 "steps": 3, "actor": "bench", "reason": "", "status": "pending",
                 "created_at": utc_from_ts(t0 + i)}
                for i in range(pending)
            ]
            if rows:
                conn.execute(insert(COMMANDS), rows)
    finally:
        engine.dispose()


def post_many(base: str, run: str, n_clients: int, n_posts: int) -> tuple[list[float], float]:
    """`n_posts` posts shared by `n_clients` threads; latencies (ms) and the wall time (s)."""
    lat: list[float] = []
    lock = threading.Lock()
    left = [n_posts]

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=60) as c:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                body = {"kind": "boost", "arm": rng.choice(ARMS), "value": 1.5, "steps": 3}
                t0 = time.perf_counter()
                r = c.post(f"/api/runs/{run}/commands", json=body)
                dt = (time.perf_counter() - t0) * 1000
                if r.status_code != 202:
                    raise SystemExit(f"POST answered {r.status_code}: {r.text[:300]}")
                with lock:
                    lat.append(dt)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, time.perf_counter() - t0


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--posts", type=int, default=400, help="posts per case")
    ap.add_argument("--pending", type=int, default=1000, help="pending commands of the second run")
    ap.add_argument("--clients", default="1,16")
    args = ap.parse_args()
    print("(figures from a shared 2-core machine: other work runs beside the bench)")
    for backend in args.backends.split(","):
        url, _ = database(backend, "bench_commands", False, args.pg_url)
        command.upgrade(alembic_config(url), "head")
        runs = {0: "cmd-empty", args.pending: "cmd-backlog"}
        for n, name in runs.items():
            make_run(url, name, n)
        proc, base = serve_web(url, "bench-cmd", ROOT)
        try:
            with httpx.Client(base_url=base) as c:  # warm: the first request of a process imports and connects
                for name in runs.values():
                    c.get(f"/api/runs/{name}")
            for pending, name in runs.items():
                for n_clients in (int(x) for x in args.clients.split(",")):
                    cpu0 = cpu_seconds(proc.pid)
                    lat, wall = post_many(base, name, n_clients, args.posts)
                    cpu1 = cpu_seconds(proc.pid)
                    web = ("" if cpu0 is None or cpu1 is None
                           else f"  web CPU {1000 * (cpu1 - cpu0) / len(lat):4.1f} ms/post")
                    print(f"{backend:10s} {n_clients:2d} client(s), pending {pending:5d} -> {pending + args.posts:5d}: "
                          f"p50 {statistics.median(lat):6.1f} ms  p95 {pct(lat, 0.95):6.1f} ms  "
                          f"max {max(lat):7.1f} ms  {len(lat) / wall:6.1f} posts/s{web}")
                    pending += args.posts
        finally:
            proc.terminate()
            proc.wait(10)
            if backend == "postgresql" and not args.keep:
                drop_pg_schema(args.pg_url, "bench_commands")


if __name__ == "__main__":
    main()
