"""Runs, their arms, per-arm series and per-step trainer metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server import store
from server.deps import SessionDep, SettingsDep
from server.errors import InvalidRequest
from server.schemas import ErrorResponse, Metric, Parts, RunDetail, RunSummary, Series, StepRow, StepTimes

router = APIRouter(prefix="/api/runs", tags=["runs"])
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no such run"}}


@router.get("", response_model=list[RunSummary])
def list_runs(
    session: SessionDep,
    settings: SettingsDep,
    project: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[RunSummary]:
    """Runs, newest first."""
    return store.list_runs(session, settings.stale_seconds, project=project, limit=limit)


@router.get("/{run}", response_model=RunDetail, responses=_404)
def get_run(run: str, session: SessionDep, settings: SettingsDep) -> RunDetail:
    """A run with its arms and their current state and probability."""
    return store.get_run(session, run, settings.stale_seconds)


@router.get("/{run}/series", response_model=Series, responses={**_404, 422: {"model": ErrorResponse}})
def get_series(
    run: str,
    session: SessionDep,
    metric: Metric = "probability",
    arms: Annotated[str | None, Query(description="comma-separated arm names; all arms if omitted")] = None,
    start: Annotated[int | None, Query(ge=0, description="first step (inclusive)")] = None,
    end: Annotated[int | None, Query(ge=0, description="last step (inclusive)")] = None,
    max_points: Annotated[int, Query(ge=4, le=100_000, description="per arm; min/max kept per bucket")] = 1000,
) -> Series:
    """Per-arm values of one metric over steps, downsampled to at most `max_points` per arm."""
    if start is not None and end is not None and end < start:
        raise InvalidRequest(f"end ({end}) is before start ({start})")
    names = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    return Series(
        run=run, metric=metric, series=store.series(session, run, metric, names, start, end, max_points)
    )


@router.get("/{run}/parts", response_model=Parts, responses={**_404, 422: {"model": ErrorResponse}})
def get_parts(
    run: str,
    session: SessionDep,
    arms: Annotated[str | None, Query(description="comma-separated arm names; all arms if omitted")] = None,
    start: Annotated[int | None, Query(ge=0, description="first step (inclusive)")] = None,
    end: Annotated[int | None, Query(ge=0, description="last step (inclusive)")] = None,
    max_points: Annotated[int, Query(ge=4, le=100_000, description="per arm and part; min/max kept per bucket")] = 1000,
) -> Parts:
    """The parts of each arm's scheduler score over steps (DUMP: `mu`, the exploit term, and `bonus`, the
    explore term), downsampled like `/series`."""
    if start is not None and end is not None and end < start:
        raise InvalidRequest(f"end ({end}) is before start ({start})")
    names = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    return Parts(run=run, series=store.part_series(session, run, names, start, end, max_points))


@router.get("/{run}/steps", response_model=list[StepRow], responses=_404)
def get_steps(
    run: str,
    session: SessionDep,
    start: Annotated[int | None, Query(ge=0)] = None,
    end: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[StepRow]:
    """Trainer metrics per step."""
    return store.steps(session, run, start, end, limit)


@router.get("/{run}/timestamps", response_model=StepTimes, responses=_404)
def get_step_times(run: str, session: SessionDep) -> StepTimes:
    """The wall time of every step, as two arrays (steps, ts): what a chart's time axis needs, without
    the per-step metrics of `/steps`."""
    return store.step_times(session, run)
