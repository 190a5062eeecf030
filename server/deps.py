"""FastAPI dependencies, declared as `Annotated` aliases used in route signatures."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from server import auth
from server.auth import Principal
from server.errors import InvalidRequest, Unauthorized
from server.live import LiveHub
from server.settings import Settings
from trainer_agent.protocol import MAX_STEP

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    description="STEERBOARD_API_TOKEN or a token from `steerboard token create`; needed to steer when auth is on",
)


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_sessionmaker(request: Request) -> sessionmaker[Session]:
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    return maker


def get_session(request: Request) -> Iterator[Session]:
    with get_sessionmaker(request)() as session:
        yield session


def get_redis(request: Request) -> redis.Redis:
    client: redis.Redis = request.app.state.redis
    return client


def get_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.hub
    return hub


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionMakerDep = Annotated[sessionmaker[Session], Depends(get_sessionmaker)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]
HubDep = Annotated[LiveHub, Depends(get_hub)]


def get_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Who is asking (see server.auth): a bearer token, a logged-in person, local dev mode, or anonymous."""
    principal = auth.resolve(request, session, settings, credentials.credentials if credentials else None)
    release(session)
    return principal


def release(session: Session) -> None:
    """End the session's transaction so its connection goes back to the pool between dependencies.

    Each sync dependency runs on its own trip to the thread pool; a connection held from one trip to the
    next deadlocks a burst of requests (300 SSE viewers connecting at once): every pool thread waits for a
    connection while the requests holding the pool's 15 wait for a thread. A later query opens a new one.
    """
    session.commit()


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def reject_invalid_bearer(request: Request, session: SessionDep, settings: SettingsDep) -> None:
    """On every route: an Authorization header must be a valid bearer token (401 otherwise), never
    ignored and taken as anonymous. Requests without one touch no database here."""
    header = request.headers.get("authorization")
    if header is None:
        return
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be `Bearer <token>`")
    try:
        auth.bearer_principal(session, settings, token.strip())
    finally:
        release(session)


def get_reader(request: Request, principal: PrincipalDep, session: SessionDep, settings: SettingsDep) -> Principal:
    """Someone allowed to view: a viewer or operator once logins are in force (server.auth)."""
    try:
        auth.require_reader(request, principal, session, settings)
    finally:
        release(session)
    return principal


Reader = Annotated[Principal, Depends(get_reader)]


def get_operator(request: Request, principal: PrincipalDep) -> str:
    """The actor allowed to steer through the JSON API, recorded in the audit log.

    A bearer token (STEERBOARD_API_TOKEN, named STEERBOARD_API_TOKEN_NAME, or one made with
    `steerboard token create`) needs no CSRF token; a cookie session must send its CSRF token in
    the X-CSRF-Token header. Viewers get 403, nobody 401. In local dev mode (no user, no token)
    loopback clients steer as "api".
    """
    if principal.via == "session":
        auth.check_csrf(request, request.headers.get(auth.CSRF_HEADER))
    auth.require_operator(principal)
    return "api" if principal.via == "local" else principal.name


Operator = Annotated[str, Depends(get_operator)]


async def get_page_operator(request: Request, principal: PrincipalDep) -> Principal:
    """An operator posting a page form: the CSRF token (form field or header) is always required."""
    submitted = request.headers.get(auth.CSRF_HEADER)
    if not submitted:
        form = await request.form()  # Starlette caches it; the route's Form() fields read the same
        value = form.get(auth.CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    auth.check_csrf(request, submitted)
    auth.require_operator(principal)
    return principal


PageOperator = Annotated[Principal, Depends(get_page_operator)]


# Query parameters the chart routes take alike: a range of steps (bounded by their 32-bit column) and
# the arms to show.
FirstStep = Annotated[int | None, Query(ge=0, le=MAX_STEP, description="first step (inclusive)")]
LastStep = Annotated[int | None, Query(ge=0, le=MAX_STEP, description="last step (inclusive)")]
ArmList = Annotated[str | None, Query(max_length=100_000, description="comma-separated arm names; all arms if omitted")]


def check_step_range(start: int | None, end: int | None) -> None:
    """Refuse (InvalidRequest) a step range that ends before it starts."""
    if start is not None and end is not None and end < start:
        raise InvalidRequest(f"end ({end}) is before start ({start})")


def arm_names(arms: str | None) -> list[str] | None:
    """The names of an ArmList parameter; None (every arm) when it names none."""
    return [a.strip() for a in arms.split(",") if a.strip()] if arms else None
