"""Steerboard's trainer-side library: the curriculum agent that lives inside a GRPO loop.

Importing it is cheap: numpy only. torch and redis are imported by the calls that need them.
"""

from .agent import CurriculumAgent, StepStats
from .errors import CommandError, ConfigError, ObservationError, SteerboardError
from .overrides import Ack, Command
from .schedulers import Scheduler, available_schedulers, make_scheduler, register_scheduler
from .stats import StepObservations, grpo_advantages

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
    "available_schedulers",
    "grpo_advantages",
    "make_scheduler",
    "register_scheduler",
]
__version__ = "0.1.0"
