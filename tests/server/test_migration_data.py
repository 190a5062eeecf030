"""Migrations keep data: a downgrade and upgrade through the run-management revision on SQLite (whose
batch mode rebuilds `runs`) leaves every stored row of every run in place."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command

from server.db import alembic_config, make_engine
from tests.server.conftest import ingest_docs, run_start, step_msg

ARMS = ["kk3", "kk4"]
COUNTED = ("runs", "arms", "arm_steps", "run_steps", "arm_rollups")


def counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return {t: int(c.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()) for t in COUNTED}
    finally:
        engine.dispose()


def test_downgrade_and_upgrade_keep_every_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "head")
    engine = make_engine(url)  # the server's engine: foreign keys on, as in production
    try:
        ingest_docs(engine, [run_start("mig", 1, ARMS), *[step_msg("mig", s + 2, s, ARMS) for s in range(70)]])
    finally:
        engine.dispose()
    before = counts(url)
    assert all(before.values()), before
    command.downgrade(cfg, "e1a2b3c4d5f6")  # rebuilds runs without archived_at and note
    assert counts(url) == before
    command.upgrade(cfg, "head")
    assert counts(url) == before
