"""Pydantic models of wire protocol v1 (docs/wire.md): ingest messages and control commands.

The rules themselves (version, message types, command kinds, name rules, the per-arm record's
fields) live in `trainer_agent.protocol`, which the agent encodes with; this module only turns them
into validators, so both sides accept and refuse the same documents.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from typing_extensions import TypedDict

from trainer_agent.protocol import (
    MAX_STEP,
    PASS_HIST_BINS,
    AckStatus,
    ArmState,
    RunEndStatus,
    arm_name_problem,
    eval_name_problem,
    run_name_problem,
)


def _rule(problem_of: Any) -> AfterValidator:
    # Every step names every arm again: a name accepted once is accepted by a set lookup, one Python
    # call per record where asking `problem_of` costs three (bench/ingest.py: 4 % of a worker's CPU).
    accepted: set[str] = set()

    def check(name: str) -> str:
        if name in accepted:
            return name
        problem = problem_of(name)
        if problem is not None:
            raise ValueError(problem)
        if len(accepted) < 65536:
            accepted.add(name)
        return name

    return AfterValidator(check)


RunName = Annotated[str, _rule(run_name_problem)]
ArmName = Annotated[str, _rule(arm_name_problem)]
EvalName = Annotated[str, _rule(eval_name_problem)]
# Integers are bounded by the SQL columns they land in (a 32-bit INTEGER, a 64-bit BIGINT).
Int32 = Annotated[int, Field(ge=0, le=2**31 - 1)]
Int64 = Annotated[int, Field(ge=0, le=2**63 - 1)]
StepNo = Annotated[int, Field(ge=-1, le=MAX_STEP)]
# NaN and infinities are refused (dead-lettered with the field that held one): JSON has no such numbers, the
# agent never sends them (protocol.encode), and the API's schemas promise numbers, not nulls in their place.
Finite = Annotated[float, Field(allow_inf_nan=False)]
# Unix seconds up to the year 9999, the last a datetime holds.
UnixTime = Annotated[float, Field(ge=0.0, le=253_402_300_799.0, allow_inf_nan=False)]
# An arm's prompts by pass rate, one count per bin of trainer_agent.protocol.PASS_HIST_BINS.
PassHist = Annotated[list[Int32], Field(min_length=len(PASS_HIST_BINS), max_length=len(PASS_HIST_BINS))]


def _each_arm_once(names: list[str]) -> None:
    """A message's records (a step's, an evaluation's) name each arm once."""
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"arm {dup!r} appears more than once")


class _Msg(BaseModel):
    # Extra keys are ignored (forward compatible, docs/wire.md).
    model_config = ConfigDict(extra="ignore", frozen=True)

    v: Literal[1]
    run: RunName
    seq: int = Field(ge=1, le=2**63 - 1)
    ts: UnixTime


class ArmSpec(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: ArmName
    metadata: dict[str, Any] = Field(default_factory=dict)


class RunStart(_Msg):
    type: Literal["run_start"]
    project: str = "default"
    scheduler: str = "unknown"
    params: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    arms: list[ArmSpec] = Field(default_factory=list)
    host: str | None = None
    pid: Int32 | None = None


class ArmRecord(TypedDict):
    """One arm's record in a `step` message. A TypedDict, not a model: a step carries one per arm,
    and validating to plain dicts is ~1.4x faster, which matters at 100k records/s. Optional keys
    may be absent; read them with `.get()`."""

    arm: ArmName
    p: Annotated[float, Field(ge=0.0, le=1.0)]
    n_step: Int32
    n_total: Int64
    score: NotRequired[Finite | None]
    parts: NotRequired[dict[str, Finite]]
    mean_abs_adv: NotRequired[Finite | None]
    mean_reward: NotRequired[Finite | None]
    accuracy: NotRequired[Finite | None]
    state: NotRequired[ArmState]
    pin: NotRequired[Finite | None]
    boost: NotRequired[Finite | None]
    n_groups: NotRequired[Int32 | None]
    zero_var: NotRequired[Annotated[float, Field(ge=0.0, le=1.0)] | None]
    pass_hist: NotRequired[PassHist | None]


class Step(_Msg):
    type: Literal["step"]
    step: int = Field(ge=0, le=MAX_STEP)
    metrics: dict[str, Finite] = Field(default_factory=dict)
    dropped: Int64 = 0
    arms: list[ArmRecord]

    @field_validator("arms")
    @classmethod
    def _one_record_per_arm(cls, arms: list[ArmRecord]) -> list[ArmRecord]:
        _each_arm_once([a["arm"] for a in arms])
        return arms


class CommandAck(_Msg):
    type: Literal["command_ack"]
    id: str = Field(min_length=1, max_length=36)
    status: AckStatus
    applied_step: Int32 | None = None
    message: str = ""


class Heartbeat(_Msg):
    type: Literal["heartbeat"]
    step: StepNo


class RunEnd(_Msg):
    type: Literal["run_end"]
    status: RunEndStatus
    step: StepNo


class EvalRecord(BaseModel):
    """One arm's result in an `eval` message: its accuracy, and the counts behind it when known."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    arm: ArmName
    accuracy: float = Field(ge=0.0, le=1.0, allow_inf_nan=False)
    correct: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    total: int | None = Field(None, ge=1, le=2**63 - 1)

    @model_validator(mode="after")
    def _counts(self) -> EvalRecord:
        if self.correct is not None:
            if self.total is None:
                raise ValueError(f"arm {self.arm!r}: correct is given without total")
            if self.correct > self.total:
                raise ValueError(f"arm {self.arm!r}: correct ({self.correct}) is more than total ({self.total})")
        return self


class Eval(_Msg):
    type: Literal["eval"]
    name: EvalName
    step: int = Field(ge=0, le=MAX_STEP)
    arms: list[EvalRecord] = Field(min_length=1)

    @field_validator("arms")
    @classmethod
    def _one_record_per_arm(cls, arms: list[EvalRecord]) -> list[EvalRecord]:
        _each_arm_once([a.arm for a in arms])
        return arms


class SchedulerReport(_Msg):
    """The scheduler in force after `step` (`trainer_agent.scheduler_control.SchedulerControl.snapshot`)."""

    type: Literal["scheduler"]
    step: int = Field(ge=0, le=MAX_STEP)
    name: str = Field(min_length=1, max_length=128)
    params: dict[str, Any] = Field(default_factory=dict)
    frozen: bool = False
    state: dict[str, Any] | None = None


AnyMessage = RunStart | Step | CommandAck | Heartbeat | RunEnd | Eval | SchedulerReport
IngestMessage = Annotated[AnyMessage, Field(discriminator="type")]
INGEST_ADAPTER: TypeAdapter[AnyMessage] = TypeAdapter(IngestMessage)
