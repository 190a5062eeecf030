"""Schema pieces that more than one migration uses, each frozen as of the revision named in its docstring.

Revision scripts load this file by path (alembic.util.load_python_file): migrations/ is not an importable
package in every install, and a migration must not import the application, whose models move on. A
migration keeps doing what it did, so nothing here changes once a revision uses it: a later schema gets a
new function.
"""

from __future__ import annotations

import sqlalchemy as sa


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
