"""Create evals: a run's evaluations (the held-out accuracy per eval set, step and arm).

An evaluation's arms are named by the trainer and need not be training arms (a held-out set may be
split differently), so `arm` is text, not a key into `arms`. Keyed (run_id, name, arm, step): ingest
inserts with ON CONFLICT DO NOTHING, so a re-delivered message changes nothing (the first write wins,
as for arm_steps), and a chart reads one eval set's points in key order. `event_seq` is the run's live
event that first carried the row (docs/sse.md), so a resuming SSE client gets it rebuilt; a run has a
few thousand rows at most (evaluations x arms), so that read scans the run's key range, unindexed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e1a2b3c4d5f6"
down_revision = "2d6c8e4f1a95"


def upgrade() -> None:
    op.create_table(
        "evals",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("arm", sa.String(256), nullable=False),
        sa.Column("accuracy", sa.Float, nullable=False),
        sa.Column("correct", sa.Float, nullable=True),
        sa.Column("total", sa.BigInteger, nullable=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "name", "arm", "step", name="pk_evals"),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("evals")
