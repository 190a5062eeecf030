"""Adapters that plug a `CurriculumAgent` into third-party GRPO trainers.

Each adapter lives in its own module and imports its framework there, so importing this package
costs nothing: `from trainer_agent.integrations.trl import CurriculumGRPOTrainer` pulls TRL,
`from trainer_agent.integrations.verl import ...` pulls verl, and `import trainer_agent` pulls neither.
"""
