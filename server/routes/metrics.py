"""The trainer's metrics of a run (loss, KL, grad norm...): their names, and chart series of them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from server.deps import FirstStep, LastStep, SessionDep, check_step_range
from server.schemas import ErrorResponse, Metrics, MetricSeries
from server.store import metrics as metric_store

router = APIRouter(prefix="/api/runs", tags=["runs"])
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no such run"}, 422: {"model": ErrorResponse},
}


@router.get("/{run:path}/metrics", response_model=Metrics, responses=_ERRORS)
def get_metrics(
    run: str,
    session: SessionDep,
    name: Annotated[list[str], Query(max_length=metric_store.MAX_NAMES_PER_REQUEST,
                                     description="metrics to chart (repeat the parameter); none: names only")] = [],  # noqa: B006
    start: FirstStep = None,
    end: LastStep = None,
    max_points: Annotated[int, Query(ge=4, le=100_000, description="per metric; min/max kept per bucket")] = 1000,
) -> Metrics:
    """The names of the metrics the run sent and, for each `name` asked, its values over steps, downsampled
    to at most `max_points` (each bucket keeps its min and its max)."""
    check_step_range(start, end)
    got = metric_store.run_metrics(session, run, name, start, end, max_points)
    return Metrics(run=run, names=got.names,
                   series=[MetricSeries.model_validate(p, from_attributes=True) for p in got.series])
