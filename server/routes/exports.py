"""CSV export of a run: per-arm series, per-step trainer metrics, evaluations or the audit log, streamed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from server.deps import SessionDep, SessionMakerDep
from server.schemas import ErrorResponse
from server.store import exports as export_store
from server.store.series import part_names
from server.store.sql import run_id

router = APIRouter(prefix="/api/runs", tags=["export"])


def _cell(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return "" if v is None else v


def _csv_lines(header: Sequence[str], rows: Iterator[list[Any]], chunk: int = 500) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for n, row in enumerate(rows, 1):
        writer.writerow([_cell(v) for v in row])
        if n % chunk == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


@router.get(
    "/{run:path}/export.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}, 404: {"model": ErrorResponse}},
)
def export_csv(
    run: str,
    session: SessionDep,
    maker: SessionMakerDep,
    what: Annotated[
        Literal["arms", "steps", "evals", "commands"],
        Query(description="arms: per-arm series; steps: trainer metrics; evals: evaluations; commands: the audit log"),
    ] = "arms",
) -> StreamingResponse:
    """A run as CSV. `arms`: one row per (step, arm) with every metric and score part
    (`part_<name>`); `steps`: one row per step, `step, ts` and one column per trainer metric (empty
    where a step lacks it); `evals`: one row per (name, step, arm) evaluated; `commands`: the audit
    log, oldest first."""
    rid = run_id(session, run)  # 404 before the stream starts
    conn = session.connection()
    parts = part_names(conn, rid) if what == "arms" else []
    metrics = export_store.metric_names(conn, rid) if what == "steps" else []

    def body() -> Iterator[str]:
        # The stream outlives the request's session: it reads with its own.
        with maker() as s:
            if what == "arms":
                header = [*export_store.ARM_COLUMNS, *(f"part_{p}" for p in parts)]
                yield from _csv_lines(header, export_store.iter_arm_rows(s, rid, parts))
            elif what == "steps":
                header = [*export_store.STEP_COLUMNS, *metrics]
                yield from _csv_lines(header, export_store.iter_step_rows(s, rid, metrics))
            elif what == "evals":
                yield from _csv_lines(export_store.EVAL_COLUMNS, export_store.iter_eval_rows(s, rid))
            else:
                yield from _csv_lines(export_store.COMMAND_COLUMNS, export_store.iter_command_rows(s, rid))

    filename = f"{run}-{what}.csv".replace('"', "")
    return StreamingResponse(
        body(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
