"""arm_steps.pass_partial and its rollup columns: the share of an arm's window prompts solved in some attempts
but not all (pass_hist bins 1..3, 0 < pass rate < 1), derived from pass_hist on ingest and charted like a
metric (the run page's pass-rate-profile heatmap, `GET /api/runs/{run}/series?metric=pass_partial`).

Backfilled from the stored pass_hist where the raw rows are kept: arm_steps.pass_partial, then
arm_rollups.pass_partial_{n,min,max,sum,last} of those rows' buckets. Runs whose raw rows retention
dropped keep 0 and null there (their profiles went with the rows).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import op
from alembic.util import load_python_file

revision = "7e4c1a9d2f56"
down_revision = "2b8d4f6a0c13"

# Schema pieces shared with other revisions (migrations/_frozen.py), loaded by path.
_frozen = load_python_file(Path(__file__).parents[1], "_frozen.py")

# The rollup widths when this revision was written (server.models.ROLLUP_WIDTHS).
_WIDTHS = (64, 256, 1024, 4096)


def _hist(i: int, dialect: str) -> str:
    if dialect == "postgresql":
        return f"CAST(pass_hist ->> {i} AS DOUBLE PRECISION)"
    return f"CAST(json_extract(pass_hist, '$[{i}]') AS REAL)"


def upgrade() -> None:
    with op.batch_alter_table("arm_steps") as batch:
        batch.add_column(sa.Column("pass_partial", sa.Float, nullable=True))
    with op.batch_alter_table("arm_rollups") as batch:
        _frozen.add_rollup_columns(batch, "pass_partial")
    dialect = op.get_bind().dialect.name
    h = [_hist(i, dialect) for i in range(5)]
    seen = " + ".join(h)
    # A JSON null (or a profile of no prompts) gives NULL: no share.
    op.execute(
        f"UPDATE arm_steps SET pass_partial = ({h[1]} + {h[2]} + {h[3]}) / NULLIF({seen}, 0) "
        "WHERE pass_hist IS NOT NULL"
    )
    for w in _WIDTHS:
        op.execute(
            "UPDATE arm_rollups SET pass_partial_n = agg.n, pass_partial_min = agg.mn, pass_partial_max = agg.mx, "
            "pass_partial_sum = agg.sm FROM ("
            f"  SELECT run_id, arm_id, step / {w} AS bucket, count(*) AS n, min(pass_partial) AS mn,"
            "   max(pass_partial) AS mx, sum(pass_partial) AS sm"
            "  FROM arm_steps WHERE pass_partial IS NOT NULL"
            f"  GROUP BY run_id, arm_id, step / {w}"
            ") AS agg "
            "WHERE arm_rollups.run_id = agg.run_id AND arm_rollups.arm_id = agg.arm_id "
            f"AND arm_rollups.width = {w} AND arm_rollups.bucket = agg.bucket"
        )
    # The value at each bucket's last step (null where that row has none), at every width.
    op.execute(
        "UPDATE arm_rollups SET pass_partial_last = s.pass_partial FROM arm_steps AS s "
        "WHERE s.run_id = arm_rollups.run_id AND s.step = arm_rollups.last_step AND s.arm_id = arm_rollups.arm_id "
        "AND s.pass_partial IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("arm_rollups") as batch:
        _frozen.drop_rollup_columns(batch, "pass_partial")
    with op.batch_alter_table("arm_steps") as batch:
        batch.drop_column("pass_partial")
