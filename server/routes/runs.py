"""Runs, their arms, per-arm series, per-step trainer metrics and evaluations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.deps import SessionDep, SettingsDep
from server.errors import InvalidRequest
from server.models import Metric
from server.schemas import (
    ArmSeries,
    ErrorResponse,
    EvalPoint,
    Evals,
    Parts,
    PartSeries,
    RunDetail,
    RunSummary,
    Series,
    StepRow,
    StepTimes,
)
from server.store import evals as eval_store
from server.store import runs as run_store
from server.store import series as series_store

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
    return [
        RunSummary.model_validate(r, from_attributes=True)
        for r in run_store.list_runs(session, settings.stale_seconds, project=project, limit=limit)
    ]


@router.get("/{run}", response_model=RunDetail, responses=_404)
def get_run(run: str, session: SessionDep, settings: SettingsDep) -> RunDetail:
    """A run with its arms and their current state and probability."""
    return RunDetail.model_validate(run_store.get_run(session, run, settings.stale_seconds), from_attributes=True)


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
    points = series_store.series(session, run, metric, names, start, end, max_points)
    return Series(run=run, metric=metric, series=[ArmSeries.model_validate(p, from_attributes=True) for p in points])


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
    points = series_store.part_series(session, run, names, start, end, max_points)
    return Parts(run=run, series=[PartSeries.model_validate(p, from_attributes=True) for p in points])


@router.get("/{run}/steps", response_model=list[StepRow], responses=_404)
def get_steps(
    run: str,
    session: SessionDep,
    start: Annotated[int | None, Query(ge=0)] = None,
    end: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[StepRow]:
    """Trainer metrics per step."""
    rows = series_store.steps(session, run, start, end, limit)
    return [StepRow.model_validate(s, from_attributes=True) for s in rows]


@router.get("/{run}/timestamps", response_model=StepTimes, responses=_404)
def get_step_times(run: str, session: SessionDep) -> StepTimes:
    """The wall time of every step, as two arrays (steps, ts): what a chart's time axis needs, without
    the per-step metrics of `/steps`."""
    return StepTimes.model_validate(series_store.step_times(session, run), from_attributes=True)


@router.get("/{run}/evals", response_model=Evals, responses=_404)
def get_evals(
    run: str,
    session: SessionDep,
    name: Annotated[str | None, Query(description="one evaluation set; every one if omitted")] = None,
) -> Evals:
    """The run's evaluations (`agent.log_eval`): per evaluation name, step and arm, the accuracy and
    the counts behind it when the trainer sent them."""
    got = eval_store.run_evals(session, run, name)
    return Evals(
        run=got.run, names=got.names, evals=[EvalPoint.model_validate(p, from_attributes=True) for p in got.evals]
    )
