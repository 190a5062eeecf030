"""Migrations keep data: a downgrade and upgrade through the run-management revision on SQLite (whose
batch mode rebuilds `runs`) leaves every stored row of every run in place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from server.db import alembic_config, make_engine
from tests.server.conftest import BACKENDS, ingest_docs, run_start, step_msg

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


def eval_msg(run: str, seq: int, name: str, step: int, ts: float, accs: dict[str, float]) -> dict[str, Any]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": ts, "name": name, "step": step,
            "arms": [{"arm": a, "accuracy": v, "correct": None, "total": None} for a, v in accs.items()]}


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_the_eval_summary_columns_are_filled_from_stored_evaluations(empty_db: str) -> None:
    """The migration's SQL picks what ingest keeps: the latest evaluation by step, then latest sent, then
    name (code point order), and the best mean of that evaluation's set."""
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "head")
    engine = make_engine(empty_db)
    t0 = 1.7e9
    docs = [run_start(r, 1, ARMS) for r in ("ev", "later", "none", "tie")]
    for i, (step, accs) in enumerate([(0, {"kk3": 0.2, "kk4": 0.4}), (10, {"kk3": 0.9, "kk4": 0.7}),
                                      (20, {"kk3": 0.6, "kk4": 0.6})]):
        docs.append(eval_msg("ev", 2 + i, "greedy", step, t0 + step, accs))
        docs.append(eval_msg("later", 2 + 2 * i, "greedy", step, t0 + step, accs))
    docs.append(eval_msg("later", 3, "sampled", 20, t0 + 25, {"kk3": 0.5, "kk4": 0.5}))  # same step, sent later
    docs.append(eval_msg("later", 5, "sampled", 5, t0 + 5, {"kk3": 0.7, "kk4": 0.7}))
    docs.append(eval_msg("tie", 2, "b", 7, t0, {"kk3": 0.1, "kk4": 0.1}))  # same step and time: "B" < "a" < "b"
    docs.append(eval_msg("tie", 3, "a", 7, t0, {"kk3": 0.3, "kk4": 0.3}))
    docs.append(eval_msg("tie", 4, "B", 7, t0, {"kk3": 0.9, "kk4": 0.9}))
    try:
        ingest_docs(engine, docs)
        summary = "SELECT name, eval_name, final_eval, best_eval FROM runs ORDER BY name"
        with engine.connect() as c:
            kept = [tuple(r) for r in c.exec_driver_sql(summary)]
        assert kept == [("ev", "greedy", 0.6, 0.8), ("later", "sampled", 0.5, 0.7), ("none", None, None, None),
                        ("tie", "B", 0.9, 0.9)]  # kept by ingest
        command.downgrade(cfg, "5e2f8a1c9d34")
        command.upgrade(cfg, "head")  # filled from the evaluations by the migration
        with engine.connect() as c:
            assert [tuple(r) for r in c.exec_driver_sql(summary)] == kept
    finally:
        engine.dispose()
