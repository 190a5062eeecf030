"""Ingest throughput: one `steerboard worker` process, a realistic run, SQLite and PostgreSQL.

Fills a fresh Redis key prefix with a run of `--steps` step messages of `--arms` arms each (what a
DUMP-scheduled agent sends), starts ONE worker process on a fresh database, and measures the
sustained rate at which arm rows are committed (from the first acked batch to the last, read off
the consumer group: an entry is acked only after its SQL commit). Prints rows/s, rows, seconds, and
rows per CPU-second of the worker process (a figure that other load on the machine hardly moves;
rows/s is bounded by it and by the CPU left to the worker, Redis and PostgreSQL).

    .venv/bin/python bench/ingest.py                 # both backends
    .venv/bin/python bench/ingest.py --backends sqlite --steps 5000
    .venv/bin/python bench/ingest.py --pass-hist      # arms carry a pass-rate profile (prompt ids given)

Targets (DESIGN.md): >= 100,000 arm rows/s into SQLite, >= 50,000/s into PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import redis
from alembic import command
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import cpu_seconds, number_options  # noqa: E402

from server.db import alembic_config, make_engine  # noqa: E402


def make_messages(run: str, steps: int, arms: int, seed: int = 0, pass_hist: bool = False) -> list[bytes]:
    rng = random.Random(seed)
    names = [f"src{a % 4}/level{a // 4}" for a in range(arms)]
    msgs = [
        orjson.dumps({
            "v": 1, "type": "run_start", "run": run, "seq": 1, "ts": time.time(), "project": "bench",
            "scheduler": "dump", "params": {"window": 300, "c": 1.0, "temperature": 0.1},
            "config": {"model": "bench"}, "arms": [{"name": n, "metadata": {"i": i}} for i, n in enumerate(names)],
            "host": "bench", "pid": os.getpid(),
        })
    ]
    totals = [0] * arms
    for step in range(steps):
        recs = []
        for i, n in enumerate(names):
            k = rng.randint(0, 16)
            totals[i] += k
            exploit, explore = rng.random(), rng.random() * 0.2
            recs.append({
                "arm": n, "p": 1.0 / arms, "score": exploit + explore,
                "parts": {"exploit": exploit, "explore": explore}, "n_step": k, "n_total": totals[i],
                "mean_abs_adv": rng.random() if k else None, "mean_reward": rng.random() if k else None,
                "accuracy": rng.random() if k else None, "state": "active", "pin": None, "boost": None,
                # What an agent given group ids sends; with prompt ids (--pass-hist) also the pass-rate
                # profile of the arm's window prompts (5 bins).
                "n_groups": k // 8 + 1, "zero_var": rng.random(),
                "pass_hist": [rng.randint(0, 40) for _ in range(5)] if pass_hist else None,
            })
        msgs.append(orjson.dumps({
            "v": 1, "type": "step", "run": run, "seq": step + 2, "ts": time.time(), "step": step,
            "metrics": {"loss": rng.random(), "kl": rng.random() * 0.01, "lr": 1e-6}, "dropped": 0,
            "arms": recs,
        }))
    return msgs


def acked(r: redis.Redis, stream: str, group: str) -> int:
    for g in r.xinfo_groups(stream):
        if g["name"] in (group, group.encode()):
            return int(g["entries-read"] or 0) - int(g["pending"])
    return 0


def bench(backend: str, url: str, steps: int, arms: int, redis_url: str, batch: int,
          pass_hist: bool = False) -> dict[str, float]:
    command.upgrade(alembic_config(url), "head")
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    stream = f"{prefix}ingest"
    r = redis.Redis.from_url(redis_url)
    msgs = make_messages(f"bench-{backend}-{uuid.uuid4().hex[:6]}", steps, arms, pass_hist=pass_hist)
    pipe = r.pipeline(transaction=False)
    for m in msgs:
        pipe.xadd(stream, {"m": m})
    pipe.execute()
    r.xgroup_create(stream, "ingest", id="0")
    env = {
        **os.environ, "STEERBOARD_DATABASE_URL": url, "STEERBOARD_REDIS_URL": redis_url,
        "STEERBOARD_KEY_PREFIX": prefix, "STEERBOARD_INGEST_BATCH": str(batch), "STEERBOARD_LOG_LEVEL": "WARNING",
    }
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "server", "worker"], env=env, cwd=ROOT)
    total = len(msgs)
    first_t = first_n = first_cpu = end_cpu = None
    try:
        while True:
            n = acked(r, stream, "ingest")
            now = time.perf_counter()
            if n > 0 and first_t is None:
                first_t, first_n, first_cpu = now, n, cpu_seconds(proc.pid)
            if n >= total:
                end, end_cpu = now, cpu_seconds(proc.pid)
                break
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode}")
            if now - start > 300:
                raise SystemExit("timed out")
            time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(10)
        r.delete(*r.keys(f"{prefix}*"))
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM arm_steps")).scalar_one()
    engine.dispose()
    if rows != steps * arms:
        raise SystemExit(f"{backend}: expected {steps * arms} arm rows, found {rows}")
    assert first_t is not None and first_n is not None
    step_msgs = total - 1
    sustained_rows = (total - first_n) * arms if first_n < total else step_msgs * arms
    secs = end - first_t if end > first_t else end - start
    cpu = end_cpu - first_cpu if end_cpu is not None and first_cpu is not None else float("nan")
    return {"rows": rows, "rows_per_s": sustained_rows / secs, "seconds": secs, "wall": end - start,
            "rows_per_cpu_s": sustained_rows / cpu if cpu > 0 else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    number_options(ap, steps=3000, arms=64)
    ap.add_argument("--batch", type=int, default=500, help="entries per XREADGROUP")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--pg-url", default=os.environ.get(
        "STEERBOARD_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--pass-hist", action="store_true",
                    help="every arm record carries a pass-rate profile (an agent given prompt ids)")
    args = ap.parse_args()
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as d:
                res = bench(backend, f"sqlite:///{d}/bench.db", args.steps, args.arms, args.redis_url, args.batch,
                            args.pass_hist)
        elif backend == "postgresql":
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = make_engine(args.pg_url)
            with admin.begin() as conn:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
            sep = "&" if "?" in args.pg_url else "?"
            try:
                res = bench(backend, f"{args.pg_url}{sep}options=-csearch_path%3D{schema}", args.steps,
                            args.arms, args.redis_url, args.batch, args.pass_hist)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                admin.dispose()
        else:
            raise SystemExit(f"unknown backend {backend!r}")
        print(
            f"{backend:10s} {res['rows_per_s']:>10,.0f} arm-rows/s sustained   "
            f"{int(res['rows']):,} rows   {res['seconds']:.2f} s "
            f"(wall incl. worker start {res['wall']:.2f} s; "
            f"{res['rows_per_cpu_s']:,.0f} rows per worker CPU-second)"
        )


if __name__ == "__main__":
    main()
