"""Helpers of the page and browser tests: users, logins, runs, HTML parsing."""

from __future__ import annotations

from typing import Any

import httpx
import redis
from bs4 import BeautifulSoup

from server import auth
from server.db import make_engine, make_sessionmaker
from server.settings import Settings
from server.store import users
from tests.server.conftest import LiveServer, run_start, step_msg, wait_for, xadd

ARMS = ["kk3", "kk4", "kk5", "kk6"]


def soup(resp: httpx.Response) -> BeautifulSoup:
    return BeautifulSoup(resp.text, "html.parser")


def add_user(settings: Settings, name: str, role: str, password: str) -> None:
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            users.add_user(session, name, auth.hash_password(password), role)
            session.commit()
    finally:
        engine.dispose()


def add_viewer_and_operator(settings: Settings) -> None:
    """Users vera (viewer, "vera-pass-1") and omar (operator, "omar-pass-1")."""
    add_user(settings, "vera", "viewer", "vera-pass-1")
    add_user(settings, "omar", "operator", "omar-pass-1")


def add_token(settings: Settings, name: str, role: str) -> str:
    """A bearer token made as `steerboard token create` makes it; the secret."""
    secret, digest = auth.new_token()
    engine = make_engine(settings.database_url)
    try:
        with make_sessionmaker(engine)() as session:
            users.add_token(session, name, digest, role)
            session.commit()
    finally:
        engine.dispose()
    return secret


def csrf_of(client: httpx.Client, path: str = "/login") -> str:
    """The session's CSRF token, as every page carries it (meta tag; forms have the same)."""
    page = soup(client.get(path))
    meta = page.select_one('meta[name="csrf-token"]')
    assert meta is not None, f"no CSRF token on {path}"
    for field in page.select(f'input[name="{auth.CSRF_FIELD}"]'):
        assert field["value"] == meta["content"]
    return str(meta["content"])


def login(client: httpx.Client, name: str, password: str) -> httpx.Response:
    token = csrf_of(client)
    return client.post("/login", data={"name": name, "password": password, "csrf_token": token, "next": "/"})


def start_run(
    srv: LiveServer, rds: redis.Redis, settings: Settings, run: str, steps: int = 3, arms: list[str] | None = None,
    **start_extra: Any,
) -> None:
    arms = arms or ARMS
    msgs = [run_start(run, 1, arms, **start_extra), *(step_msg(run, s + 2, s, arms) for s in range(steps))]
    xadd(rds, settings, *msgs)
    wait_for(lambda: srv.client.get(f"/api/runs/{run}").status_code == 200
             and srv.client.get(f"/api/runs/{run}").json()["last_step"] == steps - 1)
