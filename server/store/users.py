"""All SQL of authentication: users (people who log in) and api_tokens (bearer tokens for scripts).

Password hashing and token generation live in `server.auth`; this module stores and reads what it
is given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.errors import Conflict
from server.models import ApiToken, User
from server.store.sql import utcnow


@dataclass(frozen=True, slots=True)
class UserRow:
    name: str
    role: str
    password_hash: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class TokenRow:
    name: str
    role: str
    created_at: dt.datetime


def has_credentials(session: Session) -> bool:
    """Whether any user or API token exists (then the server is no longer in local dev mode)."""
    return (
        session.scalar(select(User.id).limit(1)) is not None
        or session.scalar(select(ApiToken.id).limit(1)) is not None
    )


def _add_named(session: Session, row: User | ApiToken, what: str, name: str) -> None:
    """Insert a user or a token; Conflict when the name is taken."""
    session.add(row)
    try:
        session.flush()
    except IntegrityError as e:
        session.rollback()
        raise Conflict(f"a {what} named {name!r} already exists", name=name) from e


def add_user(session: Session, name: str, password_hash: str, role: str) -> None:
    _add_named(session, User(name=name, password_hash=password_hash, role=role, created_at=utcnow()), "user", name)


def set_password(session: Session, name: str, password_hash: str) -> bool:
    user = session.scalars(select(User).where(User.name == name)).one_or_none()
    if user is None:
        return False
    user.password_hash = password_hash
    session.flush()
    return True


def get_user(session: Session, name: str) -> UserRow | None:
    u = session.scalars(select(User).where(User.name == name)).one_or_none()
    return None if u is None else UserRow(u.name, u.role, u.password_hash, u.created_at)


def list_users(session: Session) -> list[UserRow]:
    return [
        UserRow(u.name, u.role, u.password_hash, u.created_at)
        for u in session.scalars(select(User).order_by(User.name))
    ]


def remove_user(session: Session, name: str) -> bool:
    return bool(cast(CursorResult[Any], session.execute(delete(User).where(User.name == name))).rowcount)


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
