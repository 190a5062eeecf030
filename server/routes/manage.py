"""Managing runs through the JSON API: tags, note and archiving (PATCH), deleting (DELETE), and the
audit log of those actions. Operators only, as steering is; the pages' forms are routes/manage_pages.py."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server import managing
from server.deps import Operator, RedisDep, SessionDep, SettingsDep
from server.schemas import ErrorResponse, RunActionRecord, RunDeleted, RunManaged, RunPatch, TagOut
from server.store import manage

router = APIRouter(prefix="/api/runs", tags=["runs"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no login or token"},
    403: {"model": ErrorResponse, "description": "a viewer, or a cookie session without its CSRF token"},
    404: {"model": ErrorResponse, "description": "no such run"},
    422: {"model": ErrorResponse, "description": "a bad tag or note"},
}


def managed(labels: manage.RunLabels) -> RunManaged:
    return RunManaged(name=labels.name, archived_at=labels.archived_at, note=labels.note,
                      tags=[TagOut.model_validate(t, from_attributes=True) for t in labels.tags])


@router.patch("/{run:run}", response_model=RunManaged, responses=_ERRORS)
def patch_run(run: str, body: RunPatch, session: SessionDep, actor: Operator) -> RunManaged:
    """Add or remove tags, set or clear the note, archive or unarchive; each change is audited."""
    change = manage.LabelChange(body.add_tags, body.remove_tags, body.note, body.archived)
    labels = managing.update_run(session, run, actor, change)
    return managed(labels)


@router.delete("/{run:run}", response_model=RunDeleted, responses={**_ERRORS, 503: {"model": ErrorResponse}})
def delete_run(run: str, session: SessionDep, client: RedisDep, settings: SettingsDep, actor: Operator) -> RunDeleted:
    """Delete the run: every row keyed by it and its Redis keys (audited; the audit row stays). A trainer
    that keeps sending recreates the run from its next message."""
    gone = managing.delete_run(session, client, settings, run, actor)
    return RunDeleted(run=gone.run, rows=gone.rows, redis_keys=gone.redis_keys)


@router.get("/{run:path}/actions", response_model=list[RunActionRecord])
def run_actions(
    run: str, session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[RunActionRecord]:
    """Who archived, tagged, noted or deleted the run, newest first (kept after a deletion)."""
    return [RunActionRecord.model_validate(a, from_attributes=True) for a in manage.actions(session, run, limit)]
