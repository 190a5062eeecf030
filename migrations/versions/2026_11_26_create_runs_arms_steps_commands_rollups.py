"""Create runs, arms, arm_steps, run_steps, commands (the audit log) and arm_rollups."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from alembic.util import load_python_file

revision = "3c1e2f0a9b10"
down_revision = None

# Schema pieces shared with other revisions (migrations/_frozen.py), loaded by path.
_frozen = load_python_file(Path(__file__).parents[1], "_frozen.py")

# Frozen copy of server.models.METRICS as of this revision (migrations never import moving code).
_METRICS = ("probability", "score", "mean_abs_adv", "mean_reward", "accuracy", "n_step", "n_total")
_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("project", sa.String(256), nullable=False),
        sa.Column("scheduler", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("host", sa.String(256), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("started_at", _TS, nullable=True),
        sa.Column("ended_at", _TS, nullable=True),
        sa.Column("last_seen", _TS, nullable=True),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("dropped", sa.BigInteger, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("status_event_seq", sa.BigInteger, nullable=False),
        sa.Column("status_seq", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("name", name="uq_runs_name"),
    )
    op.create_index("ix_runs_project", "runs", ["project"])

    op.create_table(
        "arms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pin", sa.Float, nullable=True),
        sa.Column("boost", sa.Float, nullable=True),
        sa.Column("probability", sa.Float, nullable=True),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.UniqueConstraint("run_id", "name", name="uq_arms_run_name"),
    )

    # arm_steps has no foreign keys on purpose (see server.models.ArmStep): PostgreSQL's per-row FK
    # triggers cost 2/3 of bulk ingest throughput.
    op.create_table(
        "arm_steps",
        *_frozen.arm_steps_columns(),
        sa.PrimaryKeyConstraint("run_id", "arm_id", "step", name="pk_arm_steps"),
        # A rowid table on SQLite: appends in arrival order plus the key index ingest ~10% faster than
        # a table clustered on the key (measured with bench/ingest.py), at the price of a random
        # table read per row when a zoomed chart reads raw rows. Long ranges read arm_rollups.
    )

    op.create_table(
        "run_steps",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("entry_id", sa.String(32), nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "step", name="pk_run_steps"),
    )
    op.create_index("ix_run_steps_run_event", "run_steps", ["run_id", "event_seq"])

    op.create_table(
        "commands",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("arm", sa.String(256), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("steps", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("applied_step", sa.Integer, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
        sa.Column("acked_at", _TS, nullable=True),
        sa.Column("ack_event_seq", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_commands_run_created", "commands", ["run_id", "created_at"])
    op.create_index("ix_commands_run_ack_event", "commands", ["run_id", "ack_event_seq"])

    metric_cols: list[sa.Column[object]] = []
    for m in _METRICS:
        metric_cols.append(sa.Column(f"{m}_n", sa.Integer, nullable=False))
        metric_cols.extend(sa.Column(f"{m}_{agg}", sa.Float, nullable=True) for agg in ("min", "max", "sum", "last"))
    op.create_table(
        "arm_rollups",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("arm_id", sa.Integer, sa.ForeignKey("arms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("first_step", sa.Integer, nullable=False),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        *metric_cols,
        sa.PrimaryKeyConstraint("run_id", "arm_id", "width", "bucket", name="pk_arm_rollups"),
        # SQLite: clustered on the key, so a chart's range of buckets is read from sequential pages.
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("arm_rollups")
    op.drop_index("ix_commands_run_ack_event", table_name="commands")
    op.drop_index("ix_commands_run_created", table_name="commands")
    op.drop_table("commands")
    op.drop_index("ix_run_steps_run_event", table_name="run_steps")
    op.drop_table("run_steps")
    op.drop_table("arm_steps")
    op.drop_table("arms")
    op.drop_index("ix_runs_project", table_name="runs")
    op.drop_table("runs")
