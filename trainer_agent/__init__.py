"""Steerboard's trainer-side library: the curriculum agent that lives inside a GRPO loop.

Importing it is cheap: numpy only. torch and redis are imported by the calls that need them.
"""

from importlib import metadata as _metadata

from . import accuracy_schedulers as _accuracy_schedulers  # noqa: F401 - registers its schedulers
from . import staged_schedulers as _staged_schedulers  # noqa: F401 - registers staged, cyclical, replay
from .agent import CurriculumAgent
from .errors import CommandError, ConfigError, ObservationError, SteerboardError
from .overrides import Ack, Command
from .recent import WarmStart
from .schedulers import Scheduler, available_schedulers, make_scheduler, register_scheduler
from .stats import StepObservations, grpo_advantages
from .step_stats import StepStats

__all__ = [
    "Ack",
    "Command",
    "CommandError",
    "ConfigError",
    "CurriculumAgent",
    "ObservationError",
    "Scheduler",
    "SteerboardError",
    "StepObservations",
    "StepStats",
    "WarmStart",
    "available_schedulers",
    "grpo_advantages",
    "make_scheduler",
    "register_scheduler",
]
try:  # the version is written once, in pyproject.toml
    __version__ = _metadata.version("steerboard")
except _metadata.PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"
