"""A curriculum simulation without a model: arms whose accuracy grows with the practice they get.

Each arm j has a difficulty; its pass rate after n_j completions is a logistic curve in n_j (an arm
already solved starts near 1, an unlearnable one stays near 0). Rewards are Bernoulli draws, grouped
G per prompt, and the agent gets GRPO advantages from the groups, exactly as in a real loop. This is
for seeing schedulers and overrides behave in a second; the real GRPO demo is `trainer_agent.demo`.

    python -m trainer_agent.simulate --scheduler dump --steps 200
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from .agent import CurriculumAgent
from .schedulers import available_schedulers


@dataclass(frozen=True)
class SimArm:
    name: str
    start: float  # pass rate before any practice
    midpoint: float  # completions of practice at which the pass rate is halfway to `ceiling`
    ceiling: float = 1.0


DEFAULT_ARMS = (
    SimArm("copy2", 0.97, 1.0),
    SimArm("add2", 0.15, 3_000),
    SimArm("add3", 0.05, 8_000),
    SimArm("rev6", 0.10, 5_000),
    SimArm("sort8", 0.02, 12_000),
    SimArm("add8", 0.0, 1e9, ceiling=0.0),
)


def pass_rate(arm: SimArm, n: float) -> float:
    learned = 1.0 / (1.0 + math.exp(-(n - arm.midpoint) / (0.25 * arm.midpoint + 1e-9)))
    return arm.start + (arm.ceiling - arm.start) * learned if arm.ceiling > arm.start else arm.start


def simulate(agent: CurriculumAgent, arms: Sequence[SimArm], steps: int, prompts: int, group: int,
             seed: int, every: int, out: TextIO = sys.stdout) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    by_name = {a.name: a for a in arms}
    practice = dict.fromkeys(by_name, 0.0)
    header = f"{'step':>5} " + " ".join(f"{a.name:>8}" for a in arms)
    print("sampling probabilities (and pass rate) per arm", file=out)
    print(header, file=out)
    for step in range(steps):
        chosen = agent.sample(prompts)
        comp_arms = [a for a in chosen for _ in range(group)]
        rates = np.array([pass_rate(by_name[a], practice[a]) for a in comp_arms])
        rewards = (rng.random(rates.size) < rates).astype(np.float64)
        agent.observe(comp_arms, rewards, groups=np.repeat(np.arange(prompts), group))
        for a in chosen:
            practice[a] += group
        agent.end_step(metrics={"reward_mean": float(rewards.mean())})
        if step % every == 0 or step == steps - 1:
            p = agent.probabilities()
            row = " ".join(f"{p[a.name]:>8.3f}" for a in arms)
            print(f"{step:>5} {row}", file=out)
    final = {a.name: pass_rate(a, practice[a.name]) for a in arms}
    print(f"{'pass':>5} " + " ".join(f"{final[a.name]:>8.2f}" for a in arms), file=out)
    return final


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer_agent.simulate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scheduler", default="dump", choices=available_schedulers())
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--prompts", type=int, default=64, help="prompts per step")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=20, help="print a row every N steps")
    ap.add_argument("--redis-url", default=None, help="stream to this Redis (default: offline)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.prompts < 1 or args.group < 1 or args.every < 1:
        ap.error("--steps, --prompts, --group and --every must be >= 1")
    arms = DEFAULT_ARMS
    with CurriculumAgent(f"simulate-{args.scheduler}", [a.name for a in arms], scheduler=args.scheduler,
                         redis_url=args.redis_url, seed=args.seed, config=vars(args)) as agent:
        simulate(agent, arms, args.steps, args.prompts, args.group, args.seed, args.every)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
