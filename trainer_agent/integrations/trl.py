"""TRL adapter: `CurriculumGRPOTrainer`, a `trl.GRPOTrainer` whose prompts follow a `CurriculumAgent`.

Adopting it changes two lines of a TRL GRPO script (the dataset needs a column naming each
prompt's arm, `data_source` by default, and keeps it: `remove_unused_columns=False`, TRL's default)::

    from trainer_agent import CurriculumAgent
    from trainer_agent.integrations.trl import CurriculumGRPOTrainer

    agent = CurriculumAgent(run="qwen-kk-dump", arms=sorted(set(dataset["data_source"])),
                            scheduler="dump", redis_url="redis://localhost:6379/0")
    trainer = CurriculumGRPOTrainer(model=model, reward_funcs=reward_fn, args=GRPOConfig(...),
                                    train_dataset=dataset, agent=agent)  # instead of GRPOTrainer(...)
    trainer.train()
    agent.close()

What it changes, and why (written against TRL 1.16, `trl/trainer/grpo_trainer.py`):

- `_get_train_sampler` returns a `CurriculumRepeatSampler`: TRL's `RepeatSampler` layout (each
  prompt `num_generations` times in a row, each chunk of `generation_batch_size // num_generations`
  prompts repeated `num_iterations * steps_per_generation` times, so groups stay whole and buffered
  generations are reused) with each chunk's prompts drawn from the agent's probabilities at the
  moment the chunk is drawn. The seed is `args.seed`, the same on every process, as TRL requires:
  every rank must draw the same indices, and the agent gives every rank the same probabilities.
- `_generate_and_score_completions` (training only) hands the agent, per completion of this
  process, its arm (the dataset column), its reward (the weighted sum of the reward functions, as
  TRL logs it) and its advantage (exactly what TRL trains on), then calls `agent.end_step` once per
  generation batch, with TRL's generation metrics of that batch.

When a change takes effect: TRL's dataloader is wrapped by accelerate's `DataLoaderShard`, which
fetches one batch ahead, and the Trainer fetches a whole optimizer step's batches at its start.
With TRL's defaults (`steps_per_generation == gradient_accumulation_steps`, `num_iterations=1`) the
chunk of generation batch g+1 is therefore drawn before generation g is scored, so the sampler
alone would make probabilities decided at the end of generation g shape generation g+2. To make
them shape generation g+1, as a curriculum should, the trainer re-draws each generation batch's
prompts when it is about to generate (`rebind_prompts=True`, the default): the same layout, the
same draw on every process (a seed they share), each process taking its own contiguous share as
accelerate would have given it. The sampler's own draws then only pace the dataloader.

Checkpoints: when the Trainer saves a checkpoint, the agent's `state_dict()` is written next to it
(`curriculum_agent.json`, by the process that saves, if it is the agent's rank 0), and
`trainer.train(resume_from_checkpoint=...)` loads it back into the agent before training resumes
(rank 0 reads it and, in a multi-rank run, broadcasts it), as TRL does with its own
`entropy_ctrl_state.json`: the agent numbers its steps on from the checkpoint's (so the server, which
keeps the first write of each step, drops nothing), and the scheduler's statistics, overrides and
sampling state continue from there. A checkpoint without the file (saved by another trainer) is
resumed with a warning and the agent as it was built: give it `start_step` then. The seeded streams
that pick rows within an arm start afresh on resume (the re-draw stream is seeded with the agent's
step, so a resumed job does not repeat the prompts drawn at the start of the run).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch.utils.data import IterableDataset, Sampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.trainer.grpo_config import GRPOConfig
from trl.trainer.grpo_trainer import GRPOTrainer

from ..agent import CurriculumAgent
from ..errors import ConfigError
from ..pass_rates import check_within_arm
from ..run_status import status_of
from ..step_stats import StepStats
from ._columns import dataset_arms

__all__ = ["AGENT_STATE_NAME", "CurriculumGRPOTrainer", "CurriculumRepeatSampler"]

log = logging.getLogger("trainer_agent.trl")

AGENT_STATE_NAME = "curriculum_agent.json"
"""File of the agent's `state_dict()` in each checkpoint directory."""


class CurriculumRepeatSampler(Sampler[int]):
    """TRL's `RepeatSampler` index layout, with each chunk's prompts drawn by the curriculum.

    Same arguments, length and order as `trl.trainer.utils.RepeatSampler` except the source of the
    chunk: instead of a slice of one permutation of the dataset, the `batch_size` prompts of a new
    chunk are drawn, one arm per prompt, from `agent.probabilities()` when the chunk's first index
    is pulled (see `ArmSampler`: within an arm, a seeded permutation reshuffled when exhausted, so a
    chunk can hold a prompt twice when its arm has fewer prompts than the chunk draws from it).
    An epoch has as many chunks as `RepeatSampler` would yield, so TRL's step arithmetic holds.

    Args:
        agent: the curriculum agent whose probabilities are followed.
        dataset_arms: the arm of each dataset row, indexed like the dataset.
        mini_repeat_count: times each index is repeated in a row (TRL: `num_generations`).
        batch_size: distinct prompts per chunk (TRL: `generation_batch_size // num_generations`).
        repeat_count: times each chunk is repeated (TRL: `num_iterations * steps_per_generation`).
        seed: seed of the draws; must be the same on every process.
    """

    def __init__(self, agent: CurriculumAgent, dataset_arms: Sequence[str], mini_repeat_count: int,
                 batch_size: int = 1, repeat_count: int = 1, seed: int = 0) -> None:
        for name, v in (("mini_repeat_count", mini_repeat_count), ("batch_size", batch_size),
                        ("repeat_count", repeat_count)):
            if int(v) < 1:
                raise ConfigError(f"{name} must be >= 1, got {v!r}")
        self.mini_repeat_count = int(mini_repeat_count)
        self.batch_size = int(batch_size)
        self.repeat_count = int(repeat_count)
        self.num_chunks = len(dataset_arms) // self.batch_size
        if self.num_chunks == 0:
            raise ConfigError(f"the dataset has {len(dataset_arms)} rows, fewer than one generation batch "
                              f"of {self.batch_size} prompts")
        self._prompts = agent.sampler(dataset_arms, group_size=1, prompts_per_chunk=self.batch_size,
                                      num_samples=self.num_chunks * self.batch_size, seed=seed)
        self.chunks_drawn = 0
        """Chunks drawn since construction (all epochs): tells when a draw happened relative to a step."""
        self.draw_time_s = 0.0
        """Seconds spent drawing chunks (reading the agent's probabilities included)."""

    def set_epoch(self, epoch: int) -> None:
        """Reseed for `epoch`; accelerate's `DataLoaderShard.set_epoch` forwards it here."""
        self._prompts.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_chunks * self.batch_size * self.mini_repeat_count * self.repeat_count

    def __iter__(self) -> Iterator[int]:
        # ArmSampler draws lazily, one prompt per pull, so slicing one chunk off it draws exactly
        # that chunk now, with the probabilities in force now, and nothing of the next one.
        prompts = iter(self._prompts)
        for _ in range(self.num_chunks):
            t0 = time.perf_counter()
            chunk = list(itertools.islice(prompts, self.batch_size))
            self.draw_time_s += time.perf_counter() - t0
            self.chunks_drawn += 1
            for _ in range(self.repeat_count):
                for index in chunk:
                    for _ in range(self.mini_repeat_count):
                        yield index


class CurriculumGRPOTrainer(GRPOTrainer):
    """`trl.GRPOTrainer` whose training prompts are drawn by a `CurriculumAgent`, which it feeds.

    Args:
        *args: passed to `GRPOTrainer`.
        agent: the curriculum agent; the trainer observes into it and ends one agent step per
            generation batch; the caller closes it after a clean `train()` (a `train()` that raises
            closes it as interrupted or failed).
        arm_column: dataset column holding each prompt's arm.
        sampler_seed: seed of the prompt draws (default `args.seed`); must match on every process.
        rebind_prompts: re-draw each generation batch's prompts just before generating, so the
            probabilities of the last agent step apply to the very next generation despite the
            dataloader's look-ahead (see the module docstring).
        within_arm: how the re-draw picks a prompt within an arm: "uniform", or "pass_rate" (prompts
            whose pass rate is near 0.5, learnt from the trainer's own groups: the trainer then passes
            each completion's dataset row to `agent.observe(prompts=...)`, which also gives the run page
            each arm's pass-rate profile). "pass_rate" needs `rebind_prompts=True`; with several
            processes each learns from its own groups.
        **kwargs: passed to `GRPOTrainer`.

    Attributes:
        curriculum_agent: the agent.
        curriculum_sampler: the sampler of the current training dataloader (None before `train()`).
        curriculum_stats: what the agent's last `end_step` returned (None before the first).

    Example:
        >>> trainer = CurriculumGRPOTrainer(model=model, reward_funcs=reward_fn, args=args,  # doctest: +SKIP
        ...                                 train_dataset=dataset, agent=agent)
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(self, *args: Any, agent: CurriculumAgent, arm_column: str = "data_source",
                 sampler_seed: int | None = None, rebind_prompts: bool = True, within_arm: str = "uniform",
                 **kwargs: Any) -> None:
        if not isinstance(agent, CurriculumAgent):
            raise ConfigError(f"agent must be a CurriculumAgent, got {type(agent).__name__}")
        check_within_arm(within_arm)
        if within_arm != "uniform" and not rebind_prompts:
            raise ConfigError(f"within_arm={within_arm!r} needs rebind_prompts=True (the trainer must know "
                              "each prompt's dataset row)")
        self.within_arm = within_arm
        self._rows: list[int] | None = None  # dataset row of each input of the batch being generated
        self.curriculum_agent = agent
        self.arm_column = arm_column
        self.sampler_seed = sampler_seed
        self.rebind_prompts = rebind_prompts
        self._rebind_draws: Iterator[int] | None = None
        self._train_arms: list[str] | None = None
        self.curriculum_sampler: CurriculumRepeatSampler | None = None
        self.curriculum_stats: StepStats | None = None
        self._agent_time_s = 0.0
        self._rewards_per_func: torch.Tensor | None = None
        self._eval_tally: dict[str, list[int]] | None = None  # arm -> [correct, total] during evaluate()
        super().__init__(*args, **kwargs)
        if isinstance(self.train_dataset, IterableDataset):
            # TRL bypasses the sampler for iterable datasets (it reorders the stream instead), so a
            # curriculum cannot choose what comes next.
            raise ConfigError("CurriculumGRPOTrainer needs a map-style train_dataset, not an IterableDataset")
        if self.train_dataset is not None:
            # Fail at construction, not at the first step, when the arm column is missing or unknown.
            self._train_arms = list(dataset_arms(self.train_dataset, arm_column))
            self._check_arms(self._train_arms)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """`GRPOTrainer.train`; when training ends with Ctrl-C, SIGTERM or an error, the agent's run
        ends too, as `interrupted` or `failed` (a clean end leaves the agent open for the caller)."""
        try:
            return super().train(*args, **kwargs)
        except BaseException as e:
            self.curriculum_agent.close(status_of(type(e), e))
            raise

    @property
    def curriculum_time_s(self) -> float:
        """Seconds spent in agent calls for this trainer: observe/end_step plus the sampler's draws."""
        drawn = self.curriculum_sampler.draw_time_s if self.curriculum_sampler is not None else 0.0
        return self._agent_time_s + drawn

    def _check_arms(self, arms: Sequence[str]) -> None:
        unknown = sorted(set(arms) - set(self.curriculum_agent.arms))
        if unknown:
            raise ConfigError(f"the dataset's {self.arm_column!r} column names arms the agent does not know: "
                              f"{', '.join(unknown[:10])}")

    def _get_train_sampler(self, dataset: Any = None) -> CurriculumRepeatSampler:
        if dataset is None:
            dataset = self.train_dataset
        args = cast(GRPOConfig, self.args)
        # GRPOConfig.__post_init__ fills these in; None here means a TRL this adapter does not know.
        g, gen_batch, spg = self.num_generations, args.generation_batch_size, args.steps_per_generation
        if g is None or gen_batch is None or spg is None:
            raise ConfigError("num_generations, generation_batch_size and steps_per_generation must be resolved")
        # The same arguments TRL's own _get_train_sampler gives RepeatSampler.
        self.curriculum_sampler = CurriculumRepeatSampler(
            self.curriculum_agent,
            dataset_arms(dataset, self.arm_column),
            mini_repeat_count=g,
            batch_size=gen_batch // g,
            repeat_count=self.num_iterations * spg,
            seed=args.seed if self.sampler_seed is None else self.sampler_seed,
        )
        return self.curriculum_sampler

    def _calculate_rewards(self, inputs: Any, prompts: Any, completions: Any, completion_ids_list: Any) -> Any:
        # TRL returns the rewards of every process's completions (gathered, one column per reward
        # function) and keeps only the advantages of this process; keep them to slice out ours.
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func
        return rewards_per_func

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None,
                 metric_key_prefix: str = "eval") -> dict[str, float]:
        """`GRPOTrainer.evaluate`, and when the eval rows carry the arm column, each arm's accuracy
        (share of completions with reward above the agent's threshold) sent with `agent.log_eval`,
        named after `metric_key_prefix` ("eval", or "eval_<name>" for a dict of eval datasets)."""
        self._eval_tally = {}
        try:
            result: dict[str, float] = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            tally, self._eval_tally = self._eval_tally, None
            if tally is not None:
                self._log_arm_eval(tally, metric_key_prefix)
        finally:
            self._eval_tally = None
        return result

    def _log_arm_eval(self, tally: dict[str, list[int]], prefix: str) -> None:
        # Every process scored its own slice of the eval set: sum the counts over processes (in a
        # fixed arm order, the same everywhere: arms unknown to a process count 0 there).
        arms = sorted(set(self.curriculum_agent.arms) | set(tally))
        counts = torch.tensor([tally.get(a, [0, 0]) for a in arms], dtype=torch.long,
                              device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        results = {a: (int(c), int(t)) for a, (c, t) in zip(arms, counts.tolist(), strict=True) if t > 0}
        if results and self.curriculum_agent.rank == 0:
            name = prefix.removeprefix("eval_") if prefix != "eval" else "eval"
            self.curriculum_agent.log_eval(results, name=name, step=int(self.state.global_step))

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if self.model is None or not self.model.training:
            # Evaluation: not part of the curriculum's steps; tallied per arm for `evaluate`.
            output: dict[str, Any] = super()._generate_and_score_completions(inputs)
            if self._eval_tally is not None and inputs and self.arm_column in inputs[0]:
                scores = self._local_rewards(len(inputs)).tolist()
                threshold = self.curriculum_agent.threshold
                for row, r in zip(inputs, scores, strict=True):
                    counts = self._eval_tally.setdefault(str(row[self.arm_column]), [0, 0])
                    counts[0] += int(r > threshold)  # NaN (no reward) counts as not correct
                    counts[1] += 1
            return output
        if self.rebind_prompts:
            inputs = self._rebind(inputs)
        try:
            arms = [row[self.arm_column] for row in inputs]
        except KeyError as e:
            raise ConfigError(f"training rows carry no {self.arm_column!r} column; keep it with "
                              "GRPOConfig(remove_unused_columns=False)") from e
        metrics = self._metrics["train"]
        seen = {k: len(v) for k, v in metrics.items()}
        self._rewards_per_func = None
        output = super()._generate_and_score_completions(inputs)
        t0 = time.perf_counter()
        try:
            rewards = self._local_rewards(len(inputs))
            if self.within_arm == "uniform":
                self.curriculum_agent.observe(arms, rewards, advantages=output["advantages"])
            else:  # each completion's dataset row: the agent's per-prompt pass rates
                self.curriculum_agent.observe(arms, rewards, advantages=output["advantages"], prompts=self._rows)
            step_metrics: dict[str, float] = {"global_step": float(self.state.global_step)}
            for k, values in metrics.items():
                new = values[seen.get(k, 0):]
                if new:
                    step_metrics[k] = math.fsum(new) / len(new)
            self.curriculum_stats = self.curriculum_agent.end_step(metrics=step_metrics)
        finally:
            self._agent_time_s += time.perf_counter() - t0
        return output

    def _rebind(self, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """This process's rows of a generation batch drawn now, with the probabilities now in force."""
        g = self.num_generations
        self._rows = None
        if self.train_dataset is None or self._train_arms is None or not g or len(inputs) % g:
            return inputs
        t0 = time.perf_counter()
        if self._rebind_draws is None:
            args = cast(GRPOConfig, self.args)
            seed = args.seed if self.sampler_seed is None else self.sampler_seed
            # A stream of its own (seed offset), identical on every process.
            draws = self.curriculum_agent.sampler(self._train_arms, group_size=1, num_samples=2**62,
                                                  seed=seed + 7919, within_arm=self.within_arm)
            # The agent's step is 0 in a new run and the checkpoint's on resume, the same on every
            # process: a resumed job draws a stream of its own rather than the run's first prompts.
            draws.set_epoch(self.curriculum_agent.step)
            self._rebind_draws = iter(draws)
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        n = len(inputs)
        prompts = list(itertools.islice(self._rebind_draws, n * world // g))
        rows = [i for i in prompts for _ in range(g)][rank * n:(rank + 1) * n]
        self._rows = rows
        dataset = self.train_dataset
        out = [dict(dataset[i]) for i in rows]
        self._agent_time_s += time.perf_counter() - t0
        return out

    # -- checkpoints ---------------------------------------------------------------------------
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)  # type: ignore[no-untyped-call]
        if self.args.should_save and self.curriculum_agent.rank == 0:
            folder = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self._save_curriculum_state(os.path.join(self._get_output_dir(trial=trial), folder))

    def _save_curriculum_state(self, output_dir: str) -> None:
        payload = json.dumps(self.curriculum_agent.state_dict(), allow_nan=False)
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, AGENT_STATE_NAME)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(payload)
        os.replace(tmp, path)  # a crash mid-write leaves no half file to resume from

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        # The Trainer calls this on every process when, and only when, it resumes from a checkpoint.
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[no-untyped-call]
        if checkpoint is not None:
            self._load_curriculum_state(checkpoint)

    def _load_curriculum_state(self, checkpoint: str) -> None:
        agent = self.curriculum_agent
        path = os.path.join(checkpoint, AGENT_STATE_NAME)
        state: Any = None
        error: str | None = None
        if agent.rank == 0:
            try:
                with open(path, encoding="utf-8") as f:
                    state = json.load(f)
            except FileNotFoundError:
                state = None
            except (OSError, ValueError) as e:
                error = f"cannot read the curriculum state {path}: {e}"
        dist = agent._dist
        if dist is not None:  # every rank takes rank 0's state (or its failure), so all agree
            state, error = dist.broadcast_from_main((state, error))
        if error is not None:
            raise ConfigError(error)
        if state is None:
            log.warning("checkpoint %s holds no %s (saved by another trainer?): the curriculum agent goes on "
                        "from step %d as built, and the server keeps the steps it already has; build the agent "
                        "with start_step=<the run's next step> to number after them", checkpoint,
                        AGENT_STATE_NAME, agent.step)
            return
        agent.load_state_dict(state)
        log.info("curriculum agent resumed from %s at step %d", path, agent.step)

    def _local_rewards(self, n_local: int) -> torch.Tensor:
        """Per-completion reward of this process's completions, as TRL computes its logged reward."""
        rpf = self._rewards_per_func
        if rpf is None:
            raise RuntimeError("TRL scored completions without _calculate_rewards; this TRL version is not supported")
        rewards = (rpf * self.reward_weights.to(rpf.device).unsqueeze(0)).nansum(dim=1)
        # A completion every reward function declined (None) has no reward: NaN, which the agent
        # counts as invalid rather than as a 0 that would bias its arm's statistics.
        rewards[torch.isnan(rpf).all(dim=1)] = torch.nan
        start = self.accelerator.process_index * n_local
        return rewards[start:start + n_local]
