"""agent.sampler(): a torch Sampler following the live curriculum, GRPO layout kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from trainer_agent import ConfigError, CurriculumAgent

ARMS = ["easy", "mid", "hard"]


class PromptSet(Dataset[int]):
    def __init__(self, arms: list[str]) -> None:
        self.arms = arms

    def __len__(self) -> int:
        return len(self.arms)

    def __getitem__(self, i: int) -> int:
        return i


def dataset_arms(n_per_arm: int) -> list[str]:
    return [ARMS[i % 3] for i in range(3 * n_per_arm)]


def groups_intact(batch: list[int], g: int) -> bool:
    return all(len(set(batch[i : i + g])) == 1 for i in range(0, len(batch), g))


def test_dataloader_follows_a_pin_at_the_next_chunk():
    g, prompts = 4, 8
    ds_arms = dataset_arms(20)
    agent = CurriculumAgent("sampler-pin", ARMS, scheduler="uniform", seed=1)
    sampler = agent.sampler(ds_arms, group_size=g, num_samples=10_000)
    loader = DataLoader(PromptSet(ds_arms), batch_size=prompts * g, sampler=sampler)
    it = iter(loader)
    first = next(it).tolist()
    assert groups_intact(first, g)
    assert len({ds_arms[i] for i in first}) > 1  # uniform over three arms
    # step boundary: pin "hard" to 1.0
    agent.observe([ds_arms[i] for i in first], torch.rand(len(first)), groups=np.repeat(np.arange(prompts), g))
    agent.pin("hard", 1.0)
    agent.end_step()
    for _ in range(5):
        batch = next(it).tolist()
        assert groups_intact(batch, g)
        assert {ds_arms[i] for i in batch} == {"hard"}
    # release: other arms come back
    agent.release("hard")
    agent.end_step()
    seen = {ds_arms[i] for _ in range(5) for i in next(it).tolist()}
    assert seen == set(ARMS)


def test_sampler_is_deterministic_and_cycles_through_each_arm():
    ds_arms = dataset_arms(5)
    runs = []
    for _ in range(2):
        agent = CurriculumAgent("sampler-det", ARMS, scheduler="fixed",
                                scheduler_params={"weights": [1, 0, 0]}, seed=9)
        runs.append(list(agent.sampler(ds_arms, group_size=2, num_samples=20)))
    assert runs[0] == runs[1]
    prompts = runs[0][::2]
    assert all(ds_arms[i] == "easy" for i in prompts)
    # 10 prompts over 5 easy items: each item exactly twice (permutation, then a reshuffle)
    assert sorted(prompts) == sorted([i for i, a in enumerate(ds_arms) if a == "easy"] * 2)


def test_epochs_differ_and_len_is_num_samples():
    ds_arms = dataset_arms(10)
    agent = CurriculumAgent("sampler-epoch", ARMS, seed=2)
    s = agent.sampler(ds_arms, group_size=3)
    assert len(s) == len(ds_arms) * 3 == len(list(s))
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0


def test_arms_without_data_are_never_drawn():
    agent = CurriculumAgent("sampler-empty", ARMS, scheduler="fixed", scheduler_params={"weights": [1, 1, 8]})
    s = agent.sampler(["easy", "mid", "easy"], group_size=1, num_samples=300)
    assert all(i in (0, 1, 2) for i in s)
    with pytest.raises(ConfigError, match="group_size"):
        agent.sampler(["easy"], group_size=0)
    with pytest.raises(Exception, match="unknown arm 'zzz'"):
        agent.sampler(["zzz"], group_size=1)
