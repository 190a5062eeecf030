"""Plotly.js, served from the installed `plotly` package (no CDN; nothing third-party committed); the icon
at the address browsers ask for without a page (`/favicon.ico`)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from server.errors import NotFound
from server.web import PLOTLY_URL, plotly_js_path

router = APIRouter(include_in_schema=False)


@router.get(PLOTLY_URL)
def plotly_js() -> FileResponse:
    path = plotly_js_path()
    if path is None:
        raise NotFound("plotly.min.js not found: install the `plotly` package (the server extra)")
    # The URL names the package version, so browsers may keep it for a year.
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "public, max-age=31536000, immutable"}
    )


@router.get("/favicon.ico")
def favicon() -> RedirectResponse:
    return RedirectResponse("/static/favicon.svg", status_code=308)
