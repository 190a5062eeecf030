"""`steerboard user ...` / `steerboard token ...`, bearer tokens on the JSON API, secret-key checks."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import redis
from pydantic import SecretStr

from server.settings import Settings
from tests.server.conftest import ROOT, LiveServer, cli_env

from .helpers import login, soup, start_run


def cli(args: list[str], settings: Settings, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], env=cli_env(settings), cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=60,
    )


def test_user_and_token_commands(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "cli-auth")
    r = cli(["user", "add", "ana", "--role", "operator", "--password-stdin"], settings, "ana-secret-pw\n")
    assert (r.returncode, r.stdout) == (0, "user ana added (operator)\n"), r.stderr
    r = cli(["user", "add", "ana", "--role", "viewer", "--password-stdin"], settings, "another-pw\n")
    assert r.returncode == 1 and "a user named 'ana' already exists" in r.stderr
    r = cli(["user", "add", "bo", "--role", "viewer", "--password-stdin"], settings, "short\n")
    assert r.returncode == 1 and "at least 8 characters" in r.stderr
    r = cli(["user", "add", "bo", "--role", "admin", "--password-stdin"], settings, "long-enough\n")
    assert r.returncode == 2 and "admin" in r.stderr
    r = cli(["user", "list"], settings)
    assert [line.split("\t")[:2] for line in r.stdout.splitlines()] == [["ana", "operator"]]

    with httpx.Client(base_url=app_server.url) as c:
        assert login(c, "ana", "ana-secret-pw").status_code == 303
        assert soup(c.get("/")).select_one(".who .user")["data-role"] == "operator"

    op = cli(["token", "create", "ci-bot", "--role", "operator"], settings)
    assert op.returncode == 0
    op_token = op.stdout.strip()
    assert op_token.startswith("sb_") and len(op_token) > 40
    view = cli(["token", "create", "dash", "--role", "viewer"], settings).stdout.strip()
    r = cli(["token", "list"], settings)
    assert [line.split("\t")[:2] for line in r.stdout.splitlines()] == [["ci-bot", "operator"], ["dash", "viewer"]]
    assert op_token not in r.stdout

    body = {"kind": "release", "arm": "kk3"}
    c = app_server.client
    r = c.post("/api/runs/cli-auth/commands", json=body)
    assert r.status_code == 401  # users exist: no more local dev mode
    r = c.post("/api/runs/cli-auth/commands", json=body, headers={"Authorization": f"Bearer {view}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = c.post("/api/runs/cli-auth/commands", json=body, headers={"Authorization": "Bearer sb_nope"})
    assert r.status_code == 401
    # Bearer requests need no CSRF token.
    r = c.post("/api/runs/cli-auth/commands", json=body, headers={"Authorization": f"Bearer {op_token}"})
    assert r.status_code == 202
    assert c.get("/api/runs/cli-auth/commands", headers={"Authorization": f"Bearer {view}"}).json()[0]["actor"] \
        == "ci-bot"

    assert cli(["token", "revoke", "ci-bot"], settings).returncode == 0
    r = c.post("/api/runs/cli-auth/commands", json=body, headers={"Authorization": f"Bearer {op_token}"})
    assert r.status_code == 401
    assert cli(["user", "remove", "ana"], settings).returncode == 0
    assert cli(["user", "remove", "ana"], settings).returncode == 1


@pytest.mark.parametrize("secret", ["changeme", "secret-key", "aaaaaaaaaaaaaaaaaaaa", "short-but-real"])
def test_placeholder_or_short_secret_keys_are_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="STEERBOARD_SECRET_KEY"):
        Settings(secret_key=SecretStr(secret), _env_file=None)  # type: ignore[call-arg]


def test_a_real_secret_key_is_accepted() -> None:
    s = Settings(secret_key=SecretStr("Zk3v9-QpL2x_8rTn4WmYc7"), _env_file=None)  # type: ignore[call-arg]
    assert s.secret_key is not None
