"""Fixtures of the page tests: the server's (real Redis, migrated SQLite, the app over HTTP), and
HTTP clients with cookie jars of their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import (  # noqa: F401 (fixtures used by the tests here)
    app_server,
    db_url,
    empty_db,
    make_server,
    prefix,
    rds,
    settings,
)


@pytest.fixture
def client_for(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Make new HTTP clients (each with its own cookie jar) on the app server."""
    srv = request.getfixturevalue("app_server")
    made: list[httpx.Client] = []

    def make() -> httpx.Client:
        c = httpx.Client(base_url=srv.url, timeout=20)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()
