"""What every store module shares: the table handles, the dialect's INSERT, column-wise upserts,
numeric fetches straight from the driver, the clock, and the run lookup."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Row, Table, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.db import BINARY_ROWS
from server.errors import RunNotFound
from server.models import Arm, ArmStep, Run, RunEval, RunStep, SchedulerSnapshot, SentCommand

RUNS = cast(Table, Run.__table__)
ARMS = cast(Table, Arm.__table__)
ARM_STEPS = cast(Table, ArmStep.__table__)
RUN_STEPS = cast(Table, RunStep.__table__)
COMMANDS = cast(Table, SentCommand.__table__)
EVALS = cast(Table, RunEval.__table__)
SCHEDULER_SNAPSHOTS = cast(Table, SchedulerSnapshot.__table__)


def utcnow() -> dt.datetime:
    """Now, as an aware UTC datetime: the server's one clock."""
    return dt.datetime.now(dt.UTC)


def utc_from_ts(ts: float) -> dt.datetime:
    """A unix time (seconds) as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def run_row(db: Connection | Session, name: str, *cols: Any) -> Row[Any]:
    """The named run's `cols` (every column of `runs` when none are given); RunNotFound if there is none.

    The one run lookup: every read that starts from a run name goes through it.
    """
    q = select(*cols) if cols else select(RUNS)
    row = db.execute(q.where(RUNS.c.name == name)).first()
    if row is None:
        raise RunNotFound(f"no run named {name!r}", run=name)
    return row


def run_id(db: Connection | Session, name: str) -> int:
    """The named run's id; RunNotFound if there is none."""
    return int(run_row(db, name, RUNS.c.id).id)


def ping(db: Connection | Session) -> None:
    db.execute(text("SELECT 1"))


def insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO NOTHING / DO UPDATE."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {name!r} (use SQLite or PostgreSQL)")


def upsert(conn: Connection, table: Table, cols: dict[str, list[Any]], merge: dict[str, str]) -> None:
    """Insert rows given column by column; a row whose primary key exists merges into it by `merge`.

    `merge` maps a column to SQL with {t} (the stored row), {x} (the new one) and {least}/{greatest}
    (the dialect's two-argument min/max). Raw driver calls: on PostgreSQL one INSERT .. SELECT FROM
    unnest(one array per column), on SQLite one executemany; SQLAlchemy's per-row parameter handling
    cost more than the upserts themselves.
    """
    names = list(cols)
    key = ", ".join(c.name for c in table.primary_key.columns)
    pg = conn.dialect.name == "postgresql"
    fmt = {"t": table.name, "x": "excluded", "least": "LEAST" if pg else "min",
           "greatest": "GREATEST" if pg else "max"}
    sets = ", ".join(f"{c} = {expr.format(c=c, **fmt)}" for c, expr in merge.items())
    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
    if pg:
        arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in names)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) {conflict}",
            tuple(cols.values()),
        )
    else:
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) {conflict}",
            list(zip(*cols.values(), strict=True)),
        )


def fetch_array(conn: Connection, q: Any, n_cols: int) -> np.ndarray[Any, Any]:
    """Rows of a numeric query (no NULLs: the queries filter them) as a float64 array of `n_cols` columns.

    Straight from the driver's cursor: SQLAlchemy's Row objects cost more than the query itself here.
    On PostgreSQL the rows come in binary (db.BINARY_ROWS).
    """
    res = conn.execute(q.execution_options(**{BINARY_ROWS: True}))
    try:
        rows = res.cursor.fetchall()
    finally:
        res.close()
    return np.array(rows, dtype=np.float64).reshape(-1, n_cols)
