"""Helpers the benchmarks share: a free port, a percentile, a PostgreSQL schema of one's own."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
from sqlalchemy import text

from server.db import make_engine


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc), or None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def number_options(ap: argparse.ArgumentParser, **defaults: float) -> argparse.ArgumentParser:
    """Add a `--name` option per keyword (underscores become dashes), typed by its default (int or float)."""
    for name, default in defaults.items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return ap


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every database benchmark has: --backends, --keep, --pg-url."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--keep", action="store_true", help="keep (and reuse) the databases")
    ap.add_argument("--pg-url", default=os.environ.get("STEERBOARD_BENCH_PG",
                                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    return ap


def database(backend: str, name: str, keep: bool, pg_url: str) -> tuple[str, bool]:
    """A database URL for a benchmark's data set `name`: a SQLite file in the temp folder, or a PostgreSQL
    schema of that name; emptied unless `keep`. Also whether it existed already (and was kept)."""
    if backend == "postgresql":
        return pg_schema(pg_url, name, keep)
    db_file = Path(tempfile.gettempdir()) / "steerboard-bench" / f"{name}.db"
    db_file.parent.mkdir(exist_ok=True)
    exists = db_file.exists()
    if exists and not keep:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        exists = False
    return f"sqlite:///{db_file}", exists


def databases(args: argparse.Namespace, schema: str) -> Iterator[tuple[str, str, bool]]:
    """For each of --backends: (backend, database URL, whether it existed and was kept), from `database`;
    the PostgreSQL schema is dropped when the caller goes on to the next backend, unless --keep."""
    for backend in args.backends.split(","):
        url, exists = database(backend, schema, args.keep, args.pg_url)
        yield backend, url, exists
        if not args.keep and backend == "postgresql":
            drop_pg_schema(args.pg_url, schema)


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


def drop_pg_schema(pg_url: str, schema: str) -> None:
    admin = make_engine(pg_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


def serve_web(url: str, prefix: str, cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`steerboard serve --no-ingest` on `url` and a free port, with a key prefix of its own; (process,
    base URL) once /healthz answers."""
    port = free_port()
    env = {**os.environ, "STEERBOARD_DATABASE_URL": url, "STEERBOARD_PORT": str(port),
           "STEERBOARD_KEY_PREFIX": f"{prefix}-{uuid.uuid4().hex[:6]}:", "STEERBOARD_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--no-ingest", "--port", str(port)],
                            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """SIGTERM to each of `procs` still running, then wait up to `timeout` s for each; one that has not
    exited by then is killed (and reaped)."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextlib.contextmanager
def web_server(url: str, prefix: str, cwd: Path) -> Iterator[str]:
    """`serve_web` for the length of a with block: its base URL; the process is stopped on leaving."""
    proc, base = serve_web(url, prefix, cwd)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
