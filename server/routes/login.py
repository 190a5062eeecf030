"""Logging in and out (session cookie; the login form carries a CSRF token too)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from server import auth, throttle
from server.deps import PrincipalDep, RedisDep, SessionDep, SettingsDep
from server.errors import TooManyRequests, Unauthorized
from server.logsafe import printable
from server.web import render

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)


def _safe_next(target: str | None) -> str:
    """Only paths of this site (no `//host` or scheme), so the login cannot redirect elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, principal: PrincipalDep, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", principal, {"next": _safe_next(next), "error": None, "name": ""})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client: RedisDep,
    principal: PrincipalDep,
    name: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str | None, Form()] = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    """Async, so that a login waiting for its password check (server.auth.check_password) holds no thread."""
    auth.check_csrf(request, csrf_token)
    name = name.strip()
    address = request.client.host if request.client is not None else None
    ctx = {"next": _safe_next(next), "name": name}
    try:
        # Counted before any password work: a throttled guess costs no argon2.
        await run_in_threadpool(throttle.count_attempt, client, settings, name, address)
        user = await run_in_threadpool(auth.login_candidate, session, name)
        if not await auth.check_password(request, settings, user, password) or user is None:
            raise Unauthorized("wrong user name or password")
        await run_in_threadpool(auth.start_session, request, session, settings, user, password)
    except TooManyRequests as e:
        log.warning("login throttled: %s from %s", printable(name), printable(address or "?"))
        headers = {"Retry-After": str(e.details["retry_after"])}
        return render(request, "login.html", principal, {**ctx, "error": e.message}, status_code=429, headers=headers)
    except Unauthorized as e:
        log.info("login failed: %s from %s", printable(name), printable(address or "?"))
        return render(request, "login.html", principal, {**ctx, "error": e.message}, status_code=401)
    await run_in_threadpool(throttle.succeeded, client, settings, name, address)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, session: SessionDep, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    auth.check_csrf(request, csrf_token or request.headers.get(auth.CSRF_HEADER))
    auth.logout(request, session)
    return RedirectResponse("/", status_code=303)
