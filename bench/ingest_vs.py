"""Ingest's store path, this tree against a git revision, on identical messages, alternating.

`bench/ingest.py` measures a whole worker (Redis, validation, SQL, publish) on the messages its own tree's
agent sends, so two trees whose agents send different records (a newer one adds per-arm signals) are not
compared like for like. This one feeds both trees the very same messages (REV's `bench/ingest.py`
`make_messages`, which both accept) through `IngestWorker` in process, SQLite, and counts the worker's
CPU time for validating and committing them (`_parse` + `_commit`: the wire validation, the SQL writes,
the rollups, the diagnosis and the live events built from them; not the Redis round trips). Each tree
runs in a fresh process, `--rounds` times, alternating; prints arm rows per CPU-second per round and the
ratio of the medians.

    .venv/bin/python bench/ingest_vs.py --vs caf1357 [--rounds 6] [--steps 3000] [--arms 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys, tempfile, time
sys.path.insert(0, sys.argv[1] + "/bench")
from ingest import make_messages
from alembic import command
from server.db import alembic_config, make_engine
from server.ingest import IngestWorker
from server.settings import Settings
steps, arms, batch = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
url = f"sqlite:///{tempfile.mkdtemp()}/ingest.db"
command.upgrade(alembic_config(url), "head")
worker = IngestWorker(Settings(database_url=url), make_engine(url), client=None, consumer="bench")
entries = [(f"{i + 1}-0".encode(), {b"m": m}) for i, m in enumerate(make_messages("bench-vs", steps, arms))]
cpu = 0.0
for i in range(0, len(entries), batch):
    t = time.process_time()
    parsed = worker._parse(entries[i:i + batch])
    worker._commit(parsed.valid)
    cpu += time.process_time() - t
    assert not parsed.dead, parsed.dead[0].reason
print(steps * arms / cpu)
"""


def run(tree: Path, messages_from: Path, args: argparse.Namespace) -> float:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(messages_from), str(args.steps), str(args.arms), str(args.batch)],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True,
        check=False)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vs", required=True, help="git revision to compare with")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--arms", type=int, default=64)
    p.add_argument("--batch", type=int, default=500, help="entries per transaction (the worker's batch)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-ingest-vs-") as tmp:
        old = Path(tmp)
        archive = subprocess.run(["git", "archive", args.vs], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        rates: dict[str, list[float]] = {"new": [], "old": []}
        print(f"{args.steps} steps x {args.arms} arms, batches of {args.batch}, SQLite, messages of {args.vs}'s "
              f"bench/ingest.py; arm rows per CPU-second of validation + commit")
        print(f"{'round':>5} {'new':>10} {'old':>10}")
        for i in range(args.rounds):
            rates["new"].append(run(ROOT, old, args))
            rates["old"].append(run(old, old, args))
            print(f"{i:>5} {rates['new'][-1]:>10,.0f} {rates['old'][-1]:>10,.0f}", flush=True)
        new, old_m = statistics.median(rates["new"]), statistics.median(rates["old"])
        print(f"median of rounds: new {new:,.0f}, old ({args.vs}) {old_m:,.0f}, new/old {new / old_m:.3f}")


if __name__ == "__main__":
    main()
