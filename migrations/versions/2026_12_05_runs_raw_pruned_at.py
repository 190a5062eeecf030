"""runs.raw_pruned_at: when retention dropped the run's raw per-arm rows (arm_steps); its charts then read
its rollups only (server/store/retention.py).

Revision ID: 2b8d4f6a0c13
Revises: 9c3e5a7f1b42
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "2b8d4f6a0c13"
down_revision: str | Sequence[str] | None = "9c3e5a7f1b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("raw_pruned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "raw_pruned_at")
