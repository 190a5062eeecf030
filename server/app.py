"""The FastAPI application: lifespan (engine, sessions, Redis, live hub, ingest), errors, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.middleware.sessions import SessionMiddleware

import trainer_agent
from server import auth, web
from server.db import make_engine, make_sessionmaker, require_current_schema
from server.errors import (
    CommandConflict,
    Conflict,
    CsrfFailed,
    Forbidden,
    InvalidCommand,
    InvalidRequest,
    NotFound,
    RunNotFound,
    SchemaOutOfDate,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
)
from server.live import LiveHub
from server.routes import assets, commands, events, exports, health, login, manage, manage_pages, pages, runs
from server.settings import Settings, get_settings

log = logging.getLogger(__name__)

# The HTTP status of each error code, in one place.
STATUS: dict[str, int] = {
    NotFound.code: 404,
    RunNotFound.code: 404,
    InvalidRequest.code: 422,
    InvalidCommand.code: 422,
    CommandConflict.code: 409,
    Unauthorized.code: 401,
    Forbidden.code: 403,
    CsrfFailed.code: 403,
    Conflict.code: 409,
    ServiceUnavailable.code: 503,
    SchemaOutOfDate.code: 503,
}


def http_status(err: ServerError) -> int:
    """The HTTP status for an error, by its code (500 only for codes never mapped)."""
    return STATUS.get(err.code, 500)


def _is_page(request: Request) -> bool:
    """A request for an HTML page or fragment (errors answer in HTML), not the JSON API."""
    path = request.url.path
    return not (path.startswith("/api/") or path == "/healthz" or path.startswith("/static/"))


def _error(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, request: Request | None = None
) -> Response:
    if request is not None and _is_page(request):
        return _page_error(request, status, code, message)
    body = {"error": {"code": code, "message": message, "details": details or {}}}
    return JSONResponse(body, status_code=status)


def _page_error(request: Request, status: int, code: str, message: str) -> Response:
    if status == 401 and request.method == "GET" and not web.is_htmx(request):
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    # No database access here: the error may be that the database is down.
    principal = auth.ANONYMOUS if status >= 500 else _principal_or_anonymous(request)
    template = "_error.html" if web.is_htmx(request) else "error.html"
    ctx = {"status": status, "code": code, "message": message}
    return web.render(request, template, principal, ctx, status_code=status)


def _principal_or_anonymous(request: Request) -> auth.Principal:
    try:
        with request.app.state.sessionmaker() as session:
            return auth.resolve(request, session, request.app.state.settings, None)
    except Exception:  # showing the error matters more than knowing who asked
        return auth.ANONYMOUS


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """One place maps errors to HTTP statuses; bad input never becomes a 500."""

    @app.exception_handler(ServerError)
    def _server_error(request: Request, exc: ServerError) -> Response:
        return _error(http_status(exc), exc.code, exc.message, exc.details, request)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return _error(422, "invalid_request", _validation_message(exc), {"errors": errors}, request)

    @app.exception_handler(OperationalError)
    def _db_down(request: Request, exc: OperationalError) -> Response:
        # Connection lost, server down, lock timeout: transient, unlike other database errors.
        log.warning("database unavailable: %s", exc)
        return _error(503, "service_unavailable", "the database is unavailable; try again shortly", None, request)

    @app.exception_handler(redis.RedisError)
    def _redis_down(request: Request, exc: redis.RedisError) -> Response:
        log.warning("redis error: %s", exc)
        return _error(503, "service_unavailable", "Redis is unavailable; try again shortly", None, request)


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
        with app.state.sessionmaker() as session:
            if not auth.auth_configured(session, settings):
                log.warning(
                    "no user, no API token: local dev mode, anyone on 127.0.0.1 may steer "
                    "(`steerboard user add NAME --role operator` turns logins on)"
                )
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
        version=trainer_agent.__version__,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        SessionMiddleware,
        secret_key=auth.session_secret(settings),
        session_cookie="steerboard_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.session_https_only,
    )
    for module in (runs, manage, commands, events, exports, health, assets, login, pages, manage_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR, check_dir=False), name="static")
    return app
