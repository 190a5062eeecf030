"""Run management: runs.archived_at and runs.note, run_tags (the agent's and people's), run_actions (audit).

- `runs.archived_at`: set while a run is archived (hidden from the default runs list); `runs.note`: a
  person's free text. Ingest never writes either.
- `run_tags` (run_id, tag, source, position): `source` is "agent" for the tags of the run's
  `config["tags"]` (replaced at each run_start) and "user" for tags people add. Filled here from the
  stored configs, so filtering and sorting by tag read one table.
- `run_actions`: who archived, unarchived, tagged, untagged, noted or deleted which run, and when. Keyed
  by the run's name, without a foreign key: the row of a deletion outlives the run.
- `ix_evals_run_name_step` on evals (run_id, name, step, accuracy, ts): the runs table's final and best
  evaluation read one row per evaluation, grouped in index order.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "f7e8d9c0b1a2"
down_revision = "e1a2b3c4d5f6"

_TS = sa.DateTime(timezone=True)
_TAG_MAX = 64


def _agent_tags(config: Any) -> list[str]:
    """The tags of a stored config, as server.store.manage.agent_tags read them on 2026-12-01 (a
    migration keeps its own copy: it must do the same thing whatever that function becomes)."""
    raw = config.get("tags") if isinstance(config, dict) else None
    if isinstance(raw, str):
        tags = [t.strip() for t in raw.split(",")]
    elif isinstance(raw, list | tuple):
        tags = [str(t).strip() for t in raw]
    else:
        tags = []
    out: list[str] = []
    for t in tags:
        t = t[:_TAG_MAX]
        if t and t not in out:
            out.append(t)
    return out


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("archived_at", _TS, nullable=True))
        batch.add_column(sa.Column("note", sa.Text, nullable=True))
    run_tags = op.create_table(
        "run_tags",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("tag", sa.String(_TAG_MAX), nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "tag", name="pk_run_tags"),
    )
    op.create_index("ix_run_tags_tag", "run_tags", ["tag"])
    op.create_table(
        "run_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run", sa.String(256), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_run_actions_run_created", "run_actions", ["run", "created_at"])
    # The runs table's evaluation columns group each evaluation's arms: in this order, without a sort.
    op.create_index("ix_evals_run_name_step", "evals", ["run_id", "name", "step", "accuracy", "ts"])

    conn = op.get_bind()
    runs = sa.table("runs", sa.column("id", sa.Integer), sa.column("config", sa.JSON))
    rows = [
        {"run_id": run_id, "tag": tag, "source": "agent", "position": i}
        for run_id, config in conn.execute(sa.select(runs.c.id, runs.c.config))
        for i, tag in enumerate(_agent_tags(config))
    ]
    if rows:
        op.bulk_insert(run_tags, rows)


def downgrade() -> None:
    op.drop_index("ix_evals_run_name_step", table_name="evals")
    op.drop_index("ix_run_actions_run_created", table_name="run_actions")
    op.drop_table("run_actions")
    op.drop_index("ix_run_tags_tag", table_name="run_tags")
    op.drop_table("run_tags")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("note")
        batch.drop_column("archived_at")
