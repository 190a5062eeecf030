"""Cost of the curriculum agent per training step, offline mode.

One step = observe(1,024 completions over 64 arms, GRPO groups of 8) + end_step() + sample(128),
with the DUMP scheduler. Prints median and p99 microseconds per step (targets: <= 250 us, <= 1 ms).
Cases: advantages given; advantages from group ids (which also gives each arm's zero-variance share);
and group ids plus prompt ids (the pass-rate profile too; prompts drawn from 2,000 per arm).

    python bench/agent_overhead.py [--steps 5000] [--arms 64] [--completions 1024] [--scheduler dump]
    python bench/agent_overhead.py --vs REV [--rounds 4]   # this tree against git REV, alternating
    python bench/agent_overhead.py --vs REV --interleave --rounds 40   # the same in one process, in turns

`--vs` runs each case in a fresh process, alternating the tree's `trainer_agent` with the one of git
revision REV (its files extracted to a temporary directory), `--rounds` times, and prints both medians
per round and the ratio of the medians of rounds: the machine's speed drifts, so only figures measured
side by side are compared. The prompts case does not exist before the pass-rate profile; with `--vs`
it is compared with REV's from-groups case (the cost of the profile on top of everything).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import number_options

from trainer_agent import CurriculumAgent, available_schedulers

CASES = ("given", "from groups", "prompts")


Inputs = tuple[list[tuple[list[str], Any, Any, Any]], Any]


def make_inputs(arms: list[str], n_completions: int, group: int) -> Inputs:
    """64 pre-generated steps (arm per completion, rewards, advantages, prompt ids) and the group ids, so
    the figure is the agent's cost, not the benchmark's. Prompts are drawn from 2,000 per arm."""
    rng = np.random.default_rng(0)
    n_prompts = n_completions // group
    inputs = []
    for _ in range(64):
        prompt_arms = rng.integers(0, len(arms), n_prompts)
        comp_arms = [arms[i] for i in np.repeat(prompt_arms, group)]
        rewards = (rng.random(n_completions) < 0.5).astype(np.float64)
        adv = rng.standard_normal(n_completions)
        prompt_ids = np.repeat(prompt_arms * 2000 + rng.integers(0, 2000, n_prompts), group)
        inputs.append((comp_arms, rewards, adv, prompt_ids))
    return inputs, np.repeat(np.arange(n_prompts), group)


def timed_step(agent: Any, case: str, data: Inputs, i: int, n_sample: int) -> int:
    """Nanoseconds of one step of `case`: observe + end_step + sample(n_sample)."""
    inputs, groups = data
    comp_arms, rewards, adv, prompt_ids = inputs[i % len(inputs)]
    t0 = time.perf_counter_ns()
    if case == "prompts":
        agent.observe(comp_arms, rewards, groups=groups, prompts=prompt_ids)
    elif case == "from groups":
        agent.observe(comp_arms, rewards, groups=groups)
    else:
        agent.observe(comp_arms, rewards, advantages=adv)
    agent.end_step()
    agent.sample(n_sample)
    return time.perf_counter_ns() - t0


def run(scheduler: str, n_arms: int, n_completions: int, n_sample: int, steps: int, warmup: int,
        group: int, case: str) -> list[float]:
    arms = [f"arm{i:02d}" for i in range(n_arms)]
    agent = CurriculumAgent(f"bench-{scheduler}", arms, scheduler=scheduler, redis_url=None, seed=0)
    data = make_inputs(arms, n_completions, group)
    times = []
    gc.collect()
    for i in range(warmup + steps):
        ns = timed_step(agent, case, data, i, n_sample)
        if i >= warmup:
            times.append(ns / 1000.0)
    agent.close()
    return times


def _child(args: argparse.Namespace, case: str) -> float:
    t = run(args.scheduler, args.arms, args.completions, args.sample, args.steps, args.warmup, args.group, case)
    return statistics.median(t)


def compare(args: argparse.Namespace) -> None:
    """This tree's trainer_agent against git revision `args.vs`, in alternating fresh processes."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", str(root), "archive", args.vs, "trainer_agent"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        print(f"{args.arms} arms, {args.completions} completions/step, sample({args.sample}), {args.steps} timed "
              f"steps, offline; medians in us, this tree vs {args.vs}, {args.rounds} alternating rounds")
        print(f"{'case':<12} {'round':>5} {'new':>8} {'old':>8}")
        for case in CASES:
            old_case = "from groups" if case == "prompts" else case
            new_t: list[float] = []
            old_t: list[float] = []
            for rnd in range(args.rounds):
                for tree, dest, c in ((str(root), new_t, case), (old, old_t, old_case)):
                    out = subprocess.run(
                        [sys.executable, __file__, "--child", c, "--steps", str(args.steps), "--arms", str(args.arms),
                         "--completions", str(args.completions), "--scheduler", args.scheduler],
                        check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": tree},
                        cwd=tree,
                    ).stdout
                    dest.append(float(out.strip().splitlines()[-1]))
                print(f"{case:<12} {rnd:>5} {new_t[-1]:>8.1f} {old_t[-1]:>8.1f}")
            m_new, m_old = statistics.median(new_t), statistics.median(old_t)
            label = f"{case} vs {old_case}" if old_case != case else case
            print(f"{label:<24} median of rounds: new {m_new:.1f} us, old {m_old:.1f} us, "
                  f"new/old {m_new / m_old:.3f}")


def interleave(args: argparse.Namespace) -> None:
    """This tree's trainer_agent against git revision `args.vs` in ONE process (REV's package imported as
    `trainer_agent_rev`), in blocks of `args.block` steps taken in turn by each agent, `args.rounds` blocks
    each: a speed drift of the machine then falls on both alike, which alternating processes do not ensure
    when it drifts by 2x from minute to minute. Prints the median of block medians per case and the ratio."""
    import importlib

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(root), "archive", args.vs, "trainer_agent"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        Path(tmp, "trainer_agent").rename(Path(tmp, "trainer_agent_rev"))  # its imports are relative
        sys.path.insert(0, tmp)
        old_mod = importlib.import_module("trainer_agent_rev")
        arms = [f"arm{i:02d}" for i in range(args.arms)]
        data = make_inputs(arms, args.completions, args.group)
        # (label, agent, case): REV has no prompts case; its from-groups case is what prompts is held to.
        runners = [(f"new {c}", CurriculumAgent, c) for c in CASES] + [
            (f"old {c}", old_mod.CurriculumAgent, c) for c in CASES[:2]]
        agents = [(label, cls(f"bench-{i}", arms, scheduler=args.scheduler, redis_url=None, seed=0), case)
                  for i, (label, cls, case) in enumerate(runners)]

        def step(agent: Any, case: str, i: int) -> int:
            return timed_step(agent, case, data, i, args.sample)

        for _, agent, case in agents:
            for i in range(args.warmup):
                step(agent, case, i)
        blocks: dict[str, list[float]] = {label: [] for label, _, _ in agents}
        gc.collect()
        gc.disable()
        try:
            for b in range(args.rounds):
                for label, agent, case in agents:
                    ts = [step(agent, case, args.warmup + b * args.block + i) for i in range(args.block)]
                    blocks[label].append(statistics.median(ts) / 1000.0)
        finally:
            gc.enable()
        med = {label: statistics.median(v) for label, v in blocks.items()}
        print(f"{args.arms} arms, {args.completions} completions/step, sample({args.sample}), {args.scheduler}, "
              f"offline; one process, {args.rounds} blocks of {args.block} steps per agent in turn; "
              f"median of block medians, this tree vs {args.vs}")
        for case in CASES:
            old_case = "from groups" if case == "prompts" else case
            label = f"{case} vs {old_case}" if old_case != case else case
            print(f"{label:<24} new {med[f'new {case}']:.1f} us, old {med[f'old {old_case}']:.1f} us, "
                  f"new/old {med[f'new {case}'] / med[f'old {old_case}']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    number_options(ap, steps=5000, warmup=200, arms=64, completions=1024, sample=128, group=8)
    ap.add_argument("--scheduler", default="dump", choices=[*available_schedulers(), "all"])
    ap.add_argument("--vs", metavar="REV", help="compare with git revision REV, alternating fresh processes")
    ap.add_argument("--rounds", type=int, default=4, help="with --vs: rounds (processes) or blocks (--interleave)")
    ap.add_argument("--interleave", action="store_true",
                    help="with --vs: both trees in one process, in turns of --block steps (robust to drift)")
    ap.add_argument("--block", type=int, default=100, help="steps per turn with --interleave")
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(_child(args, args.child))
        return
    if args.vs:
        interleave(args) if args.interleave else compare(args)
        return
    names = ["uniform", "fixed", "dump", "sec", "learning_progress", "balanced"] if args.scheduler == "all" \
        else [args.scheduler]
    print(f"{args.arms} arms, {args.completions} completions/step, sample({args.sample}), "
          f"{args.steps} timed steps, offline")
    print(f"{'scheduler':<18} {'advantages':<11} {'median us':>10} {'p99 us':>10} {'max us':>10}")
    for name in names:
        for case in CASES:
            t = run(name, args.arms, args.completions, args.sample, args.steps, args.warmup, args.group, case)
            t.sort()
            p99 = t[min(len(t) - 1, int(0.99 * len(t)))]
            print(f"{name:<18} {case:<11} {statistics.median(t):>10.1f} {p99:>10.1f} {t[-1]:>10.1f}")
    print("targets (dump): median <= 250 us, p99 <= 1000 us")


if __name__ == "__main__":
    main()
