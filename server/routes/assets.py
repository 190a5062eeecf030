"""Plotly.js, served from the installed `plotly` package (no CDN; nothing third-party committed); the icon
at the address browsers ask for without a page (`/favicon.ico`); the API browser at /docs (Swagger UI,
from npm into static/vendor/ like htmx, started by a script file: no inline script, no CDN)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

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


_DOCS = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Steerboard API</title>
  <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="/static/vendor/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/static/vendor/swagger-ui-bundle.js"></script>
  <script src="/static/js/docs.js"></script>
</body>
</html>
"""


@router.get("/docs", response_class=HTMLResponse)
def api_docs() -> HTMLResponse:
    """The JSON API's browser (OpenAPI at /openapi.json)."""
    return HTMLResponse(_DOCS)
