"""One data directory: what `steerboard demo` stores, `steerboard serve` and `steerboard user add` see (the
same default database file), and a command that only reads never leaves an empty database behind."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, free_port
from tests.pages.helpers import login

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERBOARD_")}
    return env | {"STEERBOARD_REDIS_URL": REDIS_URL, "STEERBOARD_INGEST_BLOCK_MS": "50", **extra}


def _cli(args: list[str], cwd: Path, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [["db", "current"], ["user", "list"], ["token", "list"],
                                  ["user", "add", "alice", "--role", "operator", "--password-stdin"],
                                  ["serve", "--port", "1"], ["worker"]])
def test_a_command_on_a_missing_database_creates_nothing(args: list[str], tmp_path: Path) -> None:
    res = _cli(args, tmp_path, _env(), stdin="a long password\n")
    expected = tmp_path / "steerboard-data" / "steerboard.db"
    assert f"no database file at {expected}" in res.stdout + res.stderr
    assert res.returncode == (0 if args == ["db", "current"] else 1)
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_data_dir_variable_moves_the_default_database(tmp_path: Path) -> None:
    env = _env(STEERBOARD_DATA_DIR=str(tmp_path / "elsewhere"))
    assert _cli(["db", "upgrade"], tmp_path, env).returncode == 0
    assert _cli(["user", "add", "alice", "--role", "viewer", "--password-stdin"], tmp_path, env,
                stdin="a long password\n").returncode == 0
    assert sorted(p.name for p in tmp_path.rglob("*.db")) == ["steerboard.db"]
    assert (tmp_path / "elsewhere" / "steerboard.db").is_file()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_serve_and_user_add_see_the_demo_runs(tmp_path: Path, key_prefix: str) -> None:
    env = _env(STEERBOARD_KEY_PREFIX=key_prefix)
    # One run of two steps without the warm-up: seconds, and what matters here is where it is stored.
    demo = _cli(["demo", "--steps", "2", "--scheduler", "dump", "--port", str(free_port()), "--exit-when-done",
                 "--trainer-arg=--warmup-steps=0", "--trainer-arg=--n-prompts=4", "--trainer-arg=--eval-every=1"],
                tmp_path, env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    database = tmp_path / "steerboard-data" / "steerboard.db"
    assert f"database: sqlite:///{database}" in demo.stdout

    # The banner's advice, then the server: the demo's runs are there and alice logs in.
    add = _cli(["user", "add", "alice", "--role", "operator", "--password-stdin"], tmp_path, env,
               stdin="a long password\n")
    assert add.returncode == 0, add.stderr
    assert "alice\toperator" in _cli(["user", "list"], tmp_path, env).stdout
    port = free_port()
    serve = subprocess.Popen([sys.executable, "-m", "server", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        up = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not up:
            assert serve.poll() is None
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/api/runs").status_code == 401  # a user exists: viewing needs a login
            assert login(client, "alice", "wrong password").status_code == 401
            r = login(client, "alice", "a long password")
            assert r.status_code == 303 and r.headers["location"] == "/"
            runs = client.get("/api/runs").json()
            assert [(r["scheduler"], r["status"], r["last_step"]) for r in runs] == [("dump", "finished", 1)]
            page = client.get(f"/runs/{runs[0]['name']}")
            assert page.status_code == 200 and "alice" in page.text and "form" in page.text
    finally:
        serve.terminate()
        serve.wait(15)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.db")) == [database.relative_to(tmp_path)]
