"""verl adapters against verl's own classes: RLHFDataset, DataProto, its class loaders and GRPO math.

verl's `RayPPOTrainer.fit` needs Ray workers and a rollout engine, so the step loop below is the part
of `fit` that touches the data, copied in order: iterate the StatefulDataLoader, build a DataProto,
give each prompt a uid and repeat it `rollout.n` times, score, compute GRPO advantages with verl's
`compute_grpo_outcome_advantage`, then call the hook `fit` calls (`sampler.update(batch)` in verl
<= 0.7, `train_dataset.on_batch_end(batch)` in 0.7 to 0.9). Only generation is simulated: random
response lengths and a rule-based 0/1 reward at the last response token.
"""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# Skip only where verl is not installed; an installed verl that fails to import is a failure, not a skip.
if importlib.util.find_spec("verl") is None:
    pytest.skip("verl is not installed (make install puts it in .venv)", allow_module_level=True)
# torchdata 0.11 calls a torch API that torch 2.13 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*set_vital.*:UserWarning")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torchdata.stateful_dataloader import StatefulDataLoader  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage  # noqa: E402
from verl.utils.dataset.rl_dataset import collate_fn, get_dataset_class  # noqa: E402
from verl.utils.import_utils import load_extern_object  # noqa: E402

from trainer_agent.errors import ConfigError  # noqa: E402
from trainer_agent.integrations import verl as sb_verl  # noqa: E402

from .tiny_grpo import ARMS, make_tokenizer  # noqa: E402

N = 4  # rollout.n
PROMPTS = 6  # data.train_batch_size
RESP = 6  # response length
P_CORRECT = {"add": 0.8, "mul": 0.5, "cmp": 0.2}


def _parquet(path: Path, per_arm: int) -> str:
    from datasets import Dataset

    rows = [{"data_source": arm, "prompt": [{"role": "user", "content": f"what is {i} {arm} {i + 1}"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": str(i)},
             "extra_info": {"index": k * per_arm + i}}
            for k, arm in enumerate(ARMS) for i in range(per_arm)]
    Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


def _data_config(tmp_path: Path, run: str, **extra: Any) -> Any:
    train = _parquet(tmp_path / "train.parquet", per_arm=10)
    val = _parquet(tmp_path / "val.parquet", per_arm=2)
    cfg = {
        "train_files": train, "val_files": val, "prompt_key": "prompt", "max_prompt_length": 64,
        "filter_overlong_prompts": False, "return_raw_chat": True, "shuffle": True, "seed": 0,
        "dataloader_num_workers": 0, "train_batch_size": PROMPTS, "cache_dir": str(tmp_path / "cache"),
        "sampler": {"class_path": None, "class_name": None},
        "custom_cls": {"path": None, "name": None},
        "curriculum": {"run": run, "scheduler": "dump", "redis_url": None, "seed": 3},
    }
    cfg.update(extra)
    return OmegaConf.create(cfg)


def _fit_steps(dataloader: StatefulDataLoader, hook: Callable[[DataProto], None], steps: int,
               between: Callable[[int], None]) -> list[DataProto]:
    """The data path of verl's `RayPPOTrainer.fit` for `steps` steps; `between(step)` runs after each."""
    gen = torch.Generator().manual_seed(0)
    seen: list[DataProto] = []
    for step, batch_dict in enumerate(dataloader):
        if step == steps:
            break
        batch = DataProto.from_single_dict(batch_dict)
        batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
        batch = batch.repeat(repeat_times=N, interleave=True)
        bs = len(batch)
        lengths = torch.randint(1, RESP + 1, (bs,), generator=gen)
        mask = (torch.arange(RESP)[None, :] < lengths[:, None]).to(torch.float32)
        p = torch.tensor([P_CORRECT[a] for a in batch.non_tensor_batch["data_source"]])
        reward = (torch.rand(bs, generator=gen) < p).to(torch.float32)
        scores = torch.zeros(bs, RESP)
        scores[torch.arange(bs), lengths - 1] = reward
        adv, _ = compute_grpo_outcome_advantage(token_level_rewards=scores, response_mask=mask,
                                                index=batch.non_tensor_batch["uid"])
        batch.batch["response_mask"] = mask
        batch.batch["token_level_scores"] = scores
        batch.batch["advantages"] = adv
        batch.meta_info["global_steps"] = step + 1
        hook(batch)
        seen.append(batch)
        between(step)
    return seen


def _check_steps(seen: list[DataProto], stats: list[Any], pin_id: str, pin_step: int) -> None:
    assert [s.step for s in stats] == list(range(len(seen)))
    for batch, st in zip(seen, stats, strict=True):
        sources = list(batch.non_tensor_batch["data_source"])
        assert sum(st.n_step.values()) == PROMPTS * N
        assert st.n_step == {a: sources.count(a) for a in ARMS}
        reward = batch.batch["token_level_scores"].sum(-1).numpy()
        for a in ARMS:
            sel = np.array([s == a for s in sources])
            if sel.any():
                assert st.mean_reward[a] == pytest.approx(float(reward[sel].mean()))
                # GRPO advantages are constant over the response: their masked mean is that constant.
                adv = batch.batch["advantages"][torch.from_numpy(sel), 0].numpy()
                assert st.mean_abs_adv[a] == pytest.approx(float(np.abs(adv).mean()), rel=1e-5)
        assert st.metrics["global_steps"] == st.step + 1
        assert st.n_invalid == 0
    # The pin queued after step `pin_step` is applied at the next step's end_step; from then on
    # every batch verl loads comes from the pinned arm (no look-ahead with num_workers=0).
    applied = [(s.step, a.status, a.applied_step) for s in stats for a in s.acks if a.id == pin_id]
    assert applied == [(pin_step + 1, "applied", pin_step + 1)]
    for batch in seen[pin_step + 2:]:
        assert set(batch.non_tensor_batch["data_source"]) == {"mul"}
    assert set().union(*(set(b.non_tensor_batch["data_source"]) for b in seen[:pin_step + 2])) != {"mul"}
    assert len(seen) > pin_step + 2


def test_verl07_curriculum_sampler(tmp_path: Path) -> None:
    """verl <= 0.7 route: data.sampler.class_path loads CurriculumSampler; fit calls sampler.update."""
    hook = pytest.importorskip("verl.experimental.dataset.sampler", reason="verl >= 0.8 has no sampler hook")
    AbstractCurriculumSampler, AbstractSampler = hook.AbstractCurriculumSampler, hook.AbstractSampler

    cfg = _data_config(tmp_path, "verl-sampler", sampler={"class_path": "pkg://trainer_agent.integrations.verl",
                                                          "class_name": "CurriculumSampler"})
    dataset = get_dataset_class(cfg)(data_files=cfg.train_files, tokenizer=make_tokenizer(), config=cfg)
    # What verl's create_rl_sampler does with data.sampler.
    sampler_cls = load_extern_object(cfg.sampler.class_path, cfg.sampler.class_name)
    sampler = sampler_cls(data_source=dataset, data_config=cfg)
    assert isinstance(sampler, AbstractSampler) and isinstance(sampler, AbstractCurriculumSampler)
    loader = StatefulDataLoader(dataset=dataset, batch_size=PROMPTS, num_workers=0, drop_last=True,
                                collate_fn=collate_fn, sampler=sampler)
    stats: list[Any] = []

    def update(batch: DataProto) -> None:
        assert isinstance(loader.sampler, AbstractCurriculumSampler)  # fit's own check
        loader.sampler.update(batch=batch)
        stats.append(sampler.last_stats)

    pins: list[str] = []

    def between(step: int) -> None:
        if step == 1:
            pins.append(sampler.agent.pin("mul", 1.0))

    seen = _fit_steps(loader, update, steps=5, between=between)
    _check_steps(seen, stats, pins[0], pin_step=1)
    assert sampler.agent.run == "verl-sampler" and sampler.agent.scheduler.name == "dump"
    assert sampler.agent.arms == tuple(sorted(ARMS))
    sampler.agent.close()


def test_verl_curriculum_dataset(tmp_path: Path) -> None:
    """verl 0.7-0.9 route: data.custom_cls loads CurriculumRLHFDataset; fit calls on_batch_end."""
    from torchdata.stateful_dataloader.sampler import RandomSampler

    cfg = _data_config(tmp_path, "verl-dataset", custom_cls={"path": "pkg://trainer_agent.integrations.verl",
                                                             "name": "CurriculumRLHFDataset"})
    cls = get_dataset_class(cfg)
    assert cls is sb_verl.CurriculumRLHFDataset
    tok = make_tokenizer()
    train = cls(data_files=cfg.train_files, tokenizer=tok, config=cfg)
    val = cls(data_files=cfg.val_files, tokenizer=tok, config=cfg)
    # The validation instance is a plain RLHFDataset: rows by index, no agent, no run.
    assert val.agent is None and [val[i]["data_source"] for i in range(len(val))] == [a for a in ARMS for _ in "ab"]
    assert train.agent is not None
    # verl >= 0.8 keeps its own RandomSampler; the dataset decides which row each index serves.
    loader = StatefulDataLoader(dataset=train, batch_size=PROMPTS, num_workers=0, drop_last=True,
                                collate_fn=collate_fn, sampler=RandomSampler(data_source=train))
    stats: list[Any] = []

    def on_batch_end(batch: DataProto) -> None:
        train.on_batch_end(batch=batch)
        stats.append(train.last_stats)

    pins: list[str] = []

    def between(step: int) -> None:
        if step == 1:
            assert train.agent is not None
            pins.append(train.agent.pin("mul", 1.0))

    seen = _fit_steps(loader, on_batch_end, steps=5, between=between)
    _check_steps(seen, stats, pins[0], pin_step=1)
    train.agent.close()


def test_curriculum_sampler_refuses_without_hook(tmp_path: Path) -> None:
    """verl >= 0.8 removed the sampler hook: the sampler says what to use instead."""
    try:
        import verl.experimental.dataset.sampler  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("this verl has the sampler hook")
    cfg = _data_config(tmp_path, "verl-nohook")
    with pytest.raises(ConfigError, match="CurriculumRLHFDataset"):
        sb_verl.CurriculumSampler(data_source=[], data_config=cfg)


def test_verl_refuses_worker_processes(tmp_path: Path) -> None:
    cfg = _data_config(tmp_path, "verl-workers", dataloader_num_workers=8)
    with pytest.raises(ConfigError, match="dataloader_num_workers=0"):
        sb_verl.CurriculumRLHFDataset(data_files=cfg.train_files, tokenizer=make_tokenizer(), config=cfg)


def test_verl_needs_curriculum_section(tmp_path: Path) -> None:
    cfg = _data_config(tmp_path, "verl-none")
    del cfg["curriculum"]
    with pytest.raises(ConfigError, match="curriculum"):
        sb_verl.CurriculumRLHFDataset(data_files=cfg.train_files, tokenizer=make_tokenizer(), config=cfg)


def test_validation_metrics_become_an_evaluation() -> None:
    from verl.trainer.ppo.metric_utils import process_validation_metrics

    from trainer_agent import CurriculumAgent

    # verl's own validation bookkeeping: 3 data sources, 2 samples per prompt, a 0/1 `acc` per sample.
    rng = np.random.default_rng(0)
    sources = np.array([a for a in ARMS for _ in range(8)])
    uids = [f"{a}-{i // 2}" for a in ARMS for i in range(8)]
    acc = (rng.random(sources.size) < np.repeat([0.9, 0.5, 0.1], 8)).astype(float)
    infos = {"reward": list(acc), "acc": list(acc)}
    # RayPPOTrainer._val_metrics_update (verl 0.7.1), copied: importing ray_trainer needs peft & co.
    metrics: dict[str, float] = {}
    for source, var2metric2val in process_validation_metrics(sources, uids, infos).items():
        core_var = "acc" if "acc" in var2metric2val else "reward"
        for var_name, metric2val in var2metric2val.items():
            n_max = max(int(name.split("@")[-1].split("/")[0]) for name in metric2val)
            for metric_name, metric_val in metric2val.items():
                core = var_name == core_var and metric_name.startswith(("mean", "maj", "best")) and (
                    f"@{n_max}" in metric_name)
                metrics[f"{'val-core' if core else 'val-aux'}/{source}/{var_name}/{metric_name}"] = metric_val
    assert any(k.startswith("val-core/") for k in metrics)

    agent = CurriculumAgent("verl-val", list(ARMS), redis_url=None)
    sent = sb_verl.forward_validation(agent, metrics, step=7)
    assert sent == {a: pytest.approx(float(acc[sources == a].mean())) for a in ARMS}

    class Trainer:  # the two attributes attach_validation uses, as RayPPOTrainer has them
        global_steps = 12

        def _validate(self) -> dict[str, Any]:
            return metrics

    calls: list[tuple[dict[str, float], str, int | None]] = []
    agent.log_eval = lambda results, *, n=None, name="eval", step=None: calls.append((results, name, step))  # type: ignore[method-assign]
    trainer = Trainer()
    sb_verl.attach_validation(trainer, agent)
    assert trainer._validate() is metrics
    assert [(name, step) for _, name, step in calls] == [("val", 12)]
    # A reward that is not an accuracy is left out.
    assert sb_verl.forward_validation(agent, {"val-core/add/reward/mean@2": 3.5}, step=1) == {}
