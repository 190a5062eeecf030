"""Fixtures for the server tests: real Redis, real SQLite / PostgreSQL, the real app over HTTP.

Each test gets its own Redis key prefix (deleted afterwards) and its own database: a SQLite file
under tmp_path, or a PostgreSQL schema in the `test` database (dropped afterwards). Schemas are
built by running the migrations.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import uvicorn
from alembic import command
from sqlalchemy import Engine, text

from server.app import create_app
from server.db import alembic_config, make_engine
from server.settings import Settings
from server.store import ingest as ingest_store
from server.wire import INGEST_ADAPTER

REDIS_URL = os.environ.get("STEERBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("STEERBOARD_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    p = f"sbtest:{uuid.uuid4().hex[:10]}:"
    yield p
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=p.replace("{", "\\{") + "*", count=1000))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture
def rds() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(REDIS_URL)
    yield r
    r.close()


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL with nothing in it (backend from the `backend` param, default sqlite)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/steerboard.db"
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture
def db_url(empty_db: str) -> str:
    """A database URL with the schema built by the migrations."""
    command.upgrade(alembic_config(empty_db), "head")
    return empty_db


@pytest.fixture
def settings(db_url: str, prefix: str) -> Settings:
    return Settings(
        database_url=db_url,
        redis_url=REDIS_URL,
        key_prefix=prefix,
        ingest_block_ms=50,
        ingest_claim_interval_s=0.2,
        ingest_claim_idle_ms=60_000,
        api_token=None,
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    e = make_engine(settings.database_url)
    yield e
    e.dispose()


# ---------------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------------


def ingest_docs(engine: Engine, docs: list[dict[str, Any]], batch: int = 500) -> None:
    """Wire messages written straight through the ingest store (no Redis), `batch` per transaction."""
    entries = []
    for n, doc in enumerate(docs):
        raw = orjson.dumps(doc)
        entries.append(ingest_store.Entry(f"{n + 1}-0", INGEST_ADAPTER.validate_json(raw), raw))
    for i in range(0, len(entries), batch):
        with engine.begin() as conn:
            ingest_store.apply_ingest(conn, entries[i:i + batch])


def run_start(run: str, seq: int, arms: list[str], ts: float | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "v": 1, "type": "run_start", "run": run, "seq": seq, "ts": ts or time.time(), "project": "test",
        "scheduler": "dump", "params": {"c": 1.0}, "config": {"lr": 1e-6},
        "arms": [{"name": a, "metadata": {"i": i}} for i, a in enumerate(arms)], "host": "h", "pid": 1,
        **extra,
    }


def arm_record(arm: str, step: int, i: int, **over: Any) -> dict[str, Any]:
    """Deterministic per-(arm, step) values, so tests can recompute what they expect."""
    rec = {
        "arm": arm, "p": 0.0, "score": (step * 7 + i * 3) % 11 / 10.0,
        "parts": {"exploit": step / 1000.0, "explore": i / 100.0}, "n_step": (step + i) % 5,
        "n_total": step * 3 + i, "mean_abs_adv": ((step + 2 * i) % 9) / 9.0,
        "mean_reward": None if (step + i) % 4 == 0 else ((step * i) % 13) / 13.0,
        "accuracy": ((step + i) % 7) / 7.0, "state": "active", "pin": None, "boost": None,
    }
    rec.update(over)
    return rec


def step_msg(run: str, seq: int, step: int, arms: list[str], **over: Any) -> dict[str, Any]:
    recs = [arm_record(a, step, i) for i, a in enumerate(arms)]
    for r in recs:
        r["p"] = 1.0 / len(arms)
    return {
        "v": 1, "type": "step", "run": run, "seq": seq, "ts": 1_700_000_000.0 + step, "step": step,
        "metrics": {"loss": step / 10.0}, "dropped": 0, "arms": recs, **over,
    }


def xadd(r: redis.Redis, settings: Settings, *msgs: dict[str, Any] | bytes) -> list[str]:
    ids = []
    for m in msgs:
        raw = m if isinstance(m, bytes) else orjson.dumps(m)
        ids.append(r.xadd(settings.keys.ingest, {"m": raw}).decode())
    return ids


def wait_for(pred: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------------
# The app over HTTP
# ---------------------------------------------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    client: httpx.Client


def _serve(app: Any) -> Iterator[LiveServer]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), timeout=20)
    if not server.started:
        raise RuntimeError("the app did not start")
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=20) as client:
        yield LiveServer(url, client)
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture
def app_server(settings: Settings) -> Iterator[LiveServer]:
    """The app with an in-process ingest worker, served by uvicorn on a free port."""
    yield from _serve(create_app(settings, ingest=True))


@pytest.fixture
def make_server() -> Iterator[Callable[..., LiveServer]]:
    """Serve the app with any settings: make_server(settings, ingest=False)."""
    gens: list[Iterator[LiveServer]] = []

    def make(settings: Settings, ingest: bool = False) -> LiveServer:
        gen = _serve(create_app(settings, ingest=ingest))
        gens.append(gen)
        return next(gen)

    yield make
    for g in gens:
        for _ in g:
            pass


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERBOARD_")}
    env.update({
        "STEERBOARD_DATABASE_URL": settings.database_url,
        "STEERBOARD_REDIS_URL": settings.redis_url,
        "STEERBOARD_KEY_PREFIX": settings.key_prefix,
        "STEERBOARD_INGEST_BLOCK_MS": "50",
        **extra,
    })
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=timeout,
    )
