"""Alembic environment: the URL comes from the config (set by `steerboard db ...`) or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from server.db import make_engine
from server.models import Base
from server.settings import Settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    return url or Settings().database_url


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on, dropping the old
        # `runs` would cascade and empty every table that references it. Off for the migration
        # (outside any transaction: SQLite ignores the pragma inside one), checked, then on again.
        # Through the DBAPI connection, which runs in autocommit (server.db turns the sqlite3
        # module's own transactions off): through SQLAlchemy it would land inside a BEGIN.
        if connection.in_transaction():
            connection.commit()
        raw = connection.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        _migrate(connection)
    finally:
        if sqlite:
            if connection.in_transaction():
                connection.commit()
            broken = raw.execute("PRAGMA foreign_key_check").fetchall()
            raw.execute("PRAGMA foreign_keys=ON")
            if broken:
                raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken[:5]}")


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
