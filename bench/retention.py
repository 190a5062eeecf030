"""Storage per arm-step, and what retention (`steerboard db prune`) gives back.

Per backend: a fresh database, `--steps` steps of `--arms` arms (the messages of bench/ingest.py, as an
agent given group ids sends them) written through the ingest store, the run ended 10 days ago; then the
bytes of arm_steps (table and its indexes) per row, of the rollups (arm_rollups + part_rollups) and of
run_steps per arm-step, before and after `prune_raw(older than 7 days)`. PostgreSQL: pg_total_relation_size
(after VACUUM); SQLite: pages per table from dbstat, and the file once VACUUMed.

    .venv/bin/python bench/retention.py [--steps 2000] [--arms 64] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import time
from pathlib import Path

import orjson
from alembic import command
from sqlalchemy import Engine, text, update

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import database, drop_pg_schema, number_options, parser  # noqa: E402
from ingest import make_messages  # noqa: E402

from server.db import alembic_config, make_engine, sqlite_file  # noqa: E402
from server.store import ingest as ingest_store  # noqa: E402
from server.store.retention import prune_raw  # noqa: E402
from server.store.sql import RUNS  # noqa: E402
from server.wire import INGEST_ADAPTER  # noqa: E402

TABLES = ("arm_steps", "arm_rollups", "part_rollups", "run_steps")


def sizes(engine: Engine, backend: str) -> dict[str, int]:
    if backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM " + ", ".join(TABLES)))
            return {t: int(conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one()) for t in TABLES}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')")).all()
        owner = {name: tbl for name, tbl in rows}
        out = dict.fromkeys(TABLES, 0)
        for name, pgsize in conn.execute(text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")):
            if owner.get(name) in out:
                out[owner[name]] += int(pgsize)
        return out


def main() -> None:
    ap = parser(__doc__)
    number_options(ap, steps=2000, arms=64)
    args = ap.parse_args()
    print("(a shared 2-core machine; sizes do not depend on it)")
    for backend in args.backends.split(","):
        url, _ = database(backend, "bench_retention", False, args.pg_url)
        command.upgrade(alembic_config(url), "head")
        engine = make_engine(url)
        run = f"retention-{backend}"
        msgs = [orjson.dumps({"v": 1, "type": "run_start", "run": run, "seq": 1, "ts": time.time(), "project": "b",
                              "scheduler": "dump", "params": {}, "config": {},
                              "arms": [{"name": f"arm{i:03d}", "metadata": {}} for i in range(args.arms)],
                              "host": "h", "pid": 1})]
        msgs += make_messages(run, args.steps, args.arms)[1:]
        msgs.append(orjson.dumps({"v": 1, "type": "run_end", "run": run, "seq": args.steps + 5, "ts": time.time(),
                                  "status": "finished", "step": args.steps - 1}))
        entries = [ingest_store.Entry(f"{i + 1}-0", INGEST_ADAPTER.validate_json(m), m) for i, m in enumerate(msgs)]
        for i in range(0, len(entries), 200):
            with engine.begin() as conn:
                ingest_store.apply_ingest(conn, entries[i:i + 200])
        with engine.begin() as conn:
            conn.execute(update(RUNS).values(ended_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=10)))
        n = args.steps * args.arms
        before = sizes(engine, backend)
        t0 = time.perf_counter()
        pruned = prune_raw(engine, 7)
        took = time.perf_counter() - t0
        after = sizes(engine, backend)
        rollups = before["arm_rollups"] + before["part_rollups"]
        print(f"{backend}: {args.steps} steps x {args.arms} arms = {n:,} arm-steps")
        print(f"  arm_steps (raw, with indexes): {before['arm_steps'] / n:6.0f} bytes per arm-step "
              f"({before['arm_steps'] / 2**20:.1f} MiB)")
        print(f"  rollups (all widths, parts):   {rollups / n:6.0f} bytes per arm-step ({rollups / 2**20:.1f} MiB)")
        print(f"  run_steps (metrics per step):  {before['run_steps'] / n:6.0f} bytes per arm-step")
        print(f"  prune: {sum(p.rows for p in pruned):,} rows in {took:.2f} s; arm_steps "
              f"{before['arm_steps'] / 2**20:.1f} -> {after['arm_steps'] / 2**20:.1f} MiB, "
              f"kept {sum(after.values()) / n:.0f} bytes per arm-step")
        path = sqlite_file(url)
        if path is not None:
            size0 = path.stat().st_size
            engine.dispose()
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("VACUUM")
            db.close()
            print(f"  SQLite file {size0 / 2**20:.1f} MiB -> {path.stat().st_size / 2**20:.1f} MiB after VACUUM "
                  f"(pruning frees pages for reuse; VACUUM returns them to the disk)")
        engine.dispose()
        if backend == "postgresql" and not args.keep:
            drop_pg_schema(args.pg_url, "bench_retention")


if __name__ == "__main__":
    main()
