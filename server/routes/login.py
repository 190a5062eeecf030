"""Logging in and out (session cookie; the login form carries a CSRF token too)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server import auth
from server.deps import PrincipalDep, SessionDep
from server.errors import Unauthorized
from server.web import render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only paths of this site (no `//host` or scheme), so the login cannot redirect elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, principal: PrincipalDep, next: str | None = None) -> HTMLResponse:
    return render(request, "login.html", principal, {"next": _safe_next(next), "error": None, "name": ""})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    session: SessionDep,
    principal: PrincipalDep,
    name: Annotated[str, Form(max_length=128)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str | None, Form()] = None,
    next: Annotated[str | None, Form()] = None,
) -> Response:
    auth.check_csrf(request, csrf_token)
    try:
        auth.login(request, session, name.strip(), password)
    except Unauthorized as e:
        ctx = {"next": _safe_next(next), "error": e.message, "name": name}
        return render(request, "login.html", principal, ctx, status_code=401)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    auth.check_csrf(request, csrf_token or request.headers.get(auth.CSRF_HEADER))
    auth.logout(request)
    return RedirectResponse("/", status_code=303)
