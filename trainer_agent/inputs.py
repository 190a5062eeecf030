"""Checks of what a training loop passes to the agent besides completions: arms, evaluation results and metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .checkpoint import int_value
from .errors import ConfigError
from .protocol import arm_name_problem

log = logging.getLogger("trainer_agent")


def arms_with_metadata(arms: Any) -> dict[str, dict[str, Any]]:
    """Arm name -> metadata from a list of names or a mapping name -> metadata; a ConfigError unless
    there is at least one arm and every name is valid and unique."""
    if isinstance(arms, str):
        raise ConfigError("arms must be a list of names, not a single string")
    if isinstance(arms, Mapping):
        pairs = [(str(a), dict(m or {})) for a, m in arms.items()]
    else:
        pairs = [(str(a), {}) for a in arms]
    if not pairs:
        raise ConfigError("at least one arm is required")
    for name, _ in pairs:
        if (problem := arm_name_problem(name)) is not None:
            raise ConfigError(problem)
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ConfigError("arm names must be unique")
    return out


def eval_value(arm: str, value: Any, count: Any) -> tuple[float, float | None, int | None]:
    """(accuracy, correct, total) of one arm's evaluation result, or a ConfigError naming the arm."""
    if (problem := arm_name_problem(arm)) is not None:
        raise ConfigError(problem)
    where = f"evaluation of {arm!r}"
    if isinstance(value, Mapping):
        value = (value.get("correct"), value.get("total"))
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ConfigError(f"{where}: expected (correct, total), got {value!r}")
        correct, total = value
        total = int_value(total, f"{where}: total", low=1)
        correct_f = float(correct) if isinstance(correct, int | float | np.number) else math.nan
        if not (math.isfinite(correct_f) and 0 <= correct_f <= total):
            raise ConfigError(f"{where}: correct must be a number in [0, total], got {correct!r}")
        return correct_f / total, correct_f, total
    try:  # numbers, numpy scalars, one-element tensors
        accuracy = math.nan if isinstance(value, str | bytes) else float(value)
    except (TypeError, ValueError):
        accuracy = math.nan
    if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
        raise ConfigError(f"{where}: accuracy must be a number in [0, 1], got {value!r}")
    if count is None:
        return accuracy, None, None
    total = int_value(count, f"{where}: n", low=1)
    return accuracy, accuracy * total, total


def clean_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if not metrics:
        return {}
    out: dict[str, float] = {}
    for k, v in metrics.items():
        try:
            x = float(v.item() if hasattr(v, "item") else v)
        except (TypeError, ValueError):
            log.warning("metric %r is not a number (%r); not recorded", k, type(v).__name__)
            continue
        if math.isfinite(x):
            out[str(k)] = x
    return out
