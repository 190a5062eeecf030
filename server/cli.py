"""The `steerboard` command line."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from server.errors import SchemaOutOfDate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="steerboard")
def main() -> None:
    """Steerboard: see and steer the data curriculum of GRPO-style RL post-training."""


# ---------------------------------------------------------------------------------------------------
# Helpers shared by the server commands
# ---------------------------------------------------------------------------------------------------


def _settings(**overrides: Any) -> Any:
    from pydantic import ValidationError

    from server.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise click.ClickException(f"invalid settings: {e}") from e


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _friendly_errors(settings: Any) -> Iterator[None]:
    """Turn the failures a person can fix (schema, unreachable services) into one clear line."""
    import redis
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError

    try:
        yield
    except SchemaOutOfDate as e:
        raise click.ClickException(e.message) from e
    except (DBAPIError, NoSuchModuleError) as e:
        first = str(getattr(e, "orig", e) or e).strip().splitlines()[0]
        raise click.ClickException(
            f"cannot use the database at {_safe_url(settings.database_url)}: {first}"
        ) from e
    except redis.RedisError as e:
        raise click.ClickException(f"cannot reach Redis at {settings.redis_url}: {e}") from e


def _preflight(settings: Any) -> Any:
    """Check SQL (reachable, schema current) and Redis before starting; return the engine."""
    import redis

    from server.db import make_engine, require_current_schema

    engine = make_engine(settings.database_url)
    require_current_schema(engine, settings.database_url)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()
    return engine


# ---------------------------------------------------------------------------------------------------
# steerboard db ...
# ---------------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from alembic import command

    from server.db import alembic_config

    settings = _settings(database_url=database_url)
    _logging(settings.log_level)
    with _friendly_errors(settings):
        command.upgrade(alembic_config(settings.database_url), revision)
    click.echo(f"database at {_safe_url(settings.database_url)} is at {revision}")


@db.command("current")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def db_current(database_url: str | None) -> None:
    """Show the schema revision of the database and the one this version needs."""
    from server.db import current_revision, head_revision, make_engine

    settings = _settings(database_url=database_url)
    with _friendly_errors(settings):
        engine = make_engine(settings.database_url)
        try:
            current = current_revision(engine)
        finally:
            engine.dispose()
    head = head_revision(settings.database_url)
    state = "up to date" if current == head else "out of date: run `steerboard db upgrade`"
    click.echo(f"current: {current or '(empty)'}\nhead:    {head}\n{state}")


# ---------------------------------------------------------------------------------------------------
# steerboard serve / worker
# ---------------------------------------------------------------------------------------------------


@main.command()
@click.option("--host", help="bind address (default 127.0.0.1; STEERBOARD_HOST)")
@click.option("--port", type=int, help="port (default 8000; STEERBOARD_PORT)")
@click.option("--no-ingest", is_flag=True, help="web only: run no ingest worker in this process")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--redis-url", help="defaults to STEERBOARD_REDIS_URL")
def serve(
    host: str | None, port: int | None, no_ingest: bool, database_url: str | None, redis_url: str | None
) -> None:
    """Run the web server (JSON API, SSE) with an in-process ingest worker."""
    import uvicorn

    from server.app import create_app

    settings = _settings(host=host, port=port, database_url=database_url, redis_url=redis_url)
    _logging(settings.log_level)
    with _friendly_errors(settings):
        _preflight(settings).dispose()
    app = create_app(settings, ingest=not no_ingest)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())


@main.command()
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--redis-url", help="defaults to STEERBOARD_REDIS_URL")
def worker(database_url: str | None, redis_url: str | None) -> None:
    """Run one ingest worker (Redis stream to SQL). Start several to share the load."""
    import redis

    from server.ingest import IngestWorker

    settings = _settings(database_url=database_url, redis_url=redis_url)
    _logging(settings.log_level)
    with _friendly_errors(settings):
        engine = _preflight(settings)
        client = redis.Redis.from_url(settings.redis_url, decode_responses=False)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            IngestWorker(settings, engine, client).run(stop)
        finally:
            client.close()
            engine.dispose()
