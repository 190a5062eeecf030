"""Pydantic models of what the JSON API returns and accepts (the OpenAPI response models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.models import Metric
from server.store.commands import AuditEntry
from server.store.runs import ArmSnapshot, RunView
from trainer_agent.protocol import CommandKind


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody


class RunSummary(BaseModel):
    name: str
    project: str
    scheduler: str
    status: str = Field(description="running, finished, failed or interrupted, as last reported")
    stale: bool = Field(description="running but not heard from for more than stale_seconds")
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    last_seen: dt.datetime | None
    last_step: int
    dropped: int
    event_seq: int = Field(description="id of the latest live event of this run (SSE)")


# Store dataclasses served as they are (pydantic validates and documents stdlib dataclasses, so a
# mirror model would only repeat their fields): a run in full, an arm of a run, and a command of the audit log.
__all__ = ["ArmSnapshot", "AuditEntry", "RunView"]


class TagOut(BaseModel):
    tag: str
    source: Literal["agent", "user"] = Field(
        description="agent: from the run's config['tags'] (replaced at each run_start, not removable here); "
        "user: added by a person"
    )


class RunListItem(RunSummary):
    shown_status: str = Field(description="what the pages show: `status`, or stale for a stale running run")
    arms: int
    steps: int = Field(description="steps reached: last_step + 1")
    duration_s: float | None = Field(description="from the start to the end, or to the last message while running")
    overrides: int = Field(description="commands the run applied")
    eval_name: str | None = Field(description="the evaluation set of the run's latest evaluation")
    final_eval: float | None = Field(description="mean accuracy over arms of the run's latest evaluation")
    best_eval: float | None = Field(description="the best such mean of the same evaluation set")
    tags: list[TagOut] = Field(description="the agent's first, in config order, then people's as added")
    note: str | None
    archived_at: dt.datetime | None = Field(description="set while the run is archived")


class RunPatch(BaseModel):
    """Changes to what people set on a run; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    add_tags: list[str] = Field(default_factory=list, max_length=50)
    remove_tags: list[str] = Field(default_factory=list, max_length=50,
                                   description="people's tags only (the agent's come from the run's config)")
    note: str | None = Field(None, max_length=10_000, description='free text; "" clears it')
    archived: bool | None = Field(None, description="archived runs are hidden from the default runs list")


class RunManaged(BaseModel):
    name: str
    archived_at: dt.datetime | None
    tags: list[TagOut]
    note: str | None


class RunDeleted(BaseModel):
    run: str
    rows: dict[str, int] = Field(description="rows removed, per kind (arm step rows, steps, commands, ...)")
    redis_keys: int = Field(description="Redis keys of the run removed (its control stream and applied marker)")


class RunActionRecord(BaseModel):
    run: str
    action: Literal["archive", "unarchive", "tag", "untag", "note", "delete"]
    detail: str = Field(description="the tag, the new note, or what a deletion removed")
    actor: str
    created_at: dt.datetime


class ArmSeries(BaseModel):
    arm: str
    steps: list[int]
    values: list[float]
    downsampled: bool = Field(description="true when each bucket kept only its min and max points")


class Series(BaseModel):
    run: str
    metric: Metric
    series: list[ArmSeries]


class PartSeries(BaseModel):
    arm: str
    part: str = Field(description="a term of the scheduler's score, e.g. DUMP's mu (exploit) and bonus (explore)")
    steps: list[int]
    values: list[float]
    downsampled: bool = Field(description="true when each bucket kept only its min and max points")


class Parts(BaseModel):
    run: str
    series: list[PartSeries]


class StepRow(BaseModel):
    step: int
    ts: float
    seq: int
    metrics: dict[str, Any]


class StepTimes(BaseModel):
    run: str
    steps: list[int]
    ts: list[float] = Field(description="unix seconds of each step in `steps`")


class EvalPoint(BaseModel):
    name: str = Field(description="the evaluation set, e.g. greedy, heldout, aime24")
    step: int
    arm: str = Field(description="as the trainer named it; need not be a training arm")
    accuracy: float
    correct: float | None
    total: int | None


class Evals(BaseModel):
    run: str
    names: list[str] = Field(description="every evaluation name of the run, whichever `name` was asked for")
    evals: list[EvalPoint] = Field(description="ordered by name, step, arm")


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: CommandKind
    arm: str | None = Field(
        None, min_length=1, max_length=256, description="the arm of pin/boost/retire/restore/release; "
        "none for the scheduler commands (set_params, switch, freeze, unfreeze)"
    )
    value: float | None = Field(
        None, allow_inf_nan=False, description="pin: probability in [0, 1]; boost: factor > 0"
    )
    steps: int | None = Field(
        None, le=1_000_000_000, description="boost only: expire after this many steps (>= 1)"
    )
    scheduler: str | None = Field(default=None, max_length=128, description="switch only: the scheduler to switch to")
    params: dict[str, Any] | None = Field(
        default=None, max_length=64, description="set_params: parameter -> new value; switch: the new scheduler's "
        "parameters (GET /api/runs/{run}/scheduler lists each scheduler's schema)"
    )
    reason: str = Field("", max_length=2000)


class ArmPreview(BaseModel):
    arm: str
    current: float = Field(description="the probability in force, from the agent's latest scheduler snapshot")
    preview: float = Field(description="what the command would put in force")


class SchedulerPreview(BaseModel):
    """What a command would do to the probabilities now, computed from the agent's scheduler state."""

    scheduler: str = Field(description="the scheduler the preview ends with")
    params: dict[str, Any]
    frozen: bool
    message: str = Field(description="what the agent's acknowledgement would say")
    snapshot_step: int = Field(description="the step of the scheduler snapshot the preview starts from")
    last_step: int = Field(description="the run's last step; later than snapshot_step when the snapshot is older")
    pending: int = Field(description="commands still pending, applied before this one in the preview")
    arms: list[ArmPreview]


class SchedulerCommandEntry(BaseModel):
    """A scheduler command of the audit log, with the label its chart marker shows."""

    id: str
    kind: str
    scheduler: str | None
    params: dict[str, Any] | None
    actor: str
    reason: str
    created_at: dt.datetime
    status: str
    applied_step: int | None
    message: str | None
    label: str


class SchedulerPanel(BaseModel):
    """The scheduler in force (as the agent last reported it), every scheduler's parameters, the history."""

    name: str
    params: dict[str, Any]
    frozen: bool
    step: int = Field(description="the step of the latest snapshot; -1: none yet (name and params from run_start)")
    previewable: bool = Field(description="the agent sent its scheduler state, so previews can be computed")
    param_schema: dict[str, dict[str, Any]] = Field(
        description="the scheduler's parameters: type, doc, low, high, low_open, high_open, choices"
    )
    schedulers: dict[str, dict[str, dict[str, Any]]] = Field(
        description="every scheduler a switch may name, with its parameters' schema"
    )
    history: list[SchedulerCommandEntry] = Field(description="the run's scheduler commands, newest first")


class CommandAccepted(BaseModel):
    id: str
    status: Literal["pending"]


class DeadLetter(BaseModel):
    id: str
    entry_id: str
    reason: str
    ts: float | None
    m: str = Field(description="the raw payload, truncated to 64 KiB")


class DeadLetters(BaseModel):
    count: int = Field(description="entries dead-lettered since the counter was created")
    retained: int = Field(description="entries still in the dead-letter stream")
    entries: list[DeadLetter]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    sql: str
    redis: str


class MetricSeries(BaseModel):
    name: str
    steps: list[int]
    values: list[float]
    downsampled: bool = Field(description="true when each bucket kept only its min and max points")


class Metrics(BaseModel):
    run: str
    names: list[str] = Field(description="every trainer metric the run sent, sorted")
    series: list[MetricSeries] = Field(description="the metrics asked for with ?name=, in that order")
