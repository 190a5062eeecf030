"""One rank of the 2-process gloo test (run by test_distributed.py through torch.multiprocessing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

ARMS = ["a", "b", "c", "d"]
PROMPTS, G, STEPS = 16, 4, 8
DATASET_ARMS = [ARMS[i % 4] for i in range(40)]


def step_data(step: int, arms: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The global batch of a step: completions in prompt order, rewards, group ids."""
    rng = np.random.default_rng(1000 + step)
    comp = [a for a in arms for _ in range(G)]
    bias = np.array([{"a": 0.9, "b": 0.5, "c": 0.2, "d": 0.0}[a] for a in comp])
    rewards = (rng.random(len(comp)) < bias).astype(np.float64)
    groups = np.repeat(np.arange(len(arms)), G)
    return comp, rewards, groups


def run(rank: int, world: int, out_dir: str, redis_url: str | None, prefix: str, port: int) -> None:
    """world == 1: the single-process reference on the same global data."""
    from trainer_agent import CurriculumAgent

    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    agent = CurriculumAgent("dist-run" if world > 1 else "dist-ref", ARMS, scheduler="dump", seed=7,
                            redis_url=redis_url, key_prefix=prefix, spool_dir=Path(out_dir) / f"spool{rank}")
    sampler_iter = iter(agent.sampler(DATASET_ARMS, group_size=G, num_samples=10**6))
    trace = []
    for step in range(STEPS):
        arms = agent.sample(PROMPTS)
        comp, rewards, groups = step_data(step, arms)
        if world > 1:  # rank r takes its contiguous half of the prompts
            per = len(comp) // world
            sl = slice(rank * per, (rank + 1) * per)
            comp, rewards, groups = comp[sl], rewards[sl], groups[sl]
        agent.observe(comp, rewards, groups=groups)
        if step == 3:
            agent.pin("c", 0.5)
        stats = agent.end_step()
        indices = [next(sampler_iter) for _ in range(4 * G)]
        trace.append({
            "arms": arms, "p": stats.p.tolist(), "n_step": stats.n_step, "n_total": stats.n_total,
            "mean_abs_adv": stats.mean_abs_adv, "accuracy": stats.accuracy, "indices": indices,
            "probabilities": agent.probabilities(), "acks": [a.status for a in stats.acks],
        })
    agent.close()
    Path(out_dir, f"rank{rank}-of-{world}.json").write_text(json.dumps({"pid": os.getpid(), "trace": trace}))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


RESUME_AT, RESUME_STEPS = 3, 3


def run_resume(rank: int, world: int, out_dir: str, redis_url: str | None, prefix: str, port: int) -> None:
    """Load the state a single process saved after RESUME_AT steps (on every rank), go on RESUME_STEPS
    steps; then a second agent whose ranks were given different start steps. world == 1: the reference."""
    from trainer_agent import CurriculumAgent

    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    state = json.loads(Path(out_dir, "state.json").read_text())
    agent = CurriculumAgent("dist-resume" if world > 1 else "dist-resume-ref", ARMS, scheduler="dump", seed=123,
                            redis_url=redis_url, key_prefix=prefix, spool_dir=Path(out_dir) / f"spool-r{rank}")
    agent.load_state_dict(state)
    trace = []
    for step in range(RESUME_AT, RESUME_AT + RESUME_STEPS):
        arms = agent.sample(PROMPTS)
        comp, rewards, groups = step_data(step, arms)
        if world > 1:
            per = len(comp) // world
            sl = slice(rank * per, (rank + 1) * per)
            comp, rewards, groups = comp[sl], rewards[sl], groups[sl]
        agent.observe(comp, rewards, groups=groups)
        stats = agent.end_step()
        trace.append({"arms": arms, "step": stats.step, "p": stats.p.tolist(), "n_total": stats.n_total})
    agent.close()
    # Rank 0 numbers the steps; a rank given another start_step follows it.
    other = CurriculumAgent("dist-start", ARMS, scheduler="dump", redis_url=None, start_step=10 if rank == 0 else 0)
    follow = [other.end_step().step for _ in range(2)] + [other.step]
    Path(out_dir, f"resume-rank{rank}-of-{world}.json").write_text(json.dumps({"trace": trace, "follow": follow}))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
