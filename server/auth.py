"""Who is asking, and what may they do: sessions, bearer tokens, CSRF, local dev mode, reading.

- Bearer tokens (scripts): `STEERBOARD_API_TOKEN` (an operator named STEERBOARD_API_TOKEN_NAME) or a
  token made by `steerboard token create` (stored as its SHA-256: tokens are 256 random bits, so a
  fast hash is enough; argon2 is for passwords people choose). Bearer requests need no CSRF token.
  A bearer token that matches nothing is refused (401) on every route, never taken as anonymous.
- Sessions (people): `steerboard user add` makes a user with an argon2id password hash. Logging in
  makes a `user_sessions` row; the signed cookie carries a random token whose SHA-256 is that row's
  key. Logging out, `steerboard user logout`, a password change, disabling or removing the user delete
  rows, ending those logins at the next request; the role is read from `users` on every request.
  Every POST from a cookie session must carry the session's CSRF token (form field `csrf_token` or
  header `X-CSRF-Token`). At most STEERBOARD_PASSWORD_HASH_CONCURRENCY password checks run at once
  (argon2 takes 64 MiB each); failed logins are throttled by server.throttle.
- Local dev mode: every request from the loopback interface is an operator named "local" (the demo
  relies on this). STEERBOARD_DEV_MODE=auto (the default) turns it on only while the server has never
  had a credential (no user or token was ever made and STEERBOARD_API_TOKEN never served): the first
  one ends it for good, and revoking the last one leaves nobody able to steer until a user or token
  is made. `on` keeps it on (logins still work), `off` keeps it off. Pages show a banner while it is on.
- Reading (pages, the JSON API, CSV, SSE, dead letters) needs a viewer once logins are in force
  (a credential was ever seen), unless STEERBOARD_PUBLIC_READ is on; steering always needs an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session
from starlette.requests import Request

from server.db import SQLITE_IMMEDIATE
from server.errors import CsrfFailed, Forbidden, InvalidRequest, ServiceUnavailable, Unauthorized
from server.logsafe import printable
from server.settings import Settings
from server.store import users
from server.store.sql import utcnow
from trainer_agent.protocol import arm_name_problem

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator")
NAME_MAX = 128  # users.name, api_tokens.name
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SESSION_TOKEN = "sid"
_SESSION_CSRF = "csrf"
# A session's last_seen_at is written at most this often (a write per request would contend with ingest).
_TOUCH_EVERY_S = 60.0

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


def check_name(name: str, what: str) -> str:
    """A user or token name: 1 to 128 characters, not blank, no control characters (it is logged and shown)."""
    problem = arm_name_problem(name)
    if problem is None and len(name) > NAME_MAX:
        problem = f"arm name is {len(name)} characters long; at most {NAME_MAX} are allowed"
    if problem is not None:
        raise InvalidRequest(problem.replace("arm name", f"{what} name"))
    return name


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


def logins_in_force(session: Session, settings: Settings, request: Request | None = None) -> bool:
    """Whether a credential was ever seen (a user or token made, STEERBOARD_API_TOKEN served). Once true
    it stays true (remembered per app: it never goes back)."""
    state = request.app.state if request is not None else None
    if state is not None and getattr(state, "logins_in_force", False):
        return True
    seen = settings.api_token is not None or users.credentials_seen(session)
    if seen and state is not None:
        state.logins_in_force = True
    return seen


def dev_mode(session: Session, settings: Settings, request: Request | None = None) -> bool:
    """Whether loopback clients steer without a login (STEERBOARD_DEV_MODE; module docstring)."""
    if settings.dev_mode != "auto":
        return settings.dev_mode == "on"
    return not logins_in_force(session, settings, request)


def _is_loopback(request: Request) -> bool:
    return request.client is not None and request.client.host in LOOPBACK


def bearer_principal(session: Session, settings: Settings, bearer: str) -> Principal:
    """The principal of a bearer token; 401 when it matches nothing."""
    if settings.api_token is not None and hmac.compare_digest(
        bearer.encode(), settings.api_token.get_secret_value().encode()
    ):
        return Principal(settings.api_token_name, "operator", "token")
    row = users.token_by_hash(session, token_digest(bearer))
    if row is None:
        raise Unauthorized("that bearer token is not valid (Authorization: Bearer <token>)")
    return Principal(row.name, check_role(row.role), "token")


def _writing(session: Session) -> None:
    """Begin a write transaction: end the request's read transaction first and, on SQLite, take the write
    lock at BEGIN (a read transaction that later writes fails at once with "database is locked" when the
    ingest worker committed in between; server.steering does the same)."""
    session.commit()
    session.connection(execution_options={SQLITE_IMMEDIATE: True})


def _session_principal(request: Request, session: Session) -> Principal | None:
    token = request.session.get(_SESSION_TOKEN)
    if not isinstance(token, str):
        return None
    live = users.session_user(session, token_digest(token))
    if live is None:  # logged out elsewhere, expired, disabled or removed: the login ends
        request.session.pop(_SESSION_TOKEN, None)
        return None
    if (utcnow() - live.last_seen_at).total_seconds() > _TOUCH_EVERY_S:
        _writing(session)
        users.touch_session(session, live.session_id)
        session.commit()
    return Principal(live.name, check_role(live.role), "session")


def resolve(request: Request, session: Session, settings: Settings, bearer: str | None) -> Principal:
    """The principal of a request; a bearer token that matches nothing is refused (401)."""
    if bearer is not None:
        return bearer_principal(session, settings, bearer)
    person = _session_principal(request, session)
    if person is not None:
        return person
    request.state.dev_mode = dev_mode(session, settings, request)  # pages show a banner while it is on
    if request.state.dev_mode and _is_loopback(request):
        return Principal("local", "operator", "local")
    return ANONYMOUS


def require_reader(request: Request, principal: Principal, session: Session, settings: Settings) -> None:
    """Viewing needs a viewer once logins are in force, unless STEERBOARD_PUBLIC_READ is on."""
    if principal.role is not None or settings.public_read or not logins_in_force(session, settings, request):
        return
    raise Unauthorized("viewing needs a login (or a bearer token: Authorization: Bearer <token>)")


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


def _hash_limiter(request: Request, settings: Settings) -> anyio.CapacityLimiter:
    """The app's password-check slots (argon2id takes 64 MiB per check: a burst of guesses must not take the
    server's memory). A login waiting for a slot waits in the event loop, holding no worker thread, so
    other requests keep their threads."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "hash_limiter", None)
    if limiter is None:
        limiter = state.hash_limiter = anyio.CapacityLimiter(settings.password_hash_concurrency)
    return limiter


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def login_candidate(session: Session, name: str) -> users.UserRow | None:
    """The user a login names, if it exists and is enabled."""
    user = users.get_user(session, name)
    return user if user is not None and user.disabled_at is None else None


async def check_password(request: Request, settings: Settings, user: users.UserRow | None, password: str) -> bool:
    """Whether `password` is the user's; at most STEERBOARD_PASSWORD_HASH_CONCURRENCY checks run at once,
    and a check that waits longer than STEERBOARD_PASSWORD_HASH_WAIT_S for its turn is a 503. A missing or
    disabled user costs a check too, so the answer's timing does not tell them apart."""
    limiter = _hash_limiter(request, settings)
    try:
        with anyio.fail_after(settings.password_hash_wait_s):
            await limiter.acquire()
    except TimeoutError as e:
        raise ServiceUnavailable("the server is busy checking other logins; try again in a few seconds") from e
    try:
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(_hash_pool(settings.password_hash_concurrency), _verify,
                                        user.password_hash if user else _DUMMY_HASH, password)
    finally:
        limiter.release()
    return ok and user is not None


_pools_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


def _lower_priority() -> None:
    """Password checks run at a lower CPU priority (nice 10, per thread on Linux; argon2's lane threads
    inherit it), so a burst of guesses leaves the CPU to the requests of people already logged in."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _hash_pool(n: int) -> ThreadPoolExecutor:
    """The process's own threads for password checks (never the request threads, which they would slow)."""
    with _pools_lock:
        pool = _pools.get(n)
        if pool is None:
            pool = _pools[n] = ThreadPoolExecutor(n, thread_name_prefix="password-check", initializer=_lower_priority)
        return pool


def start_session(request: Request, session: Session, settings: Settings, user: users.UserRow,
                  password: str) -> Principal:
    """Start a server-side session for a user whose password was checked (with a fresh CSRF token)."""
    _writing(session)
    if _hasher.check_needs_rehash(user.password_hash):
        users.set_password(session, user.name, _hasher.hash(password), end_sessions=False)
    token = secrets.token_urlsafe(32)
    address = request.client.host if request.client is not None else None
    users.add_session(session, user.name, token_digest(token), settings.session_max_age_s, address,
                      request.headers.get("user-agent"))
    session.commit()
    request.session.clear()  # nothing from before the login carries over (CSRF token included)
    request.session[_SESSION_TOKEN] = token
    csrf_token(request)
    log.info("login: %s (%s) from %s", printable(user.name), user.role, printable(address or "?"))
    return Principal(user.name, check_role(user.role), "session")


def logout(request: Request, session: Session) -> None:
    """End the session on the server (a copy of the cookie no longer works) and clear the cookie."""
    token = request.session.get(_SESSION_TOKEN)
    if isinstance(token, str):
        _writing(session)
        users.end_session(session, token_digest(token))
        session.commit()
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
