"""The runs list with 5,000 runs: the dashboard's runs page (and the fragment its refresh asks for) and
the JSON list, default and sorted by each kind of column, in SQLite and in PostgreSQL.

Builds the runs through the real ingest store (run_start with 8 arms, 0 to --max-steps steps, three
evaluations, a run_end for most), then adds commands (some applied), people's tags, notes and archived
runs with plain SQL; serves them with the real app (uvicorn, no ingest) and times each request over
--repeats requests. Prints p50/p95 in ms (target: p95 <= 300 ms).

    .venv/bin/python bench/runs_list.py                          # both backends, 5,000 runs
    .venv/bin/python bench/runs_list.py --backends sqlite --runs 1000
    .venv/bin/python bench/runs_list.py --keep                   # reuse the databases on the next run
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from alembic import command
from sqlalchemy import text
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import databases, number_options, parser, pct, web_server  # noqa: E402

from server.db import alembic_config, make_engine  # noqa: E402
from server.store import ingest as ingest_store  # noqa: E402
from server.store.manage import RUN_ACTIONS, RUN_TAGS  # noqa: E402
from server.store.sql import COMMANDS, RUNS  # noqa: E402
from server.wire import INGEST_ADAPTER  # noqa: E402

ARMS = [f"src{i % 4}/level{i // 4}" for i in range(8)]
TAGS = ["qwen2.5-0.5b", "qwen2.5-1.5b", "gsm8k", "math", "ablation", "baseline", "lr-sweep", "long"]
TARGET_MS = 300.0


def run_docs(i: int, rng: random.Random, max_steps: int) -> list[dict[str, Any]]:
    """The wire messages of run i."""
    run = f"bench-run-{i:05d}"
    steps = rng.randint(0, max_steps)
    t0 = time.time() - 86400 * 30 + i * 300
    docs: list[dict[str, Any]] = [{
        "v": 1, "type": "run_start", "run": run, "seq": 1, "ts": t0, "project": f"proj-{i % 7}",
        "scheduler": ("dump", "uniform", "sec", "learning_progress", "balanced")[i % 5],
        "params": {"c": 1.0}, "config": {"tags": rng.sample(TAGS[:4], 2), "lr": 1e-6},
        "arms": [{"name": a, "metadata": {}} for a in ARMS], "host": "bench", "pid": 1,
    }]
    for s in range(steps):
        docs.append({"v": 1, "type": "step", "run": run, "seq": 2 + s, "ts": t0 + 10 * s, "step": s,
                     "metrics": {"loss": 1.0 / (s + 1)}, "dropped": 0, "arms": [
                         {"arm": a, "p": 1 / len(ARMS), "score": 0.5, "parts": {"mu": 0.3, "bonus": 0.2},
                          "n_step": 8, "n_total": 8 * (s + 1), "mean_abs_adv": 0.4, "mean_reward": 0.5,
                          "accuracy": rng.random(), "state": "active", "pin": None, "boost": None}
                         for a in ARMS]})
    for k, step in enumerate((0, steps // 2, steps)):
        docs.append({"v": 1, "type": "eval", "run": run, "seq": 10_000 + k, "ts": t0 + 10 * step, "name": "heldout",
                     "step": step, "arms": [{"arm": a, "accuracy": rng.random()} for a in ARMS]})
    if i % 10:  # one in ten still running (stale, by now)
        docs.append({"v": 1, "type": "run_end", "run": run, "seq": 20_000, "ts": t0 + 10 * steps + 5,
                     "status": ("finished", "finished", "failed", "interrupted")[i % 4], "step": max(steps - 1, 0)})
    return docs


def fill(url: str, n_runs: int, max_steps: int, batch: int = 400) -> float:
    """Write the runs through ingest_store.apply_ingest, then commands, tags, notes and archiving by SQL;
    returns seconds taken."""
    engine = make_engine(url)
    rng = random.Random(7)
    t0 = time.perf_counter()
    entries: list[ingest_store.Entry] = []
    n = 0

    def flush() -> None:
        with engine.begin() as conn:
            ingest_store.apply_ingest(conn, entries)
        entries.clear()

    for i in tqdm(range(n_runs), desc="fill", unit="run", leave=False):
        for doc in run_docs(i, rng, max_steps):
            n += 1
            raw = orjson.dumps(doc)
            entries.append(ingest_store.Entry(f"{n}-0", INGEST_ADAPTER.validate_json(raw), raw))
        if len(entries) >= batch:
            flush()
    if entries:
        flush()
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        ids = [rid for (rid,) in conn.execute(RUNS.select().with_only_columns(RUNS.c.id).order_by(RUNS.c.id))]
        commands = []
        for rid in ids:
            for k in range(rng.choice((0, 0, 1, 2, 5))):
                commands.append({"id": str(uuid.uuid4()), "run_id": rid, "kind": "pin", "arm": ARMS[0], "value": 0.2,
                                 "steps": None, "actor": "bench", "reason": "", "created_at": now,
                                 "status": "applied" if k % 3 else "rejected", "applied_step": 1})
        conn.execute(COMMANDS.insert(), commands)
        conn.execute(RUN_TAGS.insert(), [{"run_id": rid, "tag": TAGS[4 + rid % 4], "source": "user", "position": 0}
                                         for rid in ids if rid % 3 == 0])
        for rid in ids[::5]:
            conn.execute(RUNS.update().where(RUNS.c.id == rid).values(
                note=f"run {rid}: lr 1e-6, 8 generations per prompt", archived_at=now if rid % 10 == 0 else None))
        conn.execute(RUN_ACTIONS.insert(), [{"run": f"bench-run-{rid:05d}", "action": "note", "detail": "x",
                                             "actor": "bench", "created_at": now} for rid in ids[::5]])
    engine.dispose()
    return time.perf_counter() - t0


CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("page, default (newest first)", "/", {}, False),
    ("page fragment (3 s refresh)", "/", {}, True),
    ("page 50 of 90", "/", {"page": 50}, True),
    ("sort by steps", "/", {"sort": "steps", "order": "desc"}, True),
    ("sort by status", "/", {"sort": "status"}, True),
    ("sort by duration", "/", {"sort": "duration", "order": "desc"}, True),
    ("sort by overrides", "/", {"sort": "overrides", "order": "desc"}, True),
    ("sort by final eval", "/", {"sort": "final", "order": "desc"}, True),
    ("sort by best eval, page 20", "/", {"sort": "best", "order": "asc", "page": 20}, True),
    ("sort by tags", "/", {"sort": "tags"}, True),
    ("filter: stale", "/", {"status": "stale"}, True),
    ("filter: tag + project", "/", {"tag": "ablation", "project": "proj-3"}, True),
    ("filter: archived only", "/", {"archived": "only"}, True),
    ("JSON, default (200 a page)", "/api/runs", {}, False),
    ("JSON, 50, sort by final eval", "/api/runs", {"limit": 50, "sort": "final"}, False),
    ("JSON, 50, sort by overrides, p30", "/api/runs", {"limit": 50, "sort": "overrides", "page": 30}, False),
]


def time_requests(base: str, repeats: int) -> list[tuple[str, float, float, int]]:
    client = httpx.Client(base_url=base, timeout=60)
    out = []
    for name, path, params, htmx in CASES:
        headers = {"HX-Request": "true"} if htmx else {}
        r = client.get(path, params=params, headers=headers)  # warm-up, and a check
        r.raise_for_status()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            r = client.get(path, params=params, headers=headers)
            times.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
        out.append((name, pct(times, 0.5), pct(times, 0.95), len(r.content)))
    client.close()
    return out


def main() -> None:
    ap = parser(__doc__)
    number_options(ap, runs=5000, max_steps=40, repeats=40)
    args = ap.parse_args()
    schema = f"bench_runs_{args.runs}x{args.max_steps}"
    print(f"{args.runs:,} runs of 8 arms, 0-{args.max_steps} steps, 3 evaluations each; "
          f"{args.repeats} requests per case")
    for backend, url, exists in databases(args, schema):
        command.upgrade(alembic_config(url), "head")
        if not exists:
            secs = fill(url, args.runs, args.max_steps)
            print(f"[{backend}] filled in {secs:.0f} s")
        eng = make_engine(url)
        with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))  # what autovacuum (PostgreSQL) or a long-lived database would have
            counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                      for t in ("runs", "arms", "arm_steps", "evals", "commands", "run_tags")}
        eng.dispose()
        print(f"[{backend}] rows: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        with web_server(url, "bench-runs", ROOT) as base:
            print(f"[{backend}] {'request':<36} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>9}")
            for name, p50, p95, size in time_requests(base, args.repeats):
                flag = "ok" if p95 <= TARGET_MS else f"OVER {TARGET_MS:.0f} ms"
                print(f"[{backend}] {name:<36} {p50:>8.1f} {p95:>8.1f} {size:>9,}  {flag}")


if __name__ == "__main__":
    main()
