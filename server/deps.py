"""FastAPI dependencies, declared as `Annotated` aliases used in route signatures."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from server.errors import Unauthorized
from server.live import LiveHub
from server.settings import Settings

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="STEERBOARD_API_TOKEN, needed to steer when it is set")


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


def get_operator(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The actor allowed to steer, recorded in the audit log.

    With STEERBOARD_API_TOKEN set, a matching bearer token is required and the actor is the
    token's name (STEERBOARD_API_TOKEN_NAME). Unset, the server is in local dev mode: everyone may
    steer, as "api" (the app logs this at startup). Session logins and roles come later.
    """
    if settings.api_token is None:
        return "api"
    expected = settings.api_token.get_secret_value().encode()
    if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("steering needs a valid bearer token (Authorization: Bearer <STEERBOARD_API_TOKEN>)")
    return settings.api_token_name


Operator = Annotated[str, Depends(get_operator)]
