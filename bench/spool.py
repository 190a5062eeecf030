"""The agent's disk spool: bytes per step, and what a bound keeps.

A CurriculumAgent with `--arms` arms (signals from group ids, as a GRPO loop gives them) streams to a real
Redis client pointed at a closed loopback port, so every message goes to the spool. Prints the spool's
bytes per step, how many steps and hours the default bound (256 MiB) holds whole at 10 steps/s, and
with `--bound` bytes, what thinning kept of `--steps` steps.

    .venv/bin/python bench/spool.py [--arms 64] [--steps 2000] [--bound 8000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import free_port, number_options  # noqa: E402

from trainer_agent import CurriculumAgent  # noqa: E402
from trainer_agent.transport import DEFAULT_SPOOL_MAX_BYTES  # noqa: E402


def spool_run(arms: list[str], steps: int, bound: int | None, spool_dir: Path) -> CurriculumAgent:
    rng = np.random.default_rng(0)
    agent = CurriculumAgent("spool-bench", arms, scheduler="dump", redis_url=f"redis://127.0.0.1:{free_port()}/0",
                            spool_dir=spool_dir, spool_max_bytes=bound, close_timeout=30.0)
    for _ in range(steps):
        picked = agent.sample(128)
        comp = [a for a in picked for _ in range(8)]
        agent.observe(comp, rng.random(len(comp)) < 0.5, groups=np.repeat(np.arange(128), 8))
        agent.end_step(metrics={"loss": 1.0})
    agent.close()
    return agent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    number_options(ap, arms=64, steps=2000, bound=8_000_000)
    args = ap.parse_args()
    arms = [f"arm{i:02d}" for i in range(args.arms)]
    with tempfile.TemporaryDirectory() as tmp:
        spool_run(arms, 100, None, Path(tmp) / "a")
        lines = (Path(tmp) / "a" / "pending.jsonl").read_bytes().splitlines(keepends=True)
        per_step = float(np.mean([len(x) for x in lines if x.startswith(b'{"type":"step",')]))
        whole = DEFAULT_SPOOL_MAX_BYTES / per_step
        print(f"spool: {per_step:,.0f} bytes per step of {args.arms} arms; the default bound "
              f"({DEFAULT_SPOOL_MAX_BYTES >> 20} MiB) holds {whole:,.0f} steps whole "
              f"({whole / 10 / 60:.0f} min at 10 steps/s; an hour at 10 steps/s would be "
              f"{per_step * 36_000 / 2**20:,.0f} MiB unbounded)")
        t0 = time.perf_counter()
        agent = spool_run(arms, args.steps, args.bound, Path(tmp) / "b")
        wall = time.perf_counter() - t0
        path = Path(tmp) / "b" / "pending.jsonl"
        steps = [json.loads(x)["step"] for x in path.read_text().splitlines() if x.startswith('{"type":"step",')]
        gaps = np.diff(steps)
        assert agent._transport is not None
        print(f"bound {args.bound:,} bytes, {args.steps} steps spooled in {wall:.1f} s: {len(steps)} kept in "
              f"{path.stat().st_size:,} bytes, {agent._transport.dropped} thinned (counted in `dropped`); "
              f"gaps between kept steps: oldest {gaps[:4].tolist()}, newest {gaps[-4:].tolist()}")


if __name__ == "__main__":
    main()
