"""Engines, sessions and the schema check. Nothing here connects at import time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from server.errors import SchemaOutOfDate
from server.package_data import package_path

log = logging.getLogger(__name__)

# Ingest write transactions ask for this execution option to take SQLite's write lock up front.
SQLITE_IMMEDIATE = "steerboard_sqlite_immediate"


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def make_engine(database_url: str, **kwargs: Any) -> Engine:
    """An engine for `database_url`: SQLite (WAL, created directory) or PostgreSQL via psycopg."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            json_serializer=_json_dumps,
            json_deserializer=orjson.loads,
            connect_args={"timeout": 30, "check_same_thread": False},
            **kwargs,
        )
        _sqlite_pragmas(engine, sqlite_file(database_url))
        return engine
    engine = create_engine(
        url,
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
        pool_pre_ping=True,
        **kwargs,
    )
    _binary_results(engine)
    return engine


# Execution option: the rows of this statement come from PostgreSQL in binary (read raw off the cursor).
BINARY_ROWS = "steerboard_binary_rows"


def _binary_results(engine: Engine) -> None:
    """Statements run with execution option BINARY_ROWS get binary rows from psycopg: no text-to-float
    parsing (25% faster on a chart's 25,000 rows). Only for results read raw from the cursor, which
    SQLAlchemy's type processing never sees; set per execution, as SQLAlchemy makes a cursor per
    statement."""
    from psycopg.pq import Format

    @event.listens_for(engine, "before_cursor_execute")
    def _binary(_conn: Any, cursor: Any, _stmt: Any, _params: Any, context: Any, _many: bool) -> None:
        if context is not None and context.execution_options.get(BINARY_ROWS):
            cursor.format = Format.BINARY


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL; None for other databases, in-memory and `file:` URI ones."""
    url = make_url(database_url)
    db = url.database
    if url.get_backend_name() != "sqlite" or not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def _sqlite_pragmas(engine: Engine, path: Path | None) -> None:
    @event.listens_for(engine, "do_connect")
    def _make_directory(*_args: Any) -> None:
        # Only when connecting: an engine made to check a schema that is not there (require_current_schema
        # refuses a missing file before connecting) leaves neither a file nor a directory behind.
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA cache_size=-65536")  # 64 MiB: arm_steps' index pages stay cached
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer that reads first and writes later would otherwise hit SQLITE_BUSY when it
        # upgrades its lock; IMMEDIATE takes the write lock (waiting on busy_timeout) at BEGIN.
        immediate = conn.get_execution_options().get(SQLITE_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def write_transaction(session: Session) -> None:
    """Start the session's next transaction as a writer's: on SQLite it takes the write lock up front
    (BEGIN IMMEDIATE), or an ingest commit between a request's reads and its write fails the write
    with "database is locked" (a deferred transaction cannot wait to upgrade its lock). Ends whatever
    read transaction the request had open (its auth reads) so that the option applies."""
    session.commit()
    session.connection(execution_options={SQLITE_IMMEDIATE: True})


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    """The installed alembic.ini, pointing at the installed migrations and `database_url` (not the cwd)."""
    cfg = Config(str(package_path("alembic.ini")))
    # ConfigParser interpolates %; escape it for paths and URLs with encoded characters.
    cfg.set_main_option("script_location", str(package_path("migrations")).replace("%", "%%"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def head_revision(database_url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current_schema(engine: Engine, database_url: str) -> None:
    """Raise SchemaOutOfDate unless the database is at the migrations' head.

    A SQLite file that does not exist is refused without connecting, which would create it empty.
    """
    head = head_revision(database_url)
    path = sqlite_file(database_url)
    missing = path if path is not None and not path.exists() else None
    current = None if missing else current_revision(engine)
    if current != head:
        if missing:
            where = f"no database file at {missing.absolute()}"
        else:
            where = "an empty database" if current is None else f"revision {current}"
        raise SchemaOutOfDate(
            f"the database schema is out of date ({where}, this version needs {head}): "
            "run `steerboard db upgrade`",
            current=current,
            head=head,
        )
