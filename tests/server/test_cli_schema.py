"""Migrations, the out-of-date schema refusal, and the CLI's clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

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


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_rekeying_arm_steps_keeps_the_rows_and_fills_part_rollups(empty_db: str) -> None:
    """The revisions after it copy every arm_steps row (keyed step first), compute part_rollups, and each
    step's graded and correct completions."""
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "7a4d5e2c1f03")  # the revision before it
    engine = make_engine(empty_db)
    long_name = "x" * 65
    rows = [
        {"run_id": 1, "arm_id": arm, "step": step, "probability": 0.5, "score": None, "n_step": 2 * arm,
         "n_total": step, "mean_abs_adv": None, "mean_reward": None, "accuracy": 0.25 * arm if step % 2 else None,
         "parts": json.dumps({"mu": step * 0.5 + arm, "bonus": -float(step), long_name: 1.0})}
        for step in range(300) for arm in (1, 2)
    ]
    try:
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO runs (id, name, project, scheduler, params, config, status, status_seq, last_seq,"
                " last_step, dropped, event_seq, status_event_seq, host, pid)"
                " VALUES (1, 'old', 'p', 'dump', '{}', '{}', 'finished', 0, 0, 299, 0, 0, 0, 'h', 1)"))
            for arm in (1, 2):
                conn.execute(text(
                    "INSERT INTO arms (id, run_id, name, position, metadata, state, probability, last_step)"
                    f" VALUES ({arm}, 1, 'arm{arm}', {arm}, '{{}}', 'active', 0.5, 299)"))
            conn.execute(text(
                "INSERT INTO arm_steps (run_id, arm_id, step, probability, score, parts, n_step, n_total,"
                " mean_abs_adv, mean_reward, accuracy) VALUES (:run_id, :arm_id, :step, :probability, :score,"
                " :parts, :n_step, :n_total, :mean_abs_adv, :mean_reward, :accuracy)"), rows)
            conn.execute(text(
                "INSERT INTO run_steps (run_id, step, ts, seq, entry_id, event_seq, metrics)"
                " VALUES (1, :step, 1.0, :step, '1-0', 1, '{}')"), [{"step": st} for st in range(300)])
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            got = conn.execute(text("SELECT arm_id, step, parts FROM arm_steps ORDER BY arm_id, step")).all()
            rollups = conn.execute(text(
                "SELECT arm_id, part, width, bucket, first_step, last_step, value_n, value_min, value_max,"
                " value_sum FROM part_rollups")).all()
        assert [(a, st) for a, st, _ in got] == sorted((r["arm_id"], r["step"]) for r in rows)
        expected = {}
        for arm in (1, 2):
            for part, value in (("mu", lambda st, arm=arm: st * 0.5 + arm), ("bonus", lambda st: -float(st))):
                for width in (256, 1024, 4096):  # score parts skip the finest width (64)
                    for b in range(0, 300 // width + 1):
                        steps = [st for st in range(b * width, min(300, (b + 1) * width))]
                        vals = [value(st) for st in steps]
                        expected[(arm, part, width, b)] = (steps[0], steps[-1], len(steps), min(vals), max(vals),
                                                           sum(vals))
        assert {(r[0], r[1], r[2], r[3]): tuple(r[4:]) for r in rollups} == expected  # long name left out
        with engine.connect() as conn:
            graded = conn.execute(text("SELECT step, graded, correct FROM run_steps ORDER BY step")).all()
        # odd steps: arm 1 (2 completions at 0.25) and arm 2 (4 at 0.5); even steps: nothing graded
        assert [tuple(g) for g in graded] == [(st, 6, 2.5) if st % 2 else (st, 0, 0.0) for st in range(300)]
        command.downgrade(cfg, "7a4d5e2c1f03")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM arm_steps")).scalar() == len(rows)
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
