"""The agent's spool is bounded: with Redis unreachable (a real client against a closed port), past
`spool_max_bytes` the oldest steps are thinned, never run_start, run_end, acks or the newest step, and
what was thinned is counted in the steps' `dropped`. bench/spool.py prints the bytes per step."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np

from trainer_agent import CurriculumAgent
from trainer_agent.transport import Spool

ARMS = [f"arm{i:02d}" for i in range(64)]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def step(agent: CurriculumAgent, rng: np.random.Generator) -> None:
    arms = agent.sample(128)
    comp = [a for a in arms for _ in range(8)]
    agent.observe(comp, rng.random(len(comp)) < 0.5, groups=np.repeat(np.arange(128), 8))
    agent.end_step(metrics={"loss": 1.0})


def pending(spool_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (spool_dir / "pending.jsonl").read_text().splitlines()]


def test_unbounded_spool_bytes_per_step(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    rng = np.random.default_rng(0)
    agent = CurriculumAgent("spool-size", ARMS, scheduler="dump", redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                            spool_dir=spool_dir, close_timeout=5.0)
    for _ in range(50):
        step(agent, rng)
    agent.close()
    lines = (spool_dir / "pending.jsonl").read_bytes().splitlines(keepends=True)
    step_bytes = [len(x) for x in lines if x.startswith(b'{"type":"step",')]
    assert len(step_bytes) == 50
    per_step = sum(step_bytes) / len(step_bytes)
    assert 5_000 < per_step < 50_000


def test_bounded_spool_thins_old_steps_only(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    bound = 400_000  # ~40 steps of 64 arms
    rng = np.random.default_rng(1)
    agent = CurriculumAgent("spool-bound", ARMS, scheduler="dump", redis_url=f"redis://127.0.0.1:{closed_port()}/0",
                            spool_dir=spool_dir, spool_max_bytes=bound, close_timeout=5.0)
    n = 300
    for i in range(n):
        if i == 5:
            agent.pin("arm03", 0.2)  # acked on the wire at the next step boundary
        step(agent, rng)
    agent.close()
    transport = agent._transport
    assert transport is not None and transport.connected is False
    msgs = pending(spool_dir)
    size = (spool_dir / "pending.jsonl").stat().st_size
    assert size <= bound, size
    types = [m["type"] for m in msgs]
    assert types[0] == "run_start" and types[-1] == "run_end"
    assert types.count("command_ack") == 1
    steps = [m["step"] for m in msgs if m["type"] == "step"]
    assert steps == sorted(steps) and steps[-1] == n - 1
    # The newest steps are all there; older ones thinned, sparser with age; counted as dropped.
    # (at each thinning the newer half of the waiting steps is kept whole: here ~7 of ~15)
    assert steps[-5:] == list(range(n - 5, n))
    assert transport.dropped == n - len(steps) > 0
    gaps = np.diff(steps)
    assert gaps[: len(gaps) // 4].mean() > gaps[-len(gaps) // 4:].mean()
    # Steps written after a thinning say how many were dropped before them.
    reported = [m["dropped"] for m in msgs if m["type"] == "step"]
    assert reported == sorted(reported) and reported[-1] > 0


def test_spool_thinning_keeps_everything_but_old_steps(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2_000)
    lines = ['{"type":"run_start","run":"r"}']
    for s in range(60):
        lines.append(f'{{"type":"step","step":{s},"pad":"{"x" * 40}"}}')
        if s % 10 == 0:
            lines.append(f'{{"type":"command_ack","id":"c{s}"}}')
    dropped = sum(spool.append([line]) for line in lines) + spool.append(['{"type":"run_end","run":"r"}'])
    kept = [json.loads(x) for x in spool.path.read_text().splitlines()]
    assert spool.path.stat().st_size <= 2_000
    assert sum(1 for m in kept if m["type"] == "command_ack") == 6
    assert kept[0]["type"] == "run_start" and kept[-1]["type"] == "run_end"
    steps = [m["step"] for m in kept if m["type"] == "step"]
    assert dropped == 60 - len(steps) > 0 and steps[-1] == 59
    assert len(spool) == len(kept)
    # Replaying after a thinning starts at the start of the rewritten file.
    assert [p for batch, _ in spool.batches(1000) for p in batch] == spool.path.read_text().splitlines()
