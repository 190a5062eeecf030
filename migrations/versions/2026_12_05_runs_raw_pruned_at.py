"""runs.raw_pruned_at: when retention dropped the run's raw per-arm rows (arm_steps); its charts then read
its rollups only (server/store/retention.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2b8d4f6a0c13"
down_revision = "9c3e5a7f1b42"


def upgrade() -> None:
    op.add_column("runs", sa.Column("raw_pruned_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "raw_pruned_at")
