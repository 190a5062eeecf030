"""The runs table of the dashboard and the JSON runs list: filters, a server-side sort by any column,
pages, and each run's summary (arms, overrides applied, duration, final and best evaluation, tags,
note).

Three queries whatever the page: the page's runs with the total (a window count), then for those runs
only their counts and their tags. Sorting by a count or the tags joins that column aggregated over every
run; the evaluation columns are kept on the run by ingest (`store.evals.update_eval_summary`), so
sorting by one is sorting by a column (bench/runs_list.py times each).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Subquery, case, extract, func, select
from sqlalchemy.orm import Session

from server.errors import InvalidRequest
from server.store.manage import RUN_TAGS, TagChip, tags_of_runs
from server.store.runs import STATUSES, RunOverview, shown_status, stale_clause
from server.store.sql import ARMS, COMMANDS, RUNS, utcnow

PER_PAGE = 50
# The sortable columns, each with the order a first click on its header asks for.
SORTS: dict[str, str] = {
    "run": "asc", "status": "asc", "project": "asc", "scheduler": "asc", "arms": "desc", "steps": "desc",
    "duration": "desc", "overrides": "desc", "final": "desc", "best": "desc", "tags": "asc", "note": "asc",
    "last_seen": "desc", "started": "desc",
}
ORDERS = ("asc", "desc")
# Archived runs: hidden (the default), the only ones shown, or shown with the others.
ARCHIVED = ("hide", "only", "all")


@dataclass(frozen=True, slots=True)
class RunsQuery:
    """Filters, sort and page of the runs table; `sort` None is newest first."""

    status: str | None = None
    project: str | None = None
    search: str | None = None
    tag: str | None = None
    archived: str = "hide"
    sort: str | None = None
    order: str = "desc"
    page: int = 1
    per_page: int = PER_PAGE

    def check(self) -> RunsQuery:
        """Itself, or InvalidRequest naming the value that is not allowed."""
        for what, value, allowed in (("status", self.status, STATUSES), ("sort", self.sort, tuple(SORTS)),
                                     ("order", self.order, ORDERS), ("archived", self.archived, ARCHIVED)):
            if value is not None and value not in allowed:
                raise InvalidRequest(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
        if self.page < 1 or self.per_page < 1:
            raise InvalidRequest(f"page and per_page start at 1, got {self.page} and {self.per_page}")
        return self


@dataclass(frozen=True, slots=True)
class TableRow(RunOverview):
    """A run as the runs table shows it: its overview and its summary."""

    arms: int
    overrides: int  # commands applied
    duration_s: float | None
    eval_name: str | None  # the eval set of the latest evaluation
    final_eval: float | None  # its mean accuracy over arms
    best_eval: float | None  # the best such mean of that eval set
    tags: list[TagChip]
    note: str | None
    archived_at: dt.datetime | None

    @property
    def shown_status(self) -> str:
        """What the pages show: the reported status, or "stale"."""
        return shown_status(self.status, self.stale)

    @property
    def steps(self) -> int:
        """Steps reached (the last step + 1; 0 before the first)."""
        return self.last_step + 1


@dataclass(frozen=True, slots=True)
class RunsPage:
    rows: list[TableRow]
    total: int  # runs matching the filters, on every page
    query: RunsQuery

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.query.per_page))


def duration_s(started: dt.datetime | None, ended: dt.datetime | None, last_seen: dt.datetime | None) -> float | None:
    """From the start to the end, or to the last message while there is no end (_duration_sql in SQL)."""
    end = ended or last_seen
    if started is None or end is None:
        return None
    return max(0.0, (end - started).total_seconds())


def _duration_sql(dialect: str) -> ColumnElement[Any]:
    r = RUNS.c
    end = func.coalesce(r.ended_at, r.last_seen)
    if dialect == "postgresql":
        d: ColumnElement[Any] = extract("epoch", end - r.started_at)
    else:  # SQLite keeps datetimes as ISO text, which julianday reads
        d = (func.julianday(end) - func.julianday(r.started_at)) * 86400.0
    return case((d < 0, 0.0), else_=d)


def _arm_counts() -> Subquery:
    return select(ARMS.c.run_id, func.count().label("n")).group_by(ARMS.c.run_id).subquery("armn")


def _applied_counts() -> Subquery:
    c = COMMANDS.c
    return select(c.run_id, func.count().label("n")).where(c.status == "applied").group_by(c.run_id).subquery("appn")


def _first_tags() -> Subquery:
    t = RUN_TAGS.c
    return select(t.run_id, func.min(t.tag).label("tag")).group_by(t.run_id).subquery("tag1")


def _filtered(q: Select[Any], query: RunsQuery, stale: ColumnElement[bool]) -> Select[Any]:
    r = RUNS.c
    if query.project:
        q = q.where(r.project == query.project)
    if query.search:
        q = q.where(func.lower(r.name).contains(query.search.lower(), autoescape=True))
    if query.status == "stale":
        q = q.where(stale)
    elif query.status == "running":
        q = q.where(r.status == "running", ~stale)
    elif query.status is not None:
        q = q.where(r.status == query.status)
    if query.tag:
        q = q.where(r.id.in_(select(RUN_TAGS.c.run_id).where(RUN_TAGS.c.tag == query.tag)))
    if query.archived == "hide":
        q = q.where(r.archived_at.is_(None))
    elif query.archived == "only":
        q = q.where(r.archived_at.is_not(None))
    return q


def _sorted(q: Select[Any], query: RunsQuery, stale: ColumnElement[bool], dialect: str) -> Select[Any]:
    """`q` ordered by the query's column (empty values last either way), then newest first."""
    r = RUNS.c
    if query.sort is None:
        return q.order_by(r.id.desc())
    source: Any = RUNS
    key: ColumnElement[Any]
    if query.sort in ("arms", "overrides", "tags"):
        sub = {"arms": _arm_counts, "overrides": _applied_counts, "tags": _first_tags}[query.sort]()
        source = source.outerjoin(sub, sub.c.run_id == r.id)
        key = sub.c.tag if query.sort == "tags" else func.coalesce(sub.c.n, 0)
    else:
        key = {
            "run": r.name, "project": r.project, "scheduler": r.scheduler, "steps": r.last_step,
            "note": r.note, "last_seen": r.last_seen, "started": r.started_at, "final": r.final_eval,
            "best": r.best_eval,
            "duration": _duration_sql(dialect),
            "status": case(*((case((stale, "stale"), else_=r.status) == s, i) for i, s in enumerate(STATUSES)),
                           else_=len(STATUSES)),
        }[query.sort]
    ordered = key.asc() if query.order == "asc" else key.desc()
    return q.select_from(source).order_by(case((key.is_(None), 1), else_=0), ordered, r.id.desc())


def runs_table(session: Session, stale_seconds: float, query: RunsQuery) -> RunsPage:
    """One page of runs with their summaries; InvalidRequest for a filter or sort that does not exist."""
    query.check()
    now = utcnow()
    stale = stale_clause(stale_seconds, now)
    r = RUNS.c
    cols = (r.id, r.name, r.project, r.scheduler, r.status, stale.label("stale"), r.started_at, r.ended_at,
            r.last_seen, r.last_step, r.dropped, r.event_seq, r.note, r.archived_at, r.eval_name, r.final_eval,
            r.best_eval)
    q = _filtered(select(*cols, func.count().over().label("total")), query, stale)
    q = _sorted(q, query, stale, session.get_bind().dialect.name)
    runs = list(session.execute(q.limit(query.per_page).offset((query.page - 1) * query.per_page)))
    if runs:
        total = int(runs[0].total)
    else:  # past the last page (or nothing matches): the window count had no row to ride on
        total = int(session.scalar(_filtered(select(func.count()).select_from(RUNS), query, stale)) or 0)
    ids = [x.id for x in runs]
    counts: dict[int, tuple[int, int]] = {}
    tags: dict[int, list[TagChip]] = {}
    if ids:
        c = COMMANDS.c
        counts = {
            rid: (int(arms), int(applied)) for rid, arms, applied in session.execute(select(
                r.id,
                select(func.count()).where(ARMS.c.run_id == r.id).scalar_subquery(),
                select(func.count()).where(c.run_id == r.id, c.status == "applied").scalar_subquery(),
            ).where(r.id.in_(ids)))
        }
        tags = tags_of_runs(session, ids)
    rows = []
    for x in runs:
        arms, applied = counts.get(x.id, (0, 0))
        stale_now = bool(x.stale)
        rows.append(TableRow(
            name=x.name, project=x.project, scheduler=x.scheduler, status=x.status, stale=stale_now,
            started_at=x.started_at, ended_at=x.ended_at,
            last_seen=x.last_seen, last_step=x.last_step, dropped=x.dropped, event_seq=x.event_seq, arms=arms,
            overrides=applied, duration_s=duration_s(x.started_at, x.ended_at, x.last_seen),
            eval_name=x.eval_name, final_eval=x.final_eval, best_eval=x.best_eval,
            tags=tags.get(x.id, []), note=x.note, archived_at=x.archived_at,
        ))
    return RunsPage(rows, total, query)
