"""Index commands by (run_id, status, created_at): a command post counts a run's pending commands and
finds the newest one by this index, reading only the pending ones however long the audit log is.
"""

from __future__ import annotations

from alembic import op

revision = "5e2f8a1c9d34"
down_revision = "3d9a1c5e7b20"


def upgrade() -> None:
    op.create_index("ix_commands_run_status_created", "commands", ["run_id", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_commands_run_status_created", table_name="commands")
