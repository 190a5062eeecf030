"""CSV export of a run: per-arm series, per-step trainer metrics, evaluations or the audit log, streamed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from server.deps import SessionDep, SessionMakerDep
from server.schemas import ErrorResponse
from server.store import exports as export_store
from server.store.series import part_names
from server.store.sql import run_id

router = APIRouter(prefix="/api/runs", tags=["export"])


# A spreadsheet runs a cell starting with one of these as a formula (=HYPERLINK(...), @SUM(...), +cmd|...).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    """A value as a CSV cell; text that a spreadsheet would run as a formula gets a leading `'` (OWASP's
    CSV injection advice). Numbers stay numbers: -0.5 is written as it is."""
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, str):
        if v.startswith(_FORMULA_START):
            v = "'" + v
        # The writer quotes a cell holding "\n" (its line end) but not a lone "\r", which readers take for a
        # row end: carriage returns are written as newlines.
        return v.replace("\r\n", "\n").replace("\r", "\n") if "\r" in v else v
    return "" if v is None else v


def content_disposition(filename: str) -> str:
    """An attachment header any name survives (RFC 6266): an ASCII fallback, and the name itself as RFC 5987
    `filename*` (UTF-8, percent-encoded), so a non-ASCII run name is no UnicodeEncodeError."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\/;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _csv_lines(header: Sequence[str], rows: Iterator[list[Any]], chunk: int = 500) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_cell(h) for h in header])
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

    return StreamingResponse(
        body(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": content_disposition(f"{run}-{what}.csv")},
    )
