"""The FastAPI application: lifespan (engine, sessions, Redis, live hub, ingest), errors, routers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import redis
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import trainer_agent
from server import auth, security, web
from server.db import make_engine, make_sessionmaker, require_current_schema
from server.deps import get_reader, reject_invalid_bearer
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
    TooManyRequests,
    Unauthorized,
)
from server.live import LiveHub
from server.logsafe import printable
from server.redis_clients import sync_client
from server.routes import (
    assets,
    commands,
    diagnoses,
    events,
    exports,
    health,
    login,
    manage,
    manage_pages,
    metrics,
    pages,
    runs,
    scheduler,
    warmstart,
)
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
    TooManyRequests.code: 429,
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


def _retry_after(details: dict[str, Any] | None) -> dict[str, str] | None:
    wait = (details or {}).get("retry_after")
    return {"Retry-After": str(int(wait))} if isinstance(wait, int | float) else None


def _page_error(request: Request, status: int, code: str, message: str) -> Response:
    if status == 401 and request.method == "GET" and not web.is_htmx(request):
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
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
        response = _error(http_status(exc), exc.code, exc.message, exc.details, request)
        response.headers.update(_retry_after(exc.details) or {})
        return response

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()
        ]
        return _error(422, "invalid_request", _validation_message(exc), {"errors": errors}, request)

    @app.exception_handler(OperationalError)
    def _db_down(request: Request, exc: OperationalError) -> Response:
        # Connection lost, server down, lock timeout: transient, unlike other database errors.
        log.warning("database unavailable: %s", printable(exc))
        return _error(503, "service_unavailable", "the database is unavailable; try again shortly", None, request)

    @app.exception_handler(redis.RedisError)
    def _redis_down(request: Request, exc: redis.RedisError) -> Response:
        log.warning("redis error: %s", printable(exc))
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
        app.state.redis = sync_client(
            settings.redis_url, socket_connect_timeout=2, socket_timeout=10, decode_responses=False
        )
        hub = LiveHub(settings)
        app.state.hub = hub
        await hub.start()
        with app.state.sessionmaker() as session:
            _log_auth_mode(session, settings)
        stop = thread = None
        if ingest:
            from server.ingest import start_thread

            thread, stop = start_thread(settings, engine)
        alert_stop = alert_thread = None
        if settings.alert_webhook_url is not None:
            from server import alerts
            from server.ingest import consumer_name

            alert_thread, alert_stop = alerts.start_thread(settings, engine, consumer_name())
        try:
            yield
        finally:
            for ev, th in ((stop, thread), (alert_stop, alert_thread)):
                if ev is not None and th is not None:
                    ev.set()
                    th.join(timeout=10)
            await hub.stop()
            app.state.redis.close()
            engine.dispose()

    app = FastAPI(
        title="Steerboard",
        summary="See and steer the data curriculum of GRPO-style RL post-training, live.",
        version=trainer_agent.__version__,
        lifespan=lifespan,
        dependencies=[Depends(reject_invalid_bearer)],
        # /docs is served from the package's own Swagger UI (routes/assets.py): FastAPI's loads a CDN.
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    # Last added runs first: forwarded headers (trusted proxies only), then the Host check and security
    # headers, then the session cookie.
    app.add_middleware(
        SessionMiddleware,
        secret_key=auth.session_secret(settings),
        session_cookie="steerboard_session",
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.session_https_only,
    )
    app.add_middleware(
        security.SecurityMiddleware, hosts=security.allowed_hosts(settings.host, settings.allowed_hosts)
    )
    if settings.forwarded_allow_ips.strip():
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)
    readers = [Depends(get_reader)]
    for module in (runs, metrics, warmstart, manage, commands, scheduler, diagnoses, events, exports, pages,
                   manage_pages):
        app.include_router(module.router, dependencies=readers)
    for module in (health, assets, login):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR, check_dir=False), name="static")
    return app


def _log_auth_mode(session: Any, settings: Settings) -> None:
    """Say at start who may do what without a login (server.auth)."""
    if settings.api_token is not None:
        from server.store import users

        users.mark_credentials_seen(session, "STEERBOARD_API_TOKEN")
        session.commit()
    if auth.dev_mode(session, settings):
        why = "STEERBOARD_DEV_MODE=on" if settings.dev_mode == "on" else "this server has never had a user or token"
        log.warning(
            "local dev mode (%s): anyone on 127.0.0.1 may steer without a login; `steerboard user add NAME "
            "--role operator` ends it for good", why,
        )
    elif auth.logins_in_force(session, settings):
        from server.store import users

        if not users.has_credentials(session) and settings.api_token is None:
            log.warning("every user and token has been removed: nobody can steer or view until "
                        "`steerboard user add NAME --role operator` (dev mode stays off)")
    if settings.public_read:
        log.warning("STEERBOARD_PUBLIC_READ: anyone who reaches this server may view every run")
