"""Scheduler commands (issue 14): the audit log keeps a command's `scheduler` (switch) and `params`
(set_params, switch); `scheduler_snapshots` keeps each run's latest scheduler snapshot from its agent
(name, parameters, frozen, and the state the server previews scheduler commands from).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "9c3e5a7f1b42"
down_revision = "7a4c1e9b2d60"


def upgrade() -> None:
    op.add_column("commands", sa.Column("scheduler", sa.String(128), nullable=True))
    op.add_column("commands", sa.Column("params", sa.JSON(), nullable=True))
    op.create_table(
        "scheduler_snapshots",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("scheduler_snapshots")
    op.drop_column("commands", "params")
    op.drop_column("commands", "scheduler")
