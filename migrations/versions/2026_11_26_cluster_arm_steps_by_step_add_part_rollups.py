"""Key arm_steps step first (clustered on SQLite) and add part_rollups.

arm_steps was keyed (run_id, arm_id, step), a rowid table on SQLite. A zoomed chart reads a range of
steps of every arm: with that key each row was a random table read, 300-400 ms for 2,000 steps of 64
arms. Keyed (run_id, step, arm_id), and clustered on that key on SQLite, the rows of a step range are
contiguous, and ingest (which writes whole steps in order) appends at the end of the key.

part_rollups keeps, for the numeric parts of each arm's scheduler score, the same buckets
arm_rollups keeps for the metrics, so the score-parts chart of a long run reads a few hundred rows
per arm and keeps each bucket's min and max (it used to read strided rows and could miss a spike).
It is filled here from the runs already stored.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from alembic.util import load_python_file

revision = "5b8f0d7e3a21"
down_revision = "7a4d5e2c1f03"

# Schema pieces shared with other revisions (migrations/_frozen.py), loaded by path.
_frozen = load_python_file(Path(__file__).parents[1], "_frozen.py")

# Frozen copy of server.models.PART_ROLLUP_WIDTHS as of this revision.
_WIDTHS = (256, 1024, 4096)


def _rekey_arm_steps(key: tuple[str, ...], clustered: bool) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot change a table's key or rowid-ness in place: copy into a new table.
        op.create_table(
            "arm_steps_rekeyed",
            *_frozen.arm_steps_columns(),
            sa.PrimaryKeyConstraint(*key, name="pk_arm_steps"),
            sqlite_with_rowid=not clustered,
        )
        cols = ", ".join(c.name for c in _frozen.arm_steps_columns())
        op.execute(
            f"INSERT INTO arm_steps_rekeyed ({cols}) SELECT {cols} FROM arm_steps ORDER BY {', '.join(key)}"
        )
        op.drop_table("arm_steps")
        op.rename_table("arm_steps_rekeyed", "arm_steps")
    else:
        op.drop_constraint("pk_arm_steps", "arm_steps", type_="primary")
        op.create_primary_key("pk_arm_steps", "arm_steps", list(key))


def upgrade() -> None:
    _rekey_arm_steps(("run_id", "step", "arm_id"), clustered=True)
    op.create_table(
        "part_rollups",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("arm_id", sa.Integer, sa.ForeignKey("arms.id", ondelete="CASCADE"), nullable=False),
        sa.Column("part", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("first_step", sa.Integer, nullable=False),
        sa.Column("last_step", sa.Integer, nullable=False),
        sa.Column("value_n", sa.Integer, nullable=False),
        sa.Column("value_min", sa.Float, nullable=False),
        sa.Column("value_max", sa.Float, nullable=False),
        sa.Column("value_sum", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "width", "bucket", "arm_id", "part", name="pk_part_rollups"),
        sqlite_with_rowid=False,
    )
    # What ingest would have written: every numeric part with a name of at most 64 characters.
    if op.get_bind().dialect.name == "sqlite":
        parts = "json_each(a.parts) AS j"
        numeric = "j.type IN ('integer', 'real')"
        value = "j.value"
    else:
        parts = "LATERAL json_each(a.parts) AS j"
        numeric = "json_typeof(j.value) = 'number'"
        value = "CAST(j.value::text AS DOUBLE PRECISION)"
    for w in _WIDTHS:
        op.execute(
            "INSERT INTO part_rollups (run_id, arm_id, part, width, bucket, first_step, last_step, value_n,"
            " value_min, value_max, value_sum)"
            f" SELECT a.run_id, a.arm_id, j.key, {w}, a.step / {w}, MIN(a.step), MAX(a.step), COUNT(*),"
            f" MIN({value}), MAX({value}), SUM({value})"
            f" FROM arm_steps AS a CROSS JOIN {parts}"
            f" WHERE {numeric} AND length(j.key) <= 64"
            f" GROUP BY a.run_id, a.arm_id, j.key, a.step / {w}"
        )


def downgrade() -> None:
    op.drop_table("part_rollups")
    _rekey_arm_steps(("run_id", "arm_id", "step"), clustered=False)
