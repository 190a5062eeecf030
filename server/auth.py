"""Who is asking, and may they steer: sessions, bearer tokens, CSRF, local dev mode.

- Bearer tokens (scripts): `STEERBOARD_API_TOKEN` (an operator named STEERBOARD_API_TOKEN_NAME) or a
  token made by `steerboard token create` (stored as its SHA-256: tokens are 256 random bits, so a
  fast hash is enough; argon2 is for passwords people choose). Bearer requests need no CSRF token.
- Sessions (people): `steerboard user add` makes a user with an argon2id password hash; logging in
  stores the user name in the signed session cookie. Every POST from a cookie session must carry the
  session's CSRF token (form field `csrf_token` or header `X-CSRF-Token`).
- Local dev mode: with no user, no stored token and no STEERBOARD_API_TOKEN, every request from the
  loopback interface is an operator named "local" (the demo relies on this); pages say so.
- Viewing is open to everyone who can reach the server; steering needs an operator.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session
from starlette.requests import Request

from server.errors import CsrfFailed, Forbidden, InvalidRequest, Unauthorized
from server.settings import Settings
from server.store import users

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SESSION_USER = "user"
_SESSION_CSRF = "csrf"

_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class Principal:
    """The one making a request. `via` says how they were recognised."""

    name: str
    role: Literal["viewer", "operator"] | None
    via: Literal["session", "token", "local", "anonymous"]

    @property
    def can_steer(self) -> bool:
        return self.role == "operator"

    @property
    def logged_in(self) -> bool:
        return self.via == "session"


ANONYMOUS = Principal("anonymous", None, "anonymous")


def check_role(role: str) -> Literal["viewer", "operator"]:
    if role == "viewer":
        return "viewer"
    if role == "operator":
        return "operator"
    raise InvalidRequest(f"role must be one of {', '.join(ROLES)}, got {role!r}")


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise InvalidRequest("a password needs at least 8 characters")
    return _hasher.hash(password)


def new_token() -> tuple[str, str]:
    """A new bearer token and the digest to store."""
    token = "sb_" + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def auth_configured(session: Session, settings: Settings) -> bool:
    """False only in local dev mode (no user, no stored token, no STEERBOARD_API_TOKEN)."""
    return settings.api_token is not None or users.has_credentials(session)


def _is_loopback(request: Request) -> bool:
    return request.client is not None and request.client.host in LOOPBACK


def resolve(request: Request, session: Session, settings: Settings, bearer: str | None) -> Principal:
    """The principal of a request; a bearer token that matches nothing is refused (401)."""
    if bearer is not None:
        if settings.api_token is not None and hmac.compare_digest(
            bearer.encode(), settings.api_token.get_secret_value().encode()
        ):
            return Principal(settings.api_token_name, "operator", "token")
        row = users.token_by_hash(session, token_digest(bearer))
        if row is None:
            raise Unauthorized("that bearer token is not valid (Authorization: Bearer <token>)")
        return Principal(row.name, check_role(row.role), "token")
    name = request.session.get(_SESSION_USER)
    if isinstance(name, str):
        user = users.get_user(session, name)
        if user is not None:
            return Principal(user.name, check_role(user.role), "session")
        request.session.pop(_SESSION_USER, None)  # the user was removed: the login ends
    if not auth_configured(session, settings) and _is_loopback(request):
        return Principal("local", "operator", "local")
    return ANONYMOUS


def csrf_token(request: Request) -> str:
    """This session's CSRF token (created on first use)."""
    token = request.session.get(_SESSION_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[_SESSION_CSRF] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get(_SESSION_CSRF)
    if not submitted or not isinstance(expected, str) or not hmac.compare_digest(submitted, expected):
        raise CsrfFailed("this form is missing its CSRF token or it has expired; reload the page and try again")


def require_operator(principal: Principal) -> None:
    if principal.can_steer:
        return
    if principal.role is None:
        raise Unauthorized("steering needs a login (or a bearer token: Authorization: Bearer <token>)")
    raise Forbidden(f"{principal.name} is a viewer; steering needs an operator")


def login(request: Request, session: Session, name: str, password: str) -> Principal:
    """Check the password and start a session (with a fresh CSRF token)."""
    user = users.get_user(session, name)
    try:
        ok = _hasher.verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None:
        raise Unauthorized("wrong user name or password")
    if _hasher.check_needs_rehash(user.password_hash):
        users.set_password(session, user.name, _hasher.hash(password))
        session.commit()
    request.session.clear()  # nothing from before the login carries over (CSRF token included)
    request.session[_SESSION_USER] = user.name
    csrf_token(request)
    log.info("login: %s (%s)", user.name, user.role)
    return Principal(user.name, check_role(user.role), "session")


def logout(request: Request) -> None:
    request.session.clear()


def session_secret(settings: Settings) -> str:
    """The key that signs session cookies; a random one per process when none is configured."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    log.warning(
        "STEERBOARD_SECRET_KEY is unset: using a random key for this process (logins end on restart "
        "and are not shared between web processes); set it in production"
    )
    return secrets.token_urlsafe(32)
