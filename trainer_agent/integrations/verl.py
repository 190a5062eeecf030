"""verl adapters: a curriculum sampler (verl <= 0.7) and a curriculum dataset (verl 0.7 to 0.9).

verl drives training from one controller process, which owns the dataloader, so one agent there
sees every completion and no cross-process reduction is needed. Both adapters build that agent
from a `data.curriculum` section of verl's config, read each step's `DataProto` (arm from
`non_tensor_batch["data_source"]`, reward = sum of `token_level_scores` over `response_mask`,
advantage = masked mean of `advantages`, which GRPO makes constant over a response), call
`observe` and `end_step`, and choose the next prompts by the agent's probabilities.

verl <= 0.7 (`RayPPOTrainer.fit` calls `train_dataloader.sampler.update(batch)` after each step)::

    python -m verl.trainer.main_ppo ... data.dataloader_num_workers=0 \\
        data.sampler.class_path=pkg://trainer_agent.integrations.verl data.sampler.class_name=CurriculumSampler \\
        +data.curriculum.run=kk-dump-0 +data.curriculum.scheduler=dump \\
        +data.curriculum.redis_url=redis://localhost:6379/0

verl >= 0.8 removed the sampler hook; `fit` still calls `train_dataset.on_batch_end(batch)` after each
step (verl 0.7.1, 0.8.0 and 0.9.1 `verl/trainer/ppo/ray_trainer.py`), so the curriculum lives in the
dataset: `CurriculumRLHFDataset` is verl's `RLHFDataset` whose `__getitem__` ignores the index
verl's RandomSampler gives and returns the next prompt the curriculum draws::

    python -m verl.trainer.main_ppo ... data.dataloader_num_workers=0 \\
        data.custom_cls.path=pkg://trainer_agent.integrations.verl data.custom_cls.name=CurriculumRLHFDataset \\
        +data.curriculum.run=kk-dump-0 +data.curriculum.scheduler=dump \\
        +data.curriculum.redis_url=redis://localhost:6379/0

`data.curriculum` keys: `run` (required), `scheduler` (default `uniform`), `scheduler_params`,
`redis_url` (default None: local only), `seed` (default `data.seed`, else 0), `project`,
`threshold`, `arm_key` (default `data_source`), `arms` (default: the arms found in the training
data, sorted), `config` (free-form run metadata). `dataloader_num_workers` must be 0: worker
processes would prefetch batches drawn before the agent's last update (verl asserts the same for its
own curriculum samplers). Both adapters pick the next batch's prompts after the previous step's
`end_step`, so a pin applied at step g shapes step g+1. The agent is closed at interpreter exit.

Validation: verl's per-data-source validation accuracies reach the run page as an evaluation when
the trainer is wrapped with `attach_validation(trainer, agent)` (a script that builds its own
`RayPPOTrainer`), or when whatever receives `_validate()`'s metrics calls `forward_validation`.
verl's stock `main_ppo` builds the trainer inside its Ray task runner and offers no hook for this.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler
from verl import DataProto
from verl.utils.dataset.rl_dataset import RLHFDataset

from ..agent import CurriculumAgent
from ..errors import ConfigError
from ..step_stats import StepStats
from ._columns import dataset_arms

try:
    from verl.experimental.dataset.sampler import AbstractCurriculumSampler

    _HAS_SAMPLER_HOOK = True
except ImportError:  # verl >= 0.8 has no curriculum-sampler hook; CurriculumSampler refuses to start.
    AbstractCurriculumSampler = Sampler  # type: ignore[misc,assignment]
    _HAS_SAMPLER_HOOK = False

__all__ = [
    "CurriculumRLHFDataset",
    "CurriculumSampler",
    "agent_from_config",
    "attach_validation",
    "forward_validation",
    "observe_batch",
]

log = logging.getLogger("trainer_agent")

_KEYS = {"run", "scheduler", "scheduler_params", "redis_url", "seed", "project", "threshold", "arm_key", "arms",
         "config"}


def _section(data_config: Any) -> dict[str, Any]:
    """`data.curriculum` as a plain dict (OmegaConf containers resolved)."""
    raw = data_config.get("curriculum") if hasattr(data_config, "get") else None
    if raw is None:
        raise ConfigError("verl's data config has no `curriculum` section; add +data.curriculum.run=<name> "
                          "(and scheduler, redis_url, ...)")
    if not isinstance(raw, Mapping):
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(raw, resolve=True)
    if not isinstance(raw, Mapping):
        raise ConfigError("data.curriculum must be a mapping of settings")
    section = {str(k): v for k, v in raw.items()}
    unknown = sorted(set(section) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown data.curriculum keys: {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    if not section.get("run"):
        raise ConfigError("data.curriculum.run is required (the run's name in Steerboard)")
    return section


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    from omegaconf import OmegaConf

    return OmegaConf.to_container(value, resolve=True)


def agent_from_config(data_config: Any, dataset_arm_names: Sequence[str]) -> CurriculumAgent:
    """Build the agent that `data.curriculum` describes; arms default to those in the data.

    Args:
        data_config: verl's `config.data` (an OmegaConf DictConfig or a mapping).
        dataset_arm_names: the arm of each training row.
    """
    s = _section(data_config)
    arms = _plain(s.get("arms")) or sorted(set(dataset_arm_names))
    seed = s.get("seed", data_config.get("seed") if hasattr(data_config, "get") else None)
    kwargs: dict[str, Any] = {}
    for key in ("project", "threshold"):
        if s.get(key) is not None:
            kwargs[key] = s[key]
    agent = CurriculumAgent(
        run=str(s["run"]), arms=arms, scheduler=str(s.get("scheduler") or "uniform"),
        scheduler_params=_plain(s.get("scheduler_params")), redis_url=s.get("redis_url"),
        seed=0 if seed is None else int(seed), config=_plain(s.get("config")), **kwargs,
    )
    # verl has no end-of-training hook for a sampler or dataset: the agent's transport sends run_end
    # at interpreter exit, with the status of how the process ended (trainer_agent.run_status).
    return agent


def observe_batch(agent: CurriculumAgent, batch: DataProto, arm_key: str = "data_source") -> StepStats:
    """Hand one verl training step's completions to the agent and end its step.

    Args:
        agent: the curriculum agent.
        batch: the step's `DataProto` after advantages are computed (what verl passes to
            `sampler.update` and `dataset.on_batch_end`).
        arm_key: the `non_tensor_batch` key naming each completion's arm.

    Returns:
        The agent's statistics of the step.
    """
    try:
        arms = batch.non_tensor_batch[arm_key]
        td = batch.batch
        mask = td["response_mask"].to(torch.float64)
        scores = td["token_level_scores"].to(torch.float64)
        adv = td["advantages"].to(torch.float64)
    except KeyError as e:
        raise ConfigError(f"verl's batch lacks {e.args[0]!r}; the curriculum needs {arm_key!r}, "
                          "token_level_scores, advantages and response_mask") from e
    rewards = (scores * mask).sum(dim=-1)
    # The masked mean of a constant-per-response advantage is that constant. An empty response
    # gives 0/0 = NaN: the agent drops it and counts it as invalid rather than guessing a value.
    advantages = (adv * mask).sum(dim=-1) / mask.sum(dim=-1)
    agent.observe(arms, rewards, advantages=advantages)
    step = (batch.meta_info or {}).get("global_steps")
    return agent.end_step(metrics=None if step is None else {"global_steps": step})


def forward_validation(agent: CurriculumAgent, metrics: Mapping[str, Any], step: int, name: str = "val"
                       ) -> dict[str, float]:
    """Send verl's per-data-source validation results to Steerboard as an evaluation.

    verl's `_validate` returns `val-core/<data_source>/<var>/mean@<N>` (var `acc` when the reward
    function reports one, else `reward`) for each data source. Those in [0, 1] become the arm
    accuracies of `agent.log_eval(..., name=name, step=step)`; a reward outside [0, 1] is not an
    accuracy and is left out, with a log line.

    Args:
        agent: the curriculum agent (the sampler's or the dataset's `.agent`).
        metrics: what `RayPPOTrainer._validate()` returned.
        step: the trainer's `global_steps`.
        name: the evaluation's name.

    Returns:
        arm -> accuracy, as sent (empty when nothing fit).
    """
    best: dict[str, tuple[int, float]] = {}  # data source -> (N of mean@N, value); the largest N wins
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) != 4 or parts[0] != "val-core" or parts[2] not in ("acc", "reward"):
            continue
        metric = parts[3]
        if not metric.startswith("mean@") or not metric[5:].isdigit():
            continue
        source, n = parts[1], int(metric[5:])
        if source not in best or n > best[source][0]:
            best[source] = (n, float(value))
    results = {}
    for source, (_, value) in best.items():
        if 0.0 <= value <= 1.0:
            results[source] = value
        else:
            log.warning("verl validation of %r: %g is not an accuracy in [0, 1]; not sent", source, value)
    return agent.log_eval(results, name=name, step=int(step)) if results else {}


def attach_validation(trainer: Any, agent: CurriculumAgent, name: str = "val") -> None:
    """Make `trainer` (a verl `RayPPOTrainer`) forward every validation to `agent` (see
    `forward_validation`). Call it once after building the trainer, before `trainer.fit()`."""
    validate = trainer._validate

    def _validate(*args: Any, **kwargs: Any) -> Any:
        metrics = validate(*args, **kwargs)
        if metrics:
            forward_validation(agent, metrics, int(getattr(trainer, "global_steps", 0)), name)
        return metrics

    trainer._validate = _validate


def _check_workers(data_config: Any) -> None:
    workers = data_config.get("dataloader_num_workers", 8) if hasattr(data_config, "get") else 0
    if workers != 0:
        raise ConfigError(f"the curriculum needs data.dataloader_num_workers=0 (got {workers}): worker processes "
                          "prefetch prompts drawn before the agent's last update")


class CurriculumSampler(AbstractCurriculumSampler):
    """verl <= 0.7 curriculum sampler (`data.sampler.class_path`/`class_name`) driven by a `CurriculumAgent`.

    Yields prompt indices (verl repeats each prompt `rollout.n` times itself), each drawn from the
    agent's probabilities at the moment it is pulled; `update(batch)` feeds the agent the step's
    completions and ends its step.

    Args:
        data_source: the training dataset (verl's `RLHFDataset`, or any map-style dataset of rows
            holding the arm key).
        data_config: verl's `config.data`, with a `curriculum` section.

    Attributes:
        agent: the agent built from `data.curriculum`.
        last_stats: what the agent's last `end_step` returned.
    """

    def __init__(self, data_source: Any, data_config: Any) -> None:
        if not _HAS_SAMPLER_HOOK:
            raise ConfigError("this verl has no curriculum-sampler hook (removed in 0.8); use "
                              "data.custom_cls.name=CurriculumRLHFDataset instead")
        _check_workers(data_config)
        section = _section(data_config)
        self.arm_key = str(section.get("arm_key") or "data_source")
        frame = getattr(data_source, "dataframe", data_source)
        arms = dataset_arms(frame, self.arm_key)
        self.agent = agent_from_config(data_config, arms)
        self.last_stats: StepStats | None = None
        self._sampler = self.agent.sampler(arms, group_size=1)

    def __iter__(self) -> Iterator[int]:
        return iter(self._sampler)

    def __len__(self) -> int:
        return len(self._sampler)

    def set_epoch(self, epoch: int) -> None:
        """Reseed for `epoch`."""
        self._sampler.set_epoch(epoch)

    def update(self, batch: DataProto) -> None:
        """Feed the agent one step's completions (verl calls this after every training step)."""
        self.last_stats = observe_batch(self.agent, batch, self.arm_key)


class CurriculumRLHFDataset(RLHFDataset):
    """verl's `RLHFDataset` whose training prompts are drawn by a `CurriculumAgent` (verl 0.7 to 0.9).

    Used as `data.custom_cls`. verl builds its validation set with the same class; only the
    instance whose files are `data.train_files` follows the curriculum (and owns the agent): the
    other serves rows by index, as `RLHFDataset` does. In the training instance, `__getitem__`
    ignores the index it is given (verl's RandomSampler still runs, only its order is unused) and
    returns the next prompt the curriculum draws; `on_batch_end(batch)` feeds the agent.

    Args:
        data_files: parquet file(s), as for `RLHFDataset`.
        tokenizer: as for `RLHFDataset`.
        config: verl's `config.data`, with a `curriculum` section.
        processor: as for `RLHFDataset`.
        max_samples: as for `RLHFDataset`.

    Attributes:
        agent: the agent (None in a validation instance).
        last_stats: what the agent's last `end_step` returned.
    """

    def __init__(self, data_files: str | Sequence[str], tokenizer: Any, config: Any, processor: Any = None,
                 max_samples: int = -1) -> None:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        train_files = config.get("train_files") if hasattr(config, "get") else None
        if isinstance(train_files, str):
            train_files = [train_files]
        self.is_curriculum = train_files is not None and files == list(train_files)
        super().__init__(data_files=data_files if isinstance(data_files, str) else files, tokenizer=tokenizer,
                         config=config, processor=processor, max_samples=max_samples)
        self.agent: CurriculumAgent | None = None
        self.last_stats: StepStats | None = None
        self._draws: Iterator[int] | None = None
        if not self.is_curriculum:
            return
        _check_workers(config)
        section = _section(config)
        self.arm_key = str(section.get("arm_key") or "data_source")
        arms = dataset_arms(self.dataframe, self.arm_key)
        self.agent = agent_from_config(config, arms)
        # An endless stream: verl's epochs stay as long as the dataset, the curriculum just picks.
        self._draws = iter(self.agent.sampler(arms, group_size=1, num_samples=2**62))

    def __getitem__(self, item: int) -> dict[str, Any]:
        if self._draws is not None:
            item = next(self._draws)
        row: dict[str, Any] = super().__getitem__(item)  # type: ignore[no-untyped-call]
        return row

    def on_batch_end(self, batch: DataProto) -> None:
        """Feed the agent one step's completions (verl calls this after every training step)."""
        if self.agent is not None:
            self.last_stats = observe_batch(self.agent, batch, self.arm_key)

    def __getstate__(self) -> dict[str, Any]:
        # verl pickles datasets for checkpoints and workers; the live agent (threads, sockets) and
        # the draw generator stay with the controller.
        # RLHFDataset.__getstate__ returns None when it serialises the dataset: then take all.
        base: dict[str, Any] | None = super().__getstate__()  # type: ignore[no-untyped-call]
        state = dict(self.__dict__ if base is None else base)
        state["agent"] = None
        state["_draws"] = None
        return state

