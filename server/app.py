"""The FastAPI application: lifespan (engine, sessions, Redis, live hub, ingest), errors, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from server.db import make_engine, make_sessionmaker, require_current_schema
from server.errors import SteerboardError, http_status
from server.live import LiveHub
from server.routes import commands, events, health, runs
from server.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status)


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """One place maps errors to HTTP statuses; bad input never becomes a 500."""

    @app.exception_handler(SteerboardError)
    async def _steerboard_error(_: Request, exc: SteerboardError) -> JSONResponse:
        return _error(http_status(exc), exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return _error(422, "invalid_request", _validation_message(exc), {"errors": errors})

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        # Connection lost, server down, lock timeout: transient, unlike other database errors.
        log.warning("database unavailable: %s", exc)
        return _error(503, "service_unavailable", "the database is unavailable; try again shortly")

    @app.exception_handler(redis.RedisError)
    async def _redis_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error: %s", exc)
        return _error(503, "service_unavailable", "Redis is unavailable; try again shortly")


def create_app(settings: Settings | None = None, ingest: bool = False) -> FastAPI:
    """Build the app. With `ingest`, the lifespan also runs an ingest worker thread."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        try:
            require_current_schema(engine, settings.database_url)
        except BaseException:
            engine.dispose()
            raise
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = make_sessionmaker(engine)
        app.state.redis = redis.Redis.from_url(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10, decode_responses=False
        )
        hub = LiveHub(settings)
        app.state.hub = hub
        await hub.start()
        if settings.api_token is None:
            log.warning("STEERBOARD_API_TOKEN is unset: local dev mode, anyone who reaches the server may steer")
        stop = thread = None
        if ingest:
            from server.ingest import start_thread

            thread, stop = start_thread(settings, engine)
        try:
            yield
        finally:
            if stop is not None and thread is not None:
                stop.set()
                thread.join(timeout=10)
            await hub.stop()
            app.state.redis.close()
            engine.dispose()

    app = FastAPI(
        title="Steerboard",
        summary="See and steer the data curriculum of GRPO-style RL post-training, live.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (runs, commands, events, health):
        app.include_router(module.router)
    return app
