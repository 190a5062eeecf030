"""A run's per-arm statistics for another run's scheduler to start from (`SteerboardClient.warm_start`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.deps import SessionDep
from server.schemas import ErrorResponse
from server.store import warmstart as warm_store
from server.store.warmstart import RunStatistics

router = APIRouter(prefix="/api/runs", tags=["runs"])
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no such run"}}


@router.get("/{run:path}/warm-start", response_model=RunStatistics, responses=_404)
def get_warm_start(
    run: str,
    session: SessionDep,
    steps: Annotated[int, Query(ge=1, le=100_000, description="the run's last stored steps to pool")] = 20,
) -> RunStatistics:
    """Per arm: completions so far, and over the run's last `steps` steps its completions, accuracy and
    mean |A| (completion-weighted). A new run passes them to `CurriculumAgent(warm_start=...)`."""
    return warm_store.warm_start(session, run, steps)
