"""The pages' forms for managing a run: tags, note, archive (on the run page, operators only) and
deleting it (a confirmation page that names the run and says what goes).

htmx posts answer with the management fragment to swap, and the run header out of band so it shows
the change at once; an invalid form comes back with 400 and its error. Without htmx a post redirects
to the run page, or renders the management page with the error.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from server import managing
from server.auth import Principal
from server.deps import PageOperator, PrincipalDep, RedisDep, SessionDep, SettingsDep
from server.errors import InvalidRequest
from server.settings import Settings
from server.store import manage as manage_store
from server.store import runs as run_store
from server.web import is_htmx, render

router = APIRouter(include_in_schema=False)


def _run_path(run: str) -> str:
    return "/runs/" + quote(run, safe="")


def _respond(
    request: Request, session: Session, settings: Settings, principal: Principal, run: str,
    form: dict[str, Any], status: int = 200,
) -> Response:
    """The management fragment (and the header, out of band) for htmx; else a redirect, or the
    management page with the form's error."""
    if not is_htmx(request) and status < 400:
        return RedirectResponse(_run_path(run), status_code=303)
    detail = run_store.get_run(session, run, settings.stale_seconds)
    ctx = {"run": detail, "labels": manage_store.labels(session, run), "manage": form, "oob": status < 400}
    if is_htmx(request):
        return render(request, "_run_manage.html", principal, ctx, status)
    return render(request, "run_manage.html", principal, ctx, status)


def _apply(
    request: Request, session: Session, settings: Settings, principal: Principal, run: str, which: str,
    values: dict[str, str], **change: Any,
) -> Response:
    try:
        managing.update_run(session, run, principal.name, manage_store.LabelChange(**change))
    except InvalidRequest as e:
        session.rollback()
        return _respond(request, session, settings, principal, run,
                        {"form": which, "error": e.message, "values": values}, 400)
    return _respond(request, session, settings, principal, run, {"form": which, "message": "saved"})


@router.get("/runs/{run:path}/manage", response_class=HTMLResponse)
def manage_page(
    run: str, request: Request, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """The management forms on a page of their own (where a form without htmx shows its error)."""
    detail = run_store.get_run(session, run, settings.stale_seconds)
    ctx = {"run": detail, "labels": manage_store.labels(session, run), "manage": {}}
    return render(request, "run_manage.html", principal, ctx)


@router.post("/runs/{run:path}/tags", response_class=HTMLResponse)
def post_tags(
    run: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PageOperator,
    action: Annotated[str, Form()],
    tags: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Add tags (comma-separated) or remove one of people's tags."""
    if action == "add":
        adds = [t for t in tags.split(",") if t.strip()]
        if not adds:
            return _respond(request, session, settings, principal, run,
                            {"form": "tags", "error": "type a tag to add (several: separated by commas)",
                             "values": {"tags": tags}}, 400)
        return _apply(request, session, settings, principal, run, "tags", {"tags": tags}, add_tags=adds)
    if action == "remove":
        return _apply(request, session, settings, principal, run, "tags", {}, remove_tags=[tags])
    raise InvalidRequest(f"action must be add or remove, got {action!r}")


@router.post("/runs/{run:path}/note", response_class=HTMLResponse)
def post_note(
    run: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PageOperator,
    note: Annotated[str, Form(max_length=manage_store.NOTE_MAX * 2)] = "",
) -> Response:
    """Set the run's note (empty clears it)."""
    return _apply(request, session, settings, principal, run, "note", {"note": note}, note=note)


@router.post("/runs/{run:path}/archive", response_class=HTMLResponse)
def post_archive(
    run: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PageOperator,
    archived: Annotated[bool, Form()],
) -> Response:
    """Archive the run (hidden from the default runs list) or unarchive it."""
    return _apply(request, session, settings, principal, run, "archive", {}, archived=archived)


@router.get("/runs/{run:path}/delete", response_class=HTMLResponse)
def delete_page(
    run: str, request: Request, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """The confirmation: the run by name, what deleting it removes, and whether it may come back."""
    preview = manage_store.deletion_preview(session, run, settings.stale_seconds)
    return render(request, "run_delete.html", principal, {"preview": preview, "run_name": run})


@router.post("/runs/{run:path}/delete", response_class=HTMLResponse)
def post_delete(
    run: str,
    request: Request,
    session: SessionDep,
    client: RedisDep,
    settings: SettingsDep,
    principal: PageOperator,
) -> Response:
    """Delete the run, then go to the runs list, which names it in a notice."""
    managing.delete_run(session, client, settings, run, principal.name)
    to = "/?" + urlencode({"deleted": run})
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": to})
    return RedirectResponse(to, status_code=303)
