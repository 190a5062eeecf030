"""Arm signals and diagnoses: arm_steps.n_groups, zero_var, pass_hist; the zero_var rollup columns;
run_diagnoses (each run's diagnosis state), diagnosis_changes (each arm's diagnosis history) and
suggestion_responses (suggestions accepted or dismissed, audited).

- `arm_steps.n_groups`, `arm_steps.zero_var`, `arm_steps.pass_hist`: the agent's per-arm signals (docs/wire.md);
  null in rows stored before them.
- `arm_rollups.zero_var_{n,min,max,sum,last}`: the zero-variance share rolled up like every metric; 0 and
  null for buckets stored before (their rows had no share).
- `run_diagnoses` (run_id, step, state): what the diagnosis of a run carries from one ingest batch to the
  next (server/diagnosis.py), and the last step folded into it.
- `diagnosis_changes`: one row per change of an arm's diagnosis, with the step it began (`since_step`),
  the step it was confirmed at (`step`), the figures behind it and the live event that carried it.
- `suggestion_responses`: a person accepted (with the command sent) or dismissed a suggestion.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from alembic.util import load_python_file

revision = "3d9a1c5e7b20"
down_revision = "0b7c2d4e6f81"

# Schema pieces shared with other revisions (migrations/_frozen.py), loaded by path.
_frozen = load_python_file(Path(__file__).parents[1], "_frozen.py")

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("arm_steps") as batch:
        batch.add_column(sa.Column("n_groups", sa.Integer, nullable=True))
        batch.add_column(sa.Column("zero_var", sa.Float, nullable=True))
        batch.add_column(sa.Column("pass_hist", sa.JSON, nullable=True))
    with op.batch_alter_table("arm_rollups") as batch:
        _frozen.add_rollup_columns(batch, "zero_var")
    op.create_table(
        "run_diagnoses",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "diagnosis_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("arm_id", sa.Integer, sa.ForeignKey("arms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("since_step", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("diagnosis", sa.String(16), nullable=True),
        sa.Column("previous", sa.String(16), nullable=True),
        sa.Column("figures", sa.JSON, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_diagnosis_changes_run_event", "diagnosis_changes", ["run_id", "event_seq"])
    op.create_index("ix_diagnosis_changes_run_arm_step", "diagnosis_changes", ["run_id", "arm_id", "step"])
    op.create_table(
        "suggestion_responses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("arm", sa.String(256), nullable=False),
        sa.Column("diagnosis", sa.String(16), nullable=False),
        sa.Column("since_step", sa.Integer, nullable=False),
        sa.Column("response", sa.String(16), nullable=False),
        sa.Column("command_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_suggestion_responses_run_created", "suggestion_responses", ["run_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_suggestion_responses_run_created", table_name="suggestion_responses")
    op.drop_table("suggestion_responses")
    op.drop_index("ix_diagnosis_changes_run_arm_step", table_name="diagnosis_changes")
    op.drop_index("ix_diagnosis_changes_run_event", table_name="diagnosis_changes")
    op.drop_table("diagnosis_changes")
    op.drop_table("run_diagnoses")
    with op.batch_alter_table("arm_rollups") as batch:
        _frozen.drop_rollup_columns(batch, "zero_var")
    with op.batch_alter_table("arm_steps") as batch:
        batch.drop_column("pass_hist")
        batch.drop_column("zero_var")
        batch.drop_column("n_groups")
