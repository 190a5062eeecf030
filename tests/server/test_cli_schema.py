"""Migrations, the out-of-date schema refusal, and the CLI's clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from server.db import alembic_config, make_engine, require_current_schema
from server.errors import SchemaOutOfDate
from server.models import Base
from server.settings import Settings

from .conftest import BACKENDS, REDIS_URL, ROOT, cli_env, free_port, run_cli, wait_for


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_migrations_match_the_models_and_downgrade(empty_db: str) -> None:
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    engine = make_engine(empty_db)
    try:
        require_current_schema(engine, empty_db)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        command.downgrade(cfg, "base")
        with pytest.raises(SchemaOutOfDate, match="run `steerboard db upgrade`"):
            require_current_schema(engine, empty_db)
    finally:
        engine.dispose()


def _settings(url: str, prefix: str = "sbcli:") -> Settings:
    return Settings(database_url=url, redis_url=REDIS_URL, key_prefix=prefix, _env_file=None)  # type: ignore[call-arg]


def test_db_commands_from_another_directory(empty_db: str, tmp_path: Path) -> None:
    env = cli_env(_settings(empty_db))
    cur = subprocess.run([sys.executable, "-m", "server", "db", "current"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert cur.returncode == 0 and "current: (empty)" in cur.stdout and "out of date" in cur.stdout
    up = subprocess.run([sys.executable, "-m", "server", "db", "upgrade"], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    cur = run_cli(["db", "current"], env)
    assert cur.returncode == 0 and "up to date" in cur.stdout


@pytest.mark.parametrize("cmd", [["serve", "--port", "1"], ["worker"]])
def test_out_of_date_schema_is_refused_clearly(empty_db: str, cmd: list[str]) -> None:
    res = run_cli(cmd, cli_env(_settings(empty_db)))
    assert res.returncode == 1
    assert "schema is out of date" in res.stderr and "run `steerboard db upgrade`" in res.stderr
    assert "Traceback" not in res.stderr


def test_unreachable_services_are_reported_clearly(db_url: str) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    res = run_cli(["worker"], cli_env(_settings(db_url)) | {"STEERBOARD_REDIS_URL": dead_redis})
    assert res.returncode == 1 and f"cannot reach Redis at {dead_redis}" in res.stderr
    assert "Traceback" not in res.stderr
    dead_pg = f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{free_port()}/test"
    res = run_cli(["serve"], cli_env(_settings(dead_pg)))
    assert res.returncode == 1 and "cannot use the database at postgresql+psycopg://postgres:***@" in res.stderr
    assert "hunter2" not in res.stderr and "Traceback" not in res.stderr


def test_app_lifespan_refuses_an_old_schema(empty_db: str) -> None:
    from fastapi.testclient import TestClient

    from server.app import create_app

    with pytest.raises(SchemaOutOfDate), TestClient(create_app(_settings(empty_db))):
        pass


def test_serve_runs_web_and_ingest(db_url: str, prefix: str) -> None:
    port = free_port()
    env = cli_env(_settings(db_url, prefix))
    proc = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "local dev mode" in err
    assert "ingest worker" in err
