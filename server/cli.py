"""The `steerboard` command line."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="steerboard")
def main() -> None:
    """Steerboard: see and steer the data curriculum of GRPO-style RL post-training."""
