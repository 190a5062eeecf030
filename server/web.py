"""Rendering of the HTML pages: the Jinja2 environment, its filters, and the shared page context."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from server import auth
from server.auth import Principal
from server.package_data import package_path
from server.store.sql import utcnow

TEMPLATES_DIR = package_path("templates")
STATIC_DIR = package_path("static")


def plotly_js_path() -> Path | None:
    """Plotly.js: npm's partial bundle from `make assets` when present (a quarter of the parse time),
    else plotly.min.js of the installed `plotly` package (found without importing plotly)."""
    basic = STATIC_DIR / "vendor" / "plotly-basic.min.js"
    if basic.is_file():
        return basic
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    return path if path.is_file() else None


def plotly_version() -> str:
    try:
        return importlib.metadata.version("plotly")
    except importlib.metadata.PackageNotFoundError:
        return "0"


def _plotly_tag() -> str:
    path = plotly_js_path()
    return f"{plotly_version()}-{path.stat().st_size}" if path is not None else plotly_version()


# The URL names the version (and which bundle), so the file can be cached for a year and still change.
PLOTLY_URL = f"/static/vendor/plotly-{_plotly_tag()}.min.js"


def _ago(value: dt.datetime | None) -> str:
    if value is None:
        return "never"
    return f"{_duration(max(0.0, (utcnow() - value).total_seconds()))} ago"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _json_script(value: Any) -> Markup:
    """JSON safe inside <script type="application/json"> (no closing tag can appear)."""
    text = json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.filters.update(ago=_ago, when=_when, num=_num, duration=_duration, json_script=_json_script)
templates.env.globals.update(plotly_url=PLOTLY_URL, csrf_field=auth.CSRF_FIELD)


def is_htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def render(
    request: Request,
    name: str,
    principal: Principal,
    context: dict[str, Any] | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render a template with what every page needs: who is asking and the session's CSRF token."""
    settings = getattr(request.app.state, "settings", None)
    ctx = {
        "principal": principal,
        "csrf": auth.csrf_token(request),
        # Shown to everyone while dev mode is on, not only to the loopback clients it lets steer.
        "dev_mode": principal.via == "local" or getattr(request.state, "dev_mode", False),
        "dev_mode_forced": settings is not None and settings.dev_mode == "on",
        "public_read": settings is not None and settings.public_read,
        **(context or {}),
    }
    return templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)
