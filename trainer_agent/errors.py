"""Exceptions raised by the trainer-side library, each with a stable code."""

from __future__ import annotations


class SteerboardError(Exception):
    """Base class of every error raised by `trainer_agent`."""

    code = "steerboard_error"


class ConfigError(SteerboardError, ValueError):
    """Bad arguments when building an agent, a scheduler or a sampler."""

    code = "config_error"


class ObservationError(SteerboardError, ValueError):
    """`observe()` got inputs that cannot be matched up (lengths, unknown arms)."""

    code = "observation_error"


class CommandError(SteerboardError, ValueError):
    """An override that can never be valid (unknown arm, p outside [0, 1], factor <= 0)."""

    code = "command_error"
