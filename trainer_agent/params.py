"""Declared parameters of a scheduler: types and ranges, checked the same way by the agent and the server.

Every registered scheduler declares `param_schema`: parameter name -> `Param`. A scheduler command
(`set_params`, `switch`) is checked against it before anything is built, so an unknown parameter or a
value out of range is refused with a message naming it; the constructor then checks what a schema cannot
say (e.g. a `fixed` weight per arm). `Param.describe()` is what the API serves to the scheduler panel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import CommandError, ConfigError

ParamType = Literal["int", "float", "bool", "str", "json"]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its type, its range (numbers: `low`/`high`, each inclusive unless `*_open`),
    its choices (str), and one line of documentation. `json` parameters (lists, mappings) are checked
    by the scheduler's constructor only."""

    type: ParamType
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def range_text(self) -> str:
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        return f"{left}{lo}, {hi}{right}"

    def check(self, name: str, value: Any) -> Any:
        """`value` as this parameter's type, or CommandError saying why it cannot be."""
        if self.type == "json":
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise CommandError(f"{name} must be true or false, got {value!r}")
            return value
        if self.type == "str":
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise CommandError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CommandError(f"{name} must be a number, got {value!r}")
        if self.type == "int":
            if isinstance(value, float) and not value.is_integer():
                raise CommandError(f"{name} must be an integer, got {value!r}")
            value = int(value)
        x = float(value)
        ok = math.isfinite(x)
        if ok and self.low is not None:
            ok = x > self.low if self.low_open else x >= self.low
        if ok and self.high is not None:
            ok = x < self.high if self.high_open else x <= self.high
        if not ok:
            raise CommandError(f"{name} must be in {self.range_text()}, got {value!r}")
        return value

    def describe(self) -> dict[str, Any]:
        """The schema as JSON for the API: type, doc, low, high, low_open, high_open, choices."""
        return {"type": self.type, "doc": self.doc, "low": self.low, "high": self.high,
                "low_open": self.low_open, "high_open": self.high_open, "choices": list(self.choices)}


def check_params(scheduler: str, schema: Mapping[str, Param], params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` checked against `schema` (CommandError naming the first unknown or bad parameter)."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        spec = schema.get(name)
        if spec is None:
            known = ", ".join(sorted(schema)) or "none"
            raise CommandError(f"scheduler {scheduler!r} has no parameter {name!r}; its parameters: {known}")
        out[name] = spec.check(name, value)
    return out


def positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return value


def unit(name: str, value: float, *, open_low: bool = True) -> float:
    value = float(value)
    low_ok = value > 0 if open_low else value >= 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        raise ConfigError(f"{name} must be in {'(0' if open_low else '[0'}, 1], got {value!r}")
    return value


# Shared declarations.
TEMPERATURE = Param("float", "softmax temperature τ", low=0.0, low_open=True)
UNIT_RATE = Param("float", "EMA rate", low=0.0, high=1.0, low_open=True)
