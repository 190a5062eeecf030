"""Cost of the curriculum agent per training step, offline mode.

One step = observe(1,024 completions over 64 arms, GRPO groups of 8) + end_step() + sample(128),
with the DUMP scheduler. Prints median and p99 microseconds per step (targets: <= 250 us, <= 1 ms).

    python bench/agent_overhead.py [--steps 5000] [--arms 64] [--completions 1024] [--scheduler dump]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

import numpy as np

from trainer_agent import CurriculumAgent, available_schedulers


def run(scheduler: str, n_arms: int, n_completions: int, n_sample: int, steps: int, warmup: int,
        group: int, with_groups: bool) -> list[float]:
    arms = [f"arm{i:02d}" for i in range(n_arms)]
    agent = CurriculumAgent(f"bench-{scheduler}", arms, scheduler=scheduler, redis_url=None, seed=0)
    rng = np.random.default_rng(0)
    # Pre-generate inputs so the figure is the agent's cost, not the benchmark's.
    n_prompts = n_completions // group
    inputs = []
    for _ in range(64):
        prompt_arms = rng.integers(0, n_arms, n_prompts)
        comp_arms = [arms[i] for i in np.repeat(prompt_arms, group)]
        rewards = (rng.random(n_completions) < 0.5).astype(np.float64)
        adv = rng.standard_normal(n_completions)
        inputs.append((comp_arms, rewards, adv))
    groups = np.repeat(np.arange(n_prompts), group)
    times = []
    gc.collect()
    for i in range(warmup + steps):
        comp_arms, rewards, adv = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        if with_groups:
            agent.observe(comp_arms, rewards, groups=groups)
        else:
            agent.observe(comp_arms, rewards, advantages=adv)
        agent.end_step()
        agent.sample(n_sample)
        t1 = time.perf_counter_ns()
        if i >= warmup:
            times.append((t1 - t0) / 1000.0)
    agent.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--arms", type=int, default=64)
    ap.add_argument("--completions", type=int, default=1024)
    ap.add_argument("--sample", type=int, default=128)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--scheduler", default="dump", choices=[*available_schedulers(), "all"])
    args = ap.parse_args()
    names = ["uniform", "fixed", "dump", "sec", "learning_progress", "balanced"] if args.scheduler == "all" \
        else [args.scheduler]
    print(f"{args.arms} arms, {args.completions} completions/step, sample({args.sample}), "
          f"{args.steps} timed steps, offline")
    print(f"{'scheduler':<18} {'advantages':<11} {'median us':>10} {'p99 us':>10} {'max us':>10}")
    for name in names:
        for with_groups in (False, True):
            t = run(name, args.arms, args.completions, args.sample, args.steps, args.warmup, args.group,
                    with_groups)
            t.sort()
            p99 = t[min(len(t) - 1, int(0.99 * len(t)))]
            label = "from groups" if with_groups else "given"
            print(f"{name:<18} {label:<11} {statistics.median(t):>10.1f} {p99:>10.1f} {t[-1]:>10.1f}")
    print("targets (dump): median <= 250 us, p99 <= 1000 us")


if __name__ == "__main__":
    main()
