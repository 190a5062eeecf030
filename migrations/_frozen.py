"""Schema pieces that more than one migration uses, each frozen as of the revision named in its docstring.

Revision scripts load this file by path (alembic.util.load_python_file): migrations/ is not an importable
package in every install, and a migration must not import the application, whose models move on. A
migration keeps doing what it did, so nothing here changes once a revision uses it: a later schema gets a
new function.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic.operations import BatchOperations


def arm_steps_columns() -> list[sa.Column[object]]:
    """arm_steps' columns as revision 3c1e2f0a9b10 created them, in order; 5b8f0d7e3a21 copies the table
    with them when it changes the key on SQLite (nothing changed them in between)."""
    return [
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("arm_id", sa.Integer, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("parts", sa.JSON, nullable=False),
        sa.Column("n_step", sa.Integer, nullable=False),
        sa.Column("n_total", sa.BigInteger, nullable=False),
        sa.Column("mean_abs_adv", sa.Float, nullable=True),
        sa.Column("mean_reward", sa.Float, nullable=True),
        sa.Column("accuracy", sa.Float, nullable=True),
    ]


def add_rollup_columns(batch: BatchOperations, metric: str) -> None:
    """The arm_rollups columns of a metric added after the table was made, as revisions 3d9a1c5e7b20
    (zero_var) and 7e4c1a9d2f56 (pass_partial) add them: `{metric}_n` (0 for the buckets stored before),
    then `{metric}_min`, `_max`, `_sum` and `_last` (null there)."""
    batch.add_column(sa.Column(f"{metric}_n", sa.Integer, nullable=False, server_default="0"))
    for agg in ("min", "max", "sum", "last"):
        batch.add_column(sa.Column(f"{metric}_{agg}", sa.Float, nullable=True))


def drop_rollup_columns(batch: BatchOperations, metric: str) -> None:
    """What `add_rollup_columns` added, dropped in reverse order (those revisions' downgrades)."""
    for agg in ("last", "sum", "max", "min"):
        batch.drop_column(f"{metric}_{agg}")
    batch.drop_column(f"{metric}_n")
