"""Server-side sessions (user_sessions), users.disabled_at, and server_state (credentials_seen).

- `user_sessions`: one row per login; the cookie carries a random token and this row its SHA-256.
  Deleting a row ends that login at the next request (logout, password change, disable, remove).
- `users.disabled_at`: set while a user may not log in.
- `server_state` (key, value, updated_at): `credentials_seen` is written when the first user or token
  is made, so revoking the last one never turns local dev mode back on. Filled here when a user or a
  token already exists.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0b7c2d4e6f81"
down_revision = "f7e8d9c0b1a2"

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.String(256), nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_user_sessions_hash"),
    )
    op.create_index("ix_user_sessions_user_id", "user_sessions", ["user_id"])
    op.add_column("users", sa.Column("disabled_at", _TS, nullable=True))
    state = op.create_table(
        "server_state",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    conn = op.get_bind()
    seen = conn.execute(sa.text("SELECT 1 FROM users UNION ALL SELECT 1 FROM api_tokens LIMIT 1")).first()
    if seen is not None:
        now = dt.datetime.now(dt.UTC)
        if conn.dialect.name == "sqlite":  # stored naive UTC there (server.models.UTCDateTime)
            now = now.replace(tzinfo=None)
        op.bulk_insert(state, [{"key": "credentials_seen", "value": "migration", "updated_at": now}])


def downgrade() -> None:
    op.drop_table("server_state")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
    op.drop_index("ix_user_sessions_user_id", table_name="user_sessions")
    op.drop_table("user_sessions")
