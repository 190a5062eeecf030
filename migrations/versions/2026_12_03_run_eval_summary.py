"""The runs' evaluation summary as columns (eval_name, final_eval, best_eval), kept by ingest: the runs
table sorts by them like any column instead of reading every run's evaluations per request. Filled here
from the evaluations already stored.
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

revision = "7a4c1e9b2d60"
down_revision = "5e2f8a1c9d34"


def upgrade() -> None:
    op.add_column("runs", sa.Column("eval_name", sa.String(64), nullable=True))
    op.add_column("runs", sa.Column("final_eval", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("best_eval", sa.Float(), nullable=True))
    conn = op.get_bind()
    # The same reduction as server/store/evals.eval_summaries (migrations do not import the application).
    latest: dict[int, tuple[int, float, str, float]] = {}
    best: dict[tuple[int, str], float] = {}
    rows = conn.execute(sa.text(
        "SELECT run_id, name, step, avg(accuracy), max(ts) FROM evals GROUP BY run_id, name, step"))
    for rid, name, step, mean, ts in rows:
        mean, ts = float(mean), float(ts)
        had = latest.get(rid)
        if had is None or (step, ts) > (had[0], had[1]) or ((step, ts) == (had[0], had[1]) and name < had[2]):
            latest[rid] = (step, ts, name, mean)
        if mean > best.get((rid, name), -math.inf):
            best[(rid, name)] = mean
    if latest:
        conn.execute(
            sa.text("UPDATE runs SET eval_name = :n, final_eval = :f, best_eval = :b WHERE id = :id"),
            [{"id": rid, "n": name, "f": mean, "b": best[(rid, name)]} for rid, (_, _, name, mean) in latest.items()],
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("best_eval")
        batch.drop_column("final_eval")
        batch.drop_column("eval_name")
