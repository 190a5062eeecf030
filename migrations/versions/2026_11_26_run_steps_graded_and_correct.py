"""run_steps: each step's graded completions and correct ones, for the run's overall accuracy.

Overall accuracy at a step is the completion-weighted mean of the arms' accuracies,
sum_j acc_j * n_j / sum_j n_j. Kept per step on ingest, the compare page reads one row per step
instead of every arm's row (6.4 M rows for a 64-arm, 100,000-step run). Filled here for the steps
already stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "2d6c8e4f1a95"
down_revision = "5b8f0d7e3a21"


def upgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.add_column(sa.Column("graded", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("correct", sa.Float, nullable=False, server_default="0"))
    op.execute(
        "UPDATE run_steps SET graded = g.graded, correct = g.correct"
        " FROM (SELECT run_id, step, SUM(n_step) AS graded, SUM(accuracy * n_step) AS correct"
        "       FROM arm_steps WHERE accuracy IS NOT NULL AND n_step > 0 GROUP BY run_id, step) AS g"
        " WHERE run_steps.run_id = g.run_id AND run_steps.step = g.step"
    )


def downgrade() -> None:
    with op.batch_alter_table("run_steps") as batch:
        batch.drop_column("correct")
        batch.drop_column("graded")
