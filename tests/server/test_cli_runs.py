"""`steerboard runs list` and `steerboard runs delete NAME [--yes]`, on real SQLite and PostgreSQL and Redis."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import Engine, func, select

from server.db import make_sessionmaker
from server.settings import Settings
from server.store import manage
from server.store.sql import RUNS

from .conftest import BACKENDS, ROOT, cli_env, ingest_docs, run_start, step_msg

pytestmark = pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)


def cli(args: list[str], settings: Settings, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], env=cli_env(settings, USER="ci"), cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=60)


def n_rows(engine: Engine, run: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(RUNS).where(RUNS.c.name == run)) or 0)


def test_runs_list_and_delete(settings: Settings, engine: Engine, rds: redis.Redis) -> None:
    arms = ["a", "b"]
    ingest_docs(engine, [
        run_start("cli-old", 1, arms, project="p", config={"tags": ["t1"]}),
        *(step_msg("cli-old", 2 + s, s, arms) for s in range(4)),
        {"v": 1, "type": "run_end", "run": "cli-old", "seq": 9, "ts": time.time(), "status": "finished", "step": 3},
    ])
    ingest_docs(engine, [run_start("cli-live", 1, arms, project="p")])  # a batch of its own: the newer run
    with make_sessionmaker(engine)() as session:
        manage.update_labels(session, "cli-live", "test", manage.LabelChange(archived=True))
        session.commit()
    for run in ("cli-old", "cli-live"):
        rds.xadd(settings.keys.control(run), {"m": b"{}"})
        rds.set(settings.keys.control_applied(run), "0-1")

    r = cli(["runs", "list"], settings)
    assert r.returncode == 0, r.stderr
    # cli-live's last message came from the stream's clock of 1970 (ingest_docs' entry ids): stale.
    assert [line.split("\t") for line in r.stdout.splitlines()] == [
        ["cli-live", "stale", "p", "dump", "0", "", "archived"],
        ["cli-old", "finished", "p", "dump", "4", "t1", ""],
    ]
    r = cli(["runs", "list", "--archived", "hide", "--tag", "t1"], settings)
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["cli-old"]

    # Asked, and answered no: nothing goes.
    r = cli(["runs", "delete", "cli-old"], settings, stdin="n\n")
    assert r.returncode == 1 and "Aborted" in r.stderr
    assert r.stdout.startswith("run cli-old (finished, 4 steps): 8 arm step rows, 8 rollup rows, ")
    assert "Delete run cli-old for good? [y/N]" in r.stdout
    assert n_rows(engine, "cli-old") == 1 and rds.exists(settings.keys.control("cli-old")) == 1
    # Answered yes.
    r = cli(["runs", "delete", "cli-old"], settings, stdin="y\n")
    assert r.returncode == 0, r.stderr
    # 8 arm steps, 8 rollups (4 widths x 2 arms), 12 part rollups (3 widths x 2 arms x 2 parts), 4 steps,
    # 1 tag, 2 arms, the run.
    assert r.stdout.endswith("for good? [y/N]: run cli-old deleted (37 rows, 2 Redis keys)\n")
    assert n_rows(engine, "cli-old") == 0
    assert rds.exists(settings.keys.control("cli-old"), settings.keys.control_applied("cli-old")) == 0
    with make_sessionmaker(engine)() as session:
        log = manage.actions(session, "cli-old")
    assert [(a.action, a.actor) for a in log] == [("delete", "cli:ci")]
    # --yes asks nothing; a run that may still be sending is named in a warning.
    r = cli(["runs", "delete", "cli-live", "--yes"], settings)
    assert r.returncode == 0, r.stderr
    assert "warning: run cli-live is stale; if its trainer keeps sending, the run comes back" in r.stderr
    assert n_rows(engine, "cli-live") == 0
    r = cli(["runs", "delete", "nope", "--yes"], settings)
    assert (r.returncode, r.stderr.strip()) == (1, "Error: no run named 'nope'")
    assert cli(["runs", "list"], settings).stdout == ""
