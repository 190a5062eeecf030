"""Pydantic models of what the JSON API returns and accepts (the OpenAPI response models)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from server.models import Metric
from server.wire import CommandKind


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


class ArmState(BaseModel):
    name: str
    metadata: dict[str, Any]
    state: str
    pin: float | None
    boost: float | None
    probability: float | None
    last_step: int


class RunDetail(RunSummary):
    params: dict[str, Any]
    config: dict[str, Any]
    host: str | None
    pid: int | None
    last_seq: int
    arms: list[ArmState]


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
    arm: str = Field(min_length=1, max_length=256)
    value: float | None = Field(
        None, allow_inf_nan=False, description="pin: probability in [0, 1]; boost: factor > 0"
    )
    steps: int | None = Field(
        None, le=1_000_000_000, description="boost only: expire after this many steps (>= 1)"
    )
    reason: str = Field("", max_length=2000)


class CommandAccepted(BaseModel):
    id: str
    status: Literal["pending"]


class CommandRecord(BaseModel):
    id: str
    run: str
    kind: str
    arm: str
    value: float | None
    steps: int | None
    actor: str
    reason: str
    created_at: dt.datetime
    status: str
    applied_step: int | None
    message: str | None
    acked_at: dt.datetime | None


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
