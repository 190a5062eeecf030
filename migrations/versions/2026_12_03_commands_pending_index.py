"""Index commands by (run_id, status, created_at): a command post counts a run's pending commands and
finds the newest one by this index, reading only the pending ones however long the audit log is.

Revision ID: 5e2f8a1c9d34
Revises: 3d9a1c5e7b20
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "5e2f8a1c9d34"
down_revision: str | Sequence[str] | None = "3d9a1c5e7b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_commands_run_status_created", "commands", ["run_id", "status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_commands_run_status_created", table_name="commands")
