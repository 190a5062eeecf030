"""All SQL of authentication: users (people who log in), their sessions (user_sessions), api_tokens
(bearer tokens for scripts), and whether any credential has ever existed (server_state).

Password hashing and token generation live in `server.auth`; this module stores and reads what it
is given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.errors import Conflict
from server.models import ApiToken, ServerState, User, UserSession
from server.store.sql import utcnow

CREDENTIALS_SEEN = "credentials_seen"


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    role: str
    password_hash: str
    created_at: dt.datetime
    disabled_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class SessionUser:
    """A live session and its user, as one request sees them."""

    session_id: int
    name: str
    role: str
    last_seen_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: int
    user: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    address: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class TokenRow:
    name: str
    role: str
    created_at: dt.datetime


def has_credentials(session: Session) -> bool:
    """Whether any user or API token exists now."""
    return (
        session.scalar(select(User.id).limit(1)) is not None
        or session.scalar(select(ApiToken.id).limit(1)) is not None
    )


def credentials_seen(session: Session) -> bool:
    """Whether a user or token has ever existed (or STEERBOARD_API_TOKEN was ever served): set once, never
    cleared, so removing the last credential does not reopen local dev mode."""
    return session.get(ServerState, CREDENTIALS_SEEN) is not None


def mark_credentials_seen(session: Session, how: str) -> None:
    if session.get(ServerState, CREDENTIALS_SEEN) is None:
        session.add(ServerState(key=CREDENTIALS_SEEN, value=how, updated_at=utcnow()))
        try:
            session.flush()
        except IntegrityError:  # another process wrote it first
            session.rollback()


def _add_named(session: Session, row: User | ApiToken, what: str, name: str) -> None:
    """Insert a user or a token; Conflict when the name is taken. The first one ends dev mode for good."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as e:
        session.rollback()
        raise Conflict(f"a {what} named {name!r} already exists", name=name) from e
    mark_credentials_seen(session, f"{what} {name}")


def add_user(session: Session, name: str, password_hash: str, role: str) -> None:
    _add_named(session, User(name=name, password_hash=password_hash, role=role, created_at=utcnow()), "user", name)


def _user(session: Session, name: str) -> User | None:
    return session.scalars(select(User).where(User.name == name)).one_or_none()


def _row(u: User) -> UserRow:
    return UserRow(u.name, u.role, u.password_hash, u.created_at, u.disabled_at)


def set_password(session: Session, name: str, password_hash: str, end_sessions: bool = True) -> bool:
    """A new password hash; unless told otherwise (a rehash at login), every session of the user ends."""
    user = _user(session, name)
    if user is None:
        return False
    user.password_hash = password_hash
    if end_sessions:
        end_user_sessions(session, name)
    session.flush()
    return True


def set_role(session: Session, name: str, role: str) -> bool:
    """Takes effect at the user's next request (sessions read the role from here)."""
    res = session.execute(update(User).where(User.name == name).values(role=role))
    return bool(cast(CursorResult[Any], res).rowcount)


def set_disabled(session: Session, name: str, disabled: bool) -> bool:
    """Disable (no login; every session ends) or enable a user."""
    user = _user(session, name)
    if user is None:
        return False
    user.disabled_at = utcnow() if disabled else None
    if disabled:
        end_user_sessions(session, name)
    session.flush()
    return True


def get_user(session: Session, name: str) -> UserRow | None:
    u = _user(session, name)
    return None if u is None else _row(u)


def list_users(session: Session) -> list[UserRow]:
    return [_row(u) for u in session.scalars(select(User).order_by(User.name))]


def remove_user(session: Session, name: str) -> bool:
    end_user_sessions(session, name)  # SQLite enforces the cascade only with foreign keys on
    return bool(cast(CursorResult[Any], session.execute(delete(User).where(User.name == name))).rowcount)


# ---------------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------------


def add_session(
    session: Session, name: str, token_hash: str, max_age_s: int, address: str | None, user_agent: str | None
) -> None:
    """Record a login of the (enabled) user `name`; expired sessions are swept on the way."""
    user = _user(session, name)
    if user is None or user.disabled_at is not None:
        raise ValueError(f"user {name!r} cannot log in")
    now = utcnow()
    session.execute(delete(UserSession).where(UserSession.expires_at <= now))
    session.add(UserSession(
        token_hash=token_hash, user_id=user.id, created_at=now, last_seen_at=now,
        expires_at=now + dt.timedelta(seconds=max_age_s), address=address and address[:64],
        user_agent=user_agent and user_agent[:256],
    ))
    session.flush()


def session_user(session: Session, token_hash: str) -> SessionUser | None:
    """The user of a live session (not expired, user enabled), or None."""
    row = session.execute(
        select(UserSession.id, User.name, User.role, UserSession.last_seen_at)
        .join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == token_hash, UserSession.expires_at > utcnow(), User.disabled_at.is_(None))
    ).first()
    return None if row is None else SessionUser(row[0], row[1], row[2], row[3])


def touch_session(session: Session, session_id: int) -> None:
    session.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=utcnow()))


def end_session(session: Session, token_hash: str) -> None:
    session.execute(delete(UserSession).where(UserSession.token_hash == token_hash))


def end_user_sessions(session: Session, name: str, session_id: int | None = None) -> int:
    """End every session of `name` (or the one with `session_id`); how many ended."""
    ids = select(User.id).where(User.name == name).scalar_subquery()
    stmt = delete(UserSession).where(UserSession.user_id == ids)
    if session_id is not None:
        stmt = stmt.where(UserSession.id == session_id)
    return int(cast(CursorResult[Any], session.execute(stmt)).rowcount)


def list_sessions(session: Session, name: str | None = None) -> list[SessionRow]:
    """Live sessions, newest first; of one user when `name` is given."""
    stmt = (
        select(UserSession, User.name).join(User, User.id == UserSession.user_id)
        .where(UserSession.expires_at > utcnow()).order_by(UserSession.id.desc())
    )
    if name is not None:
        stmt = stmt.where(User.name == name)
    return [
        SessionRow(s.id, user, s.created_at, s.last_seen_at, s.expires_at, s.address, s.user_agent)
        for s, user in session.execute(stmt).tuples()
    ]


def add_token(session: Session, name: str, token_hash: str, role: str) -> None:
    _add_named(session, ApiToken(name=name, token_hash=token_hash, role=role, created_at=utcnow()), "token", name)


def token_by_hash(session: Session, token_hash: str) -> TokenRow | None:
    t = session.scalars(select(ApiToken).where(ApiToken.token_hash == token_hash)).one_or_none()
    return None if t is None else TokenRow(t.name, t.role, t.created_at)


def list_tokens(session: Session) -> list[TokenRow]:
    return [TokenRow(t.name, t.role, t.created_at) for t in session.scalars(select(ApiToken).order_by(ApiToken.name))]


def remove_token(session: Session, name: str) -> bool:
    res = session.execute(delete(ApiToken).where(ApiToken.name == name))
    return bool(cast(CursorResult[Any], res).rowcount)
