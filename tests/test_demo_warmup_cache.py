"""The demo's warm-up cache when two trainers warm up at once (the demo starts dump and uniform together)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

import trainer_agent.demo.grpo as grpo
from trainer_agent.demo.grpo import DemoConfig


def test_two_trainers_saving_the_same_warm_up_both_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second trainer saves and renames its warm-up between the first one's save and rename. With one
    shared temporary name the first rename found nothing (FileNotFoundError: the demo lost its dump run)."""
    cfg = DemoConfig(warmup_steps=2, warmup_batch=8, warmup_cache=str(tmp_path), d_model=16, n_layers=1,
                     n_heads=2)
    real_save = torch.save
    other_done: list[bool] = []
    # The two trainer processes: the second one runs inside the first one's save.
    monkeypatch.setattr(os, "getpid", lambda: 2222 if other_done else 1111)

    def save(obj: Any, path: Any) -> None:
        real_save(obj, path)
        if not other_done:
            other_done.append(True)
            grpo.build_policy(cfg, torch.device("cpu"))  # the other trainer, start to finish

    monkeypatch.setattr(torch, "save", save)
    model = grpo.build_policy(cfg, torch.device("cpu"))
    assert other_done and model is not None
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].startswith("warmup-") and files[0].endswith(".pt"), files
