"""Helpers the benchmarks share: a free port, a percentile, a PostgreSQL schema of one's own."""

from __future__ import annotations

import math
import socket

from sqlalchemy import text

from server.db import make_engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    """The q-quantile of xs (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def pg_schema(pg_url: str, schema: str, keep: bool) -> tuple[str, bool]:
    """A URL into `schema` of the PostgreSQL at `pg_url`, made empty unless `keep`; and whether it
    already existed (and was kept)."""
    sep = "&" if "?" in pg_url else "?"
    url = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
    admin = make_engine(pg_url)
    try:
        with admin.begin() as conn:
            exists = bool(conn.execute(text(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = :s"), {"s": schema}).first())
            if exists and not keep:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
                exists = False
            if not exists:
                conn.execute(text(f"CREATE SCHEMA {schema}"))
    finally:
        admin.dispose()
    return url, exists
