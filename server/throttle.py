"""Login throttling, shared by every web process through Redis.

Each login attempt is counted, before its password is checked, against the user name it names and the
client address it comes from, in fixed windows of STEERBOARD_LOGIN_WINDOW_S. Past
STEERBOARD_LOGIN_FAILURES_PER_USER attempts on one name, or STEERBOARD_LOGIN_FAILURES_PER_ADDRESS from
one address, the login answers 429 with Retry-After until the window ends, without checking a password
(so a burst of guesses costs no argon2 work). A successful login clears its name's count and takes
itself off its address's. Counting attempts rather than failures bounds parallel bursts too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import redis

from server.errors import TooManyRequests
from server.settings import Settings


@dataclass(frozen=True, slots=True)
class _Counter:
    key: str
    limit: int
    what: str


def _counters(settings: Settings, name: str, address: str | None) -> list[_Counter]:
    digest = hashlib.sha256(name.encode()).hexdigest()[:32]
    base = f"{settings.key_prefix}login:"
    counters = [_Counter(f"{base}user:{digest}", settings.login_failures_per_user, "for this user name")]
    if address:
        counters.append(_Counter(f"{base}addr:{address}", settings.login_failures_per_address, "from your address"))
    return counters


def _wait(seconds: int) -> str:
    return f"{seconds} s" if seconds < 60 else f"{(seconds + 59) // 60} min"


def count_attempt(client: redis.Redis, settings: Settings, name: str, address: str | None) -> None:
    """Count one attempt; TooManyRequests (with the seconds to wait) when a limit is passed."""
    counters = _counters(settings, name, address)
    pipe = client.pipeline(transaction=False)
    for c in counters:
        pipe.set(c.key, 0, ex=settings.login_window_s, nx=True)
        pipe.incr(c.key)
        pipe.ttl(c.key)
    got = pipe.execute()
    for i, c in enumerate(counters):
        count, ttl = int(got[3 * i + 1]), int(got[3 * i + 2])
        if count > c.limit:
            wait = max(1, ttl if ttl > 0 else settings.login_window_s)
            raise TooManyRequests(
                f"too many failed logins {c.what}; wait {_wait(wait)} and try again", retry_after=wait
            )


def succeeded(client: redis.Redis, settings: Settings, name: str, address: str | None) -> None:
    """A login succeeded: its name starts afresh and the attempt does not count against its address."""
    user, *rest = _counters(settings, name, address)
    pipe = client.pipeline(transaction=False)
    pipe.delete(user.key)
    for c in rest:
        pipe.decr(c.key)
    pipe.execute()
