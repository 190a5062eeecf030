"""The agent's share of a TRL GRPO step's wall time, in the CPU setting of tests/integrations.

Runs TRL's real `GRPOTrainer` (through `CurriculumGRPOTrainer`) with a tiny random model on CPU,
times every optimizer step with a callback, and reads the seconds the trainer spent in agent calls
(`observe`, `end_step`, and the sampler's chunk draws) off `trainer.curriculum_time_s`. The first
`--warmup` steps are left out (allocator and thread-pool warm-up). Prints the share and the
absolute agent time per step.

    .venv/bin/python bench/trl_overhead.py
    .venv/bin/python bench/trl_overhead.py --steps 40 --scheduler sec

A tiny CPU model makes the step short (tens of milliseconds), so this share is an upper bound of
what a real run (seconds to minutes per step) sees: the agent's time per step does not grow with
the model. Target: <= 1%.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import number_options
from transformers import TrainerCallback

from tests.integrations.tiny_grpo import (
    ARMS,
    make_args,
    make_dataset,
    make_model,
    make_tokenizer,
    target_reward,
)
from trainer_agent import CurriculumAgent
from trainer_agent.integrations.trl import CurriculumGRPOTrainer


class StepClock(TrainerCallback):  # type: ignore[misc]
    """Wall time of each optimizer step and the trainer's agent seconds at its end."""

    def __init__(self) -> None:
        self.trainer: CurriculumGRPOTrainer | None = None
        self.t0 = 0.0
        self.steps: list[tuple[float, float]] = []  # (step seconds, cumulative agent seconds)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        assert self.trainer is not None
        self.steps.append((time.perf_counter() - self.t0, self.trainer.curriculum_time_s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    number_options(ap, steps=30, warmup=3)
    ap.add_argument("--scheduler", default="dump")
    ap.add_argument("--arms-per-source", type=int, default=1,
                    help="split each of the 3 task types into this many arms (more arms, same data)")
    a = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)

    dataset = make_dataset(per_arm=64)
    arms = list(ARMS)
    if a.arms_per_source > 1:
        dataset = dataset.map(lambda row, i: {"data_source": f"{row['data_source']}-{i % a.arms_per_source}"},
                              with_indices=True)
        arms = sorted(set(dataset["data_source"]))

    def reward(completions: list[str], data_source: list[str], **kw: Any) -> list[float]:
        return target_reward(completions, [s.split("-")[0] for s in data_source])

    tok = make_tokenizer()
    agent = CurriculumAgent(run="bench-trl", arms=arms, scheduler=a.scheduler, redis_url=None, seed=0)
    clock = StepClock()
    trainer = CurriculumGRPOTrainer(model=make_model(tok), reward_funcs=reward, processing_class=tok,
                                    train_dataset=dataset, args=make_args(max_steps=a.steps, logging_steps=10**6),
                                    callbacks=[clock], agent=agent)
    clock.trainer = trainer
    trainer.train()
    agent.close()

    steps = clock.steps[a.warmup:]
    prev = clock.steps[a.warmup - 1][1] if a.warmup else 0.0
    wall = sum(s for s, _ in steps)
    spent = steps[-1][1] - prev
    n = len(steps)
    print(f"TRL GRPO on CPU, {len(arms)} arms, scheduler {a.scheduler}, {n} steps timed "
          f"({a.warmup} warm-up left out), 16 completions per step")
    print(f"step wall time      {1e3 * wall / n:9.2f} ms/step")
    print(f"agent time          {1e6 * spent / n:9.1f} us/step (observe + end_step + sampler draws)")
    print(f"agent share of step {100 * spent / wall:9.3f} %   (target <= 1%)")


if __name__ == "__main__":
    main()
