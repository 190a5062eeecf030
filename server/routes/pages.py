"""The HTML pages: runs, a run (live charts and controls), compare. htmx asks for fragments.

Each GET route serves the full page, or with `HX-Request` the fragment that page refreshes. The
command form posts here and reuses `server.steering.submit`, the JSON API's validation and audit.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass
from typing import Annotated, Any, Literal, cast
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from server import compare as comparing
from server import steering
from server.auth import Principal
from server.deps import PageOperator, PrincipalDep, RedisDep, SessionDep, SettingsDep
from server.errors import CommandConflict, InvalidCommand, InvalidRequest
from server.models import Metric
from server.schemas import CommandIn
from server.store import commands as command_store
from server.store import diagnoses as diagnosis_store
from server.store import manage as manage_store
from server.store import runs as run_store
from server.store import runs_table
from server.store.commands import AuditEntry
from server.store.sql import RUNS
from server.web import is_htmx, render

router = APIRouter(include_in_schema=False)

# The controls on each arm, in the order shown.
KINDS = ("pin", "boost", "retire", "restore", "release")
_CONFIRM = {
    "pin": "Pin {arm} to this probability?",
    "boost": "Boost {arm} by this factor?",
    "retire": "Retire {arm}? It will get probability 0 until restored.",
    "restore": "Restore {arm}?",
    "release": "Release {arm} (clear its pin and boost)?",
}


def command_status(c: AuditEntry) -> str:
    """What the audit log says about a command, e.g. "applied at step 12"."""
    if c.status == "applied":
        return f"applied at step {c.applied_step}"
    if c.status == "rejected":
        return f"rejected: {c.message or 'no reason given'}"
    return c.status


def _commands_ctx(session: Any, run: str, commands: list[AuditEntry]) -> list[dict[str, Any]]:
    """The audit log's rows, newest first: the commands (an accepted suggestion is one, with its reason)
    and the suggestions dismissed (docs/diagnosis.md)."""
    items = [{"c": c, "label": c.label, "status_text": command_status(c), "when": c.created_at} for c in commands]
    got = session.execute(select(RUNS.c.id).where(RUNS.c.name == run)).first()
    if got is not None:
        for r in diagnosis_store.responses_of(session.connection(), got.id):
            if r["response"] == "dismissed":
                items.append({"c": None, "dismissal": r, "when": r["created_at"],
                              "label": f"dismissed the suggestion for {r['arm']} ({r['diagnosis'].replace('_', ' ')} "
                                       f"since step {r['since_step']})"})
    items.sort(key=lambda i: cast(dt.datetime, i["when"]).replace(tzinfo=None), reverse=True)
    return items


# ---------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------


# The runs table's columns: (sort key, header, CSS class, what the header's title says).
RUN_COLUMNS = (
    ("run", "Run", "", ""),
    ("status", "Status", "", "running, stale (running but silent), finished, failed, interrupted"),
    ("project", "Project", "", ""),
    ("scheduler", "Scheduler", "", ""),
    ("arms", "Arms", "num", ""),
    ("steps", "Steps", "num", "steps reached"),
    ("duration", "Duration", "num", "start to end, or to the last message while running"),
    ("overrides", "Overrides", "num", "commands applied"),
    ("final", "Final eval", "num", "mean accuracy over arms of the latest evaluation"),
    ("best", "Best eval", "num", "the best such mean of the same evaluation set"),
    ("tags", "Tags", "", ""),
    ("note", "Note", "", ""),
    ("last_seen", "Last seen", "", ""),
)


def runs_url(params: dict[str, Any], **changes: Any) -> str:
    """The runs page's URL for `params` (filters, sort, order, page) with `changes`; empty values and
    page 1 are left out, so the URL says only what differs from the default."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if v not in (None, "") and not (k == "page" and v == 1)}
    return "/" + ("?" + urlencode(kept) if kept else "")


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    status: Annotated[str | None, Query()] = None,
    project: Annotated[str | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    archived: Annotated[str | None, Query(description="hide (default), only or all")] = None,
    sort: Annotated[str | None, Query()] = None,
    order: Annotated[str | None, Query()] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    deleted: Annotated[str | None, Query(max_length=300, description="a run just deleted (named in a notice)")] = None,
    runs: Annotated[list[str], Query(description="runs ticked for comparing (kept across refreshes)")] = [],  # noqa: B006
) -> HTMLResponse:
    query = runs_table.RunsQuery(
        status=status or None, project=project or None, search=q or None, tag=tag or None,
        archived=archived or "hide", sort=sort or None, order=order or runs_table.SORTS.get(sort or "", "desc"),
        page=page,
    )
    got = runs_table.runs_table(session, settings.stale_seconds, query)
    params = {"status": query.status, "project": query.project, "q": query.search, "tag": query.tag,
              "archived": "" if query.archived == "hide" else query.archived, "sort": query.sort,
              "order": query.order if query.sort else None, "page": query.page}
    ctx = {"runs": got.rows, "got": got, "query": query, "params": params, "runs_url": runs_url,
           "columns": RUN_COLUMNS, "sorts": runs_table.SORTS, "statuses": run_store.STATUSES, "selected": set(runs),
           "filtered": bool(query.status or query.project or query.search or query.tag or query.archived != "hide")}
    if is_htmx(request):
        return render(request, "_runs_table.html", principal, ctx)
    ctx.update(projects=run_store.projects(session), tags=manage_store.tag_names(session), deleted=deleted)
    return render(request, "runs.html", principal, ctx)


# ---------------------------------------------------------------------------------------------------
# A run
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartView:
    """One thing a run page chart can show: a per-arm series (`/series?metric=`), or the scheduler's
    score parts (`/parts`), kept live from `field` of the SSE step entries' arm records (docs/sse.md)."""

    metric: Metric | Literal["parts"]
    field: str
    label: str = ""  # its radio button in the chart's caption (a chart with one view has none)
    key: str = ""  # caption text shown with this view only (filled in by the page once data arrives)
    axis: str = ""  # the y axis title, with its unit
    counted: bool = False  # a per-arm statistic of the step's completions: hover shows how many


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart of the run page: its figure (run.html) and how static/js/run/ loads and draws it."""

    id: str
    title: str
    views: tuple[ChartView, ...]  # the first is the one the chart opens on; the others load when chosen
    stacked: bool = False  # a stacked area (the probabilities sum to 1)
    smooth: bool = False  # the EMA slider applies
    yrange: tuple[float, float] | None = None
    wide: bool = False  # the full width of the page
    # A heatmap shows the same statistic (static/js/run/heatmaps.js): above HEATMAP_ARMS arms the lines
    # are folded until asked for (64 lines do not read, and drawing them cost a second of the page load).
    heatmap: bool = False


# The run page's charts, in page order: rendered into the page's figures and sent in its data (#run-data),
# so the page's script holds no list of its own. Five charts, so the opening views' five data requests
# fit in the browser's six connections per host.
RUN_CHARTS: tuple[Chart, ...] = (
    Chart("chart-probability", "Sampling probability in force (overrides included)",
          (ChartView("probability", "p", axis="probability (0-1)"),), stacked=True, yrange=(0, 1),
          wide=True, heatmap=True),
    Chart("chart-mean_abs_adv", "Mean |advantage| per arm",
          (ChartView("mean_abs_adv", "mean_abs_adv", axis="mean |advantage|", counted=True),),
          smooth=True, heatmap=True),
    Chart("chart-accuracy", "Accuracy per arm",
          (ChartView("accuracy", "accuracy", axis="accuracy (0-1)", counted=True),), smooth=True,
          yrange=(0, 1.02), heatmap=True),
    Chart("chart-counts", "Completions",
          (ChartView("n_step", "n_step", "per step", axis="completions per step"),
           ChartView("n_total", "n_total", "cumulative", axis="completions, total"))),
    Chart("chart-score", "Scheduler",
          (ChartView("score", "score", "score", axis="score"),
           ChartView("parts", "parts", "its parts", key="e.g. DUMP: mu = exploit, bonus = explore",
                     axis="score term")), smooth=True),
)
# Above this many arms the heatmaps are the default view and the charts they cover are folded.
HEATMAP_ARMS = 12
# Points per arm per chart: up to 1,000, fewer when there are many arms, so a chart holds about 24,000
# points in all and the page draws in a second or two whatever the run's length.
CHART_POINTS = 24_000


def chart_points(n_arms: int) -> dict[str, int]:
    """The page's points budget: per arm of a metric chart, and per trace of the parts view (a trace
    per arm and part, DUMP's mu and bonus: half as many points each)."""
    per_arm = max(200, min(1000, CHART_POINTS // max(1, n_arms)))
    return {"per_arm": per_arm, "per_part": max(100, per_arm // 2)}


@router.get("/runs/{run:run}", response_class=HTMLResponse)
def run_page(
    run: str, request: Request, session: SessionDep, settings: SettingsDep, principal: PrincipalDep
) -> HTMLResponse:
    detail = run_store.get_run(session, run, settings.stale_seconds)
    if is_htmx(request):
        return render(request, "_run_header.html", principal,
                      {"run": detail, "labels": manage_store.labels(session, run)})
    return render(request, "run.html", principal, _run_ctx(session, detail))


def _run_ctx(
    session: Any, detail: run_store.RunView, forms: dict[tuple[str, str], dict[str, Any]] | None = None
) -> dict[str, Any]:
    commands = command_store.list_commands(session, detail.name, 200)
    markers = [
        {"step": c.applied_step, "label": c.label, "id": c.id}
        for c in reversed(commands) if c.status == "applied" and c.applied_step is not None
    ]
    page = {
        "run": detail.name,
        "event_seq": detail.event_seq,
        "arms": [a.name for a in detail.arms],
        "scheduler": detail.scheduler,
        "status": run_store.shown_status(detail.status, detail.stale),
        "markers": markers,
        "charts": [asdict(c) for c in RUN_CHARTS],
        "points": chart_points(len(detail.arms)),
    }
    return {
        "run": detail, "run_name": detail.name, "commands": _commands_ctx(session, detail.name, commands), "page": page,
        "kinds": KINDS,
        "charts": RUN_CHARTS, "heatmap_arms": HEATMAP_ARMS,
        "forms": forms or {}, "confirm": _CONFIRM, "labels": manage_store.labels(session, detail.name), "manage": {},
    }


@router.get("/runs/{run:path}/commands", response_class=HTMLResponse)
def run_commands(run: str, request: Request, session: SessionDep, principal: PrincipalDep) -> HTMLResponse:
    """The audit log table (the run page refreshes it when an ack arrives)."""
    return render(request, "_commands.html", principal,
                  {"run_name": run,
                   "commands": _commands_ctx(session, run, command_store.list_commands(session, run, 200))})


def _parse_number(raw: str, what: str) -> float | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError as e:
        raise InvalidCommand(f"{what} must be a number, got {raw!r}") from e
    if not math.isfinite(value):
        raise InvalidCommand(f"{what} must be a finite number, got {raw!r}")
    return value


def _parse_steps(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as e:
        raise InvalidCommand(f"steps must be a whole number, got {raw!r}") from e


def _command_in(kind: str, arm: str, value: str, steps: str, reason: str) -> CommandIn:
    if kind not in KINDS:
        raise InvalidCommand(f"unknown command {kind!r}; one of: {', '.join(KINDS)}")
    what = "the pin probability" if kind == "pin" else "the boost factor"
    try:
        return CommandIn.model_validate({
            "kind": kind, "arm": arm, "value": _parse_number(value, what) if kind in ("pin", "boost") else None,
            "steps": _parse_steps(steps) if kind == "boost" else None, "reason": reason,
        })
    except ValidationError as e:
        first = e.errors()[0]
        raise InvalidCommand(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from e


@router.post("/runs/{run:path}/commands", response_class=HTMLResponse)
def post_run_command(
    run: str,
    request: Request,
    session: SessionDep,
    client: RedisDep,
    settings: SettingsDep,
    principal: PageOperator,
    kind: Annotated[str, Form()],
    arm: Annotated[str, Form()],
    value: Annotated[str, Form()] = "",
    steps: Annotated[str, Form()] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Send a command from the run page. Invalid: 400 with the form and its error."""
    values = {"value": value, "steps": steps, "reason": reason}
    try:
        cmd = _command_in(kind, arm, value, steps, reason)
        accepted = steering.submit(session, client, settings, run, cmd, principal.name)
    except (InvalidRequest, CommandConflict) as e:
        session.rollback()
        form = {"error": e.message, "values": values}
        return _form_response(request, session, settings, principal, run, arm, kind, form, 400)
    form = {"message": "sent; pending until the next step", "command_id": accepted.id, "values": {}}
    return _form_response(request, session, settings, principal, run, arm, kind, form, 200)


def _form_response(
    request: Request, session: Any, settings: Any, principal: Principal, run: str, arm: str, kind: str,
    form: dict[str, Any], status: int,
) -> Response:
    if not is_htmx(request):
        if status < 400:
            return RedirectResponse(f"/runs/{quote(run, safe='')}", status_code=303)
        detail = run_store.get_run(session, run, settings.stale_seconds)
        return render(request, "run.html", principal, _run_ctx(session, detail, {(arm, kind): form}), status)
    ctx = {
        "run_name": run, "arm": arm, "kind": kind, "form": form, "confirm": _CONFIRM,
        # On success the audit log gains the pending command (out-of-band swap).
        "oob_commands": _commands_ctx(session, run, command_store.list_commands(session, run, 200))
        if status < 400 else None,
    }
    return render(request, "_command_response.html", principal, ctx, status)


# ---------------------------------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------------------------------


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    runs: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies query defaults)
    metric: Annotated[str, Query()] = "",
    arm: Annotated[str, Query()] = "",
    target: Annotated[str, Query()] = "",
    smoothing: Annotated[str, Query()] = "",
) -> HTMLResponse:
    """Compare runs; every parameter lives in the URL. The parameters come as text, so a bad one (a target
    of 1.5, an unknown run or metric, more than MAX_RUNS runs) is answered with 400 and the form, its
    message next to the field, rather than FastAPI's 422."""
    typed = {"metric": metric, "arm": arm, "target": target, "smoothing": smoothing}
    selected = comparing.selected_runs(runs)
    result: comparing.Comparison | None = None
    errors: dict[str, str] = {}
    try:
        query = comparing.parse_query(runs, metric, arm, target, smoothing)
        comparing.check_runs(session, query.runs)
        if len(query.runs) >= 2:
            result = comparing.compare(session, query, settings.stale_seconds)
    except InvalidRequest as e:
        errors = e.details.get("fields") or {"form": e.message}
    ctx = {
        "selected": selected, "form": comparing.form_values(result, typed, errors), "errors": errors,
        "result": result, "choices": result.choices if result else comparing.metric_choices([]),
        "max_runs": comparing.MAX_RUNS, "all_runs": run_store.run_names(session),
    }
    template = "_compare_view.html" if is_htmx(request) else "compare.html"
    return render(request, template, principal, ctx, 400 if errors else 200)
