"""Runs, their arms, per-arm series, per-step trainer metrics and evaluations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from server.deps import ArmList, FirstStep, LastStep, SessionDep, SettingsDep, arm_names, check_step_range
from server.models import Metric
from server.schemas import (
    ArmSeries,
    ErrorResponse,
    EvalPoint,
    Evals,
    Parts,
    PartSeries,
    RunListItem,
    Series,
    StepRow,
    StepTimes,
    TagOut,
)
from server.store import evals as eval_store
from server.store import runs as run_store
from server.store import runs_table
from server.store import series as series_store

router = APIRouter(prefix="/api/runs", tags=["runs"])
# Every number a query takes is bounded by what its column holds (a step is a 32-bit INTEGER): a larger one
# is a 422, never an overflow in the database driver.
MAX_PAGE = 1_000_000
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no such run"}}


@router.get("", response_model=list[RunListItem], responses={422: {"model": ErrorResponse}})
def list_runs(
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    project: Annotated[str | None, Query(max_length=256)] = None,
    status: Annotated[str | None, Query(max_length=32, description=f"one of {', '.join(run_store.STATUSES)}")]
    = None,
    tag: Annotated[str | None, Query(max_length=256)] = None,
    q: Annotated[str | None, Query(max_length=200, description="a part of the run name")] = None,
    archived: Annotated[str, Query(description="hide (default), only or all")] = "hide",
    sort: Annotated[str | None, Query(description=f"one of {', '.join(runs_table.SORTS)}; newest first if omitted")]
    = None,
    order: Annotated[str | None, Query(description="asc or desc (default: the column's own)")] = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000, description="runs per page")] = 200,
) -> list[RunListItem]:
    """Runs with their summaries, newest first or sorted by a column; X-Total-Count says how many match."""
    query = runs_table.RunsQuery(
        status=status or None, project=project or None, search=q or None, tag=tag or None, archived=archived,
        sort=sort or None, order=order or runs_table.SORTS.get(sort or "", "desc"), page=page, per_page=limit,
    )
    got = runs_table.runs_table(session, settings.stale_seconds, query)
    response.headers["X-Total-Count"] = str(got.total)
    return [
        RunListItem(
            name=r.name, project=r.project, scheduler=r.scheduler, status=r.status, stale=r.stale,
            shown_status=r.shown_status, started_at=r.started_at, ended_at=r.ended_at, last_seen=r.last_seen,
            last_step=r.last_step, dropped=r.dropped, event_seq=r.event_seq, arms=r.arms, steps=r.steps,
            duration_s=r.duration_s, overrides=r.overrides, eval_name=r.eval_name, final_eval=r.final_eval,
            best_eval=r.best_eval, tags=[TagOut.model_validate(t, from_attributes=True) for t in r.tags],
            note=r.note, archived_at=r.archived_at,
        )
        for r in got.rows
    ]


@router.get("/{run:run}", response_model=run_store.RunView, responses=_404)
def get_run(run: str, session: SessionDep, settings: SettingsDep) -> run_store.RunView:
    """A run with its arms and their current state and probability."""
    return run_store.get_run(session, run, settings.stale_seconds)


@router.get("/{run:path}/series", response_model=Series, responses={**_404, 422: {"model": ErrorResponse}})
def get_series(
    run: str,
    session: SessionDep,
    metric: Metric = "probability",
    arms: ArmList = None,
    start: FirstStep = None,
    end: LastStep = None,
    max_points: Annotated[int, Query(ge=4, le=100_000, description="per arm; min/max kept per bucket")] = 1000,
) -> Series:
    """Per-arm values of one metric over steps, downsampled to at most `max_points` per arm."""
    check_step_range(start, end)
    names = arm_names(arms)
    points = series_store.series(session, run, metric, names, start, end, max_points)
    return Series(run=run, metric=metric, series=[ArmSeries.model_validate(p, from_attributes=True) for p in points])


@router.get("/{run:path}/parts", response_model=Parts, responses={**_404, 422: {"model": ErrorResponse}})
def get_parts(
    run: str,
    session: SessionDep,
    arms: ArmList = None,
    start: FirstStep = None,
    end: LastStep = None,
    max_points: Annotated[int, Query(ge=4, le=100_000, description="per arm and part; min/max kept per bucket")] = 1000,
) -> Parts:
    """The parts of each arm's scheduler score over steps (DUMP: `mu`, the exploit term, and `bonus`, the
    explore term), downsampled like `/series`."""
    check_step_range(start, end)
    names = arm_names(arms)
    points = series_store.part_series(session, run, names, start, end, max_points)
    return Parts(run=run, series=[PartSeries.model_validate(p, from_attributes=True) for p in points])


@router.get("/{run:path}/steps", response_model=list[StepRow], responses=_404)
def get_steps(
    run: str,
    session: SessionDep,
    start: FirstStep = None,
    end: LastStep = None,
    limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
) -> list[StepRow]:
    """Trainer metrics per step."""
    rows = series_store.steps(session, run, start, end, limit)
    return [StepRow.model_validate(s, from_attributes=True) for s in rows]


@router.get("/{run:path}/timestamps", response_model=StepTimes, responses=_404)
def get_step_times(run: str, session: SessionDep) -> StepTimes:
    """The wall time of every step, as two arrays (steps, ts): what a chart's time axis needs, without
    the per-step metrics of `/steps`."""
    return StepTimes.model_validate(series_store.step_times(session, run), from_attributes=True)


@router.get("/{run:path}/evals", response_model=Evals, responses=_404)
def get_evals(
    run: str,
    session: SessionDep,
    name: Annotated[str | None, Query(max_length=256, description="one evaluation set; every one if omitted")]
    = None,
) -> Evals:
    """The run's evaluations (`agent.log_eval`): per evaluation name, step and arm, the accuracy and
    the counts behind it when the trainer sent them."""
    got = eval_store.run_evals(session, run, name)
    return Evals(
        run=got.run, names=got.names, evals=[EvalPoint.model_validate(p, from_attributes=True) for p in got.evals]
    )
