"""The runs' evaluation summary as columns (eval_name, final_eval, best_eval), kept by ingest: the runs
table sorts by them like any column instead of reading every run's evaluations per request. Filled here
from the evaluations already stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "7a4c1e9b2d60"
down_revision = "5e2f8a1c9d34"


def upgrade() -> None:
    op.add_column("runs", sa.Column("eval_name", sa.String(64), nullable=True))
    op.add_column("runs", sa.Column("final_eval", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("best_eval", sa.Float(), nullable=True))
    conn = op.get_bind()
    # What server/store/evals.eval_summaries computes (migrations do not import the application): the
    # latest evaluation by (step, latest sent, name in code point order) and the best mean of its set.
    by_code_point = ' COLLATE "C"' if conn.dialect.name == "postgresql" else ""  # SQLite compares bytes
    rows = conn.execute(sa.text(f"""
        WITH per AS (SELECT run_id, name, step, avg(accuracy) AS mean, max(ts) AS ts
                     FROM evals GROUP BY run_id, name, step),
             ranked AS (SELECT run_id, name, mean, row_number() OVER (
                            PARTITION BY run_id ORDER BY step DESC, ts DESC, name{by_code_point}) AS pos
                        FROM per),
             best AS (SELECT run_id, name, max(mean) AS best FROM per GROUP BY run_id, name)
        SELECT r.run_id, r.name, r.mean, b.best FROM ranked r JOIN best b ON b.run_id = r.run_id AND b.name = r.name
        WHERE r.pos = 1"""))
    summaries = [{"id": rid, "n": name, "f": float(mean), "b": float(top)} for rid, name, mean, top in rows]
    if summaries:
        conn.execute(
            sa.text("UPDATE runs SET eval_name = :n, final_eval = :f, best_eval = :b WHERE id = :id"), summaries)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("best_eval")
        batch.drop_column("final_eval")
        batch.drop_column("eval_name")
