"""What every store module shares: the table handles, the dialect's INSERT, column-wise upserts,
numeric fetches straight from the driver, the clock, and the run lookup."""

from __future__ import annotations

import datetime as dt
import struct
import weakref
from collections import defaultdict
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Row, Table, bindparam, select, text, update
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


def run_row(db: Connection | Session, name: str, *cols: Any, joined: Any = None) -> Row[Any]:
    """The named run's `cols` (every column of `runs` when none are given); RunNotFound if there is none.
    `joined`: `runs` joined to other tables whose columns `cols` name too.

    The one run lookup: every read that starts from a run name goes through it.
    """
    q = select(*cols) if cols else select(RUNS)
    if joined is not None:
        q = q.select_from(joined)
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


def upsert(conn: Connection, table: Table, cols: dict[str, Any], merge: dict[str, str]) -> None:
    """Insert rows given column by column; a row whose primary key exists merges into it by `merge`.

    A column is a numpy array (float: NaN stores NULL; integer) or a list. `merge` maps a column to SQL
    with {t} (the stored row), {x} (the new one) and {least}/{greatest} (the dialect's two-argument
    min/max). Raw driver calls: on PostgreSQL one INSERT .. SELECT FROM unnest(one array per column),
    each numpy column sent as one binary array built by numpy (psycopg dumps a list element by element
    in Python: most of the upsert's time with a few hundred thousand values); on SQLite one executemany.
    SQLAlchemy's per-row parameter handling cost more than the upserts themselves.
    """
    names = list(cols)
    key = ", ".join(c.name for c in table.primary_key.columns)
    pg = conn.dialect.name == "postgresql"
    fmt = {"t": table.name, "x": "excluded", "least": "LEAST" if pg else "min",
           "greatest": "GREATEST" if pg else "max"}
    sets = ", ".join(f"{c} = {expr.format(c=c, **fmt)}" for c, expr in merge.items())
    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
    if pg:
        _register_dumpers(conn.connection.driver_connection)
        params = [_pg_array(v) if isinstance(v, np.ndarray) else v for v in cols.values()]
        floats = {c for c, v in cols.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f"}
        arrays = ", ".join(f"%b::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in names)
        picked = ", ".join(f"NULLIF({c}, 'NaN')" if c in floats else c for c in names)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {picked} "
            f"FROM unnest({arrays}) AS x({', '.join(names)}) {conflict}",
            tuple(params),
        )
    else:
        columns = [_nullable(v) if isinstance(v, np.ndarray) else v for v in cols.values()]
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) {conflict}",
            list(zip(*columns, strict=True)),
        )


def update_rows(conn: Connection, table: Table, key: str, rows: list[dict[str, Any]]) -> None:
    """UPDATE `table`'s rows from dicts holding `key` and the columns to set: one executemany per set of
    columns (many runs' rows in a few round trips)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:  # bound as b_<column>: SQLAlchemy keeps a column's own name for its SET value
        groups[tuple(row)].append({f"b_{c}": v for c, v in row.items()})
    for cols, group in groups.items():
        stmt = update(table).where(table.c[key] == bindparam(f"b_{key}")).values(
            {c: bindparam(f"b_{c}", type_=table.c[c].type) for c in cols if c != key})
        conn.execute(stmt, group)


def _nullable(a: np.ndarray[Any, Any]) -> list[Any]:
    """A numpy column as Python values, NaN as None."""
    if a.dtype.kind != "f":
        return cast(list[Any], a.tolist())
    return [None if v != v else v for v in a.tolist()]


class _PgArray:
    """A column in PostgreSQL's binary array format, sent as it is (its dumper by element type below)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class _Float8Array(_PgArray):
    __slots__ = ()


class _Int8Array(_PgArray):
    __slots__ = ()


_FLOAT8, _INT8 = 701, 20  # PostgreSQL's type OIDs


def _pg_array(a: np.ndarray[Any, Any]) -> _PgArray:
    """A 1-d numpy column as PostgreSQL's binary array format (float8[] or int8[], no NULLs): a header
    (1 dimension, no nulls, element type, length, lower bound 1), then per element its length (8) and
    its big-endian value, built in one go by numpy."""
    floating = a.dtype.kind == "f"
    body = np.empty(a.size, dtype=[("len", ">i4"), ("val", ">f8" if floating else ">i8")])
    body["len"] = 8
    body["val"] = a
    header = struct.pack(">iiIii", 1, 0, _FLOAT8 if floating else _INT8, a.size, 1) if a.size else \
        struct.pack(">iiI", 0, 0, _FLOAT8 if floating else _INT8)
    data = header + body.tobytes()
    return _Float8Array(data) if floating else _Int8Array(data)


def _register_dumpers(driver_conn: Any) -> None:
    """Teach a psycopg connection to send _pg_array's bytes as they are (once per connection)."""
    if driver_conn in _registered:
        return
    _registered.add(driver_conn)
    driver_conn.adapters.register_dumper(_Float8Array, _array_dumper(1022))  # float8[]
    driver_conn.adapters.register_dumper(_Int8Array, _array_dumper(1016))  # int8[]


_registered: weakref.WeakSet[Any] = weakref.WeakSet()


def _array_dumper(array_oid: int) -> type:
    from psycopg import pq
    from psycopg.adapt import Dumper

    class ArrayBytes(Dumper):
        format = pq.Format.BINARY
        oid = array_oid

        def dump(self, obj: Any) -> bytes:
            return cast(bytes, obj.data)

    return ArrayBytes


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
