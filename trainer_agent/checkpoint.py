"""Checks for saved state read back from a checkpoint (what `state_dict()` methods return).

A checkpoint can be stale, edited by hand or saved by another setup of the run; loading one must
fail with a `ConfigError` that names what does not fit, never with an IndexError from deep inside
numpy, and must leave the object it was loaded into as it was (so: check everything, then assign).
State is plain JSON-able Python so that it fits any checkpoint (torch.save, json, yaml).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import ConfigError
from .stats import BoolArray, FloatArray, IntArray


def mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a dict, got {type(value).__name__}")
    return value


def require(state: Mapping[str, Any], key: str, where: str) -> Any:
    """`state[key]`, or a ConfigError naming the missing key."""
    try:
        return mapping(state, where)[key]
    except KeyError:
        raise ConfigError(f"{where}: missing {key!r}") from None


def _items(value: Any, where: str, n: int | None) -> Sequence[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
    if n is not None and len(value) != n:
        raise ConfigError(f"{where}: expected {n} values, got {len(value)}")
    return list(value)


def _is_int(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool | np.bool_)


def _is_number(x: Any) -> bool:
    return _is_int(x) or isinstance(x, float | np.floating)


def int_value(value: Any, where: str, low: int = 0, high: int | None = None) -> int:
    if not _is_int(value) or int(value) < low or (high is not None and int(value) > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ConfigError(f"{where}: expected an integer {bound}, got {value!r}")
    return int(value)


def float_value(value: Any, where: str) -> float:
    if not _is_number(value) or not math.isfinite(float(value)):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def float_array(value: Any, where: str, n: int | None, low: float = -math.inf, high: float = math.inf) -> FloatArray:
    """A list of `n` finite numbers in [low, high] as a float64 array."""
    items = _items(value, where, n)
    if not all(_is_number(x) for x in items):
        raise ConfigError(f"{where}: expected numbers")
    arr = np.array(items, dtype=np.float64).reshape(len(items))
    if not np.all(np.isfinite(arr)) or (arr < low).any() or (arr > high).any():
        raise ConfigError(f"{where}: expected finite numbers in [{low}, {high}]")
    return arr


def int_array(value: Any, where: str, n: int | None, low: int = 0) -> IntArray:
    """A list of `n` integers >= low as an int64 array."""
    items = _items(value, where, n)
    if not all(_is_int(x) and int(x) >= low for x in items):
        raise ConfigError(f"{where}: expected integers >= {low}")
    return np.array([int(x) for x in items], dtype=np.int64).reshape(len(items))


def bool_array(value: Any, where: str, n: int) -> BoolArray:
    items = _items(value, where, n)
    if not all(isinstance(x, bool | np.bool_) for x in items):
        raise ConfigError(f"{where}: expected true/false values")
    return np.array(items, dtype=np.bool_).reshape(n)


def list_of(value: Any, where: str) -> list[Any]:
    return list(_items(value, where, None))


def check_arms(saved: Any, arms: Sequence[str], where: str) -> None:
    """The state must describe the same arms, in the same order (arm-indexed arrays follow it)."""
    saved_list = _items(saved, f"{where}: arms", None)
    if list(saved_list) == list(arms):
        return
    missing = [a for a in arms if a not in saved_list]
    extra = [a for a in saved_list if a not in arms]
    if missing or extra:
        detail = "; ".join(
            part for part in (
                f"not in the state: {', '.join(map(str, missing[:10]))}" if missing else "",
                f"only in the state: {', '.join(map(str, extra[:10]))}" if extra else "",
            ) if part
        )
    else:
        detail = f"the same arms in another order ({', '.join(map(str, saved_list[:10]))})"
    raise ConfigError(f"{where} was saved for other arms than this agent's: {detail}")


def generator_from_state(saved: Any, bitgen_type: type[np.random.BitGenerator]) -> np.random.Generator:
    """A numpy Generator in the state `state_dict()` saved (its integers were saved as strings)."""
    where = "agent state: rng"
    doc = mapping(saved, where)
    name = doc.get("bit_generator")
    if name != bitgen_type.__name__:
        raise ConfigError(f"{where}: saved from a {name!r} generator; this agent uses {bitgen_type.__name__}")
    try:
        bitgen = bitgen_type()
        bitgen.state = {
            "bit_generator": name,
            "state": {str(k): int(v) for k, v in mapping(doc["state"], f"{where}: state").items()},
            "has_uint32": int(doc["has_uint32"]),
            "uinteger": int(doc["uinteger"]),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: malformed generator state ({e})") from e
    return np.random.Generator(bitgen)
