"""A real, small GRPO run on CPU over a mixture of synthetic tasks, driven by the curriculum agent.

It exists to show Steerboard on live data and to benchmark the schedulers (``bench/curriculum.py``):
a from-scratch character-level transformer is warmed up on easy tasks, then trained with GRPO while
`trainer_agent.CurriculumAgent` picks the task ("arm") of every prompt.

Run it with ``python -m trainer_agent.demo --scheduler dump --steps 200``, or from Python::

    from trainer_agent.demo import DemoConfig, train
    result = train(DemoConfig(scheduler="dump", steps=200))

This package imports torch; ``trainer_agent`` itself never imports it.
"""

from .grpo import DemoConfig, DemoResult, group_advantages, train
from .tasks import DEFAULT_ARMS, DEFAULT_ROLES

__all__ = ["DEFAULT_ARMS", "DEFAULT_ROLES", "DemoConfig", "DemoResult", "group_advantages", "train"]
