"""SQLAlchemy 2.0 typed models (docs/architecture.md). The schema itself changes only through migrations/."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Per-arm statistics charted over steps; each has min/max/sum/n/last columns in `arm_rollups`.
Metric = Literal[
    "probability", "score", "mean_abs_adv", "mean_reward", "accuracy", "n_step", "n_total", "zero_var",
    "pass_partial",
]
METRICS: tuple[str, ...] = get_args(Metric)
# Steps per rollup bucket, finest first: ingest keeps every level, so a chart of any range reads a few
# hundred rows per arm from the coarsest level that still has enough buckets. Changing these needs a
# migration that rebuilds arm_rollups.
ROLLUP_WIDTHS: tuple[int, ...] = (64, 256, 1024, 4096)
ROLLUP_BUCKET = ROLLUP_WIDTHS[0]
# Longest tag kept in run_tags (longer agent tags are cut; people's are refused).
TAG_MAX = 64


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, dt.datetime: UTCDateTime}


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (UniqueConstraint("name", name="uq_runs_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256))
    project: Mapped[str] = mapped_column(String(256), default="default", index=True)
    scheduler: Mapped[str] = mapped_column(String(128), default="unknown")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # running | finished | failed | interrupted ("stale" is derived at read time from last_seen).
    status: Mapped[str] = mapped_column(String(16), default="running")
    host: Mapped[str | None] = mapped_column(String(256))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    last_seen: Mapped[dt.datetime | None]
    last_step: Mapped[int] = mapped_column(Integer, default=-1)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    dropped: Mapped[int] = mapped_column(BigInteger, default=0)
    # Per-run sequence of committed ingest batches that changed something; the SSE event id.
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The event_seq at which status/ended_at last changed (so SSE replay can resend it).
    status_event_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The seq of the message that last set status: a re-delivered older run_end never overrides a
    # newer run_start (XAUTOCLAIM can hand old entries to a worker after newer ones were committed).
    status_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Set by people, never by ingest (server.store.manage): hidden from the default runs list while
    # archived_at is set; a free-text note.
    archived_at: Mapped[dt.datetime | None]
    note: Mapped[str | None] = mapped_column(Text)
    # The latest evaluation's set and mean accuracy over arms, and the best such mean of that set, kept by
    # ingest (store/evals.update_eval_summary) for the runs table, which sorts by them.
    eval_name: Mapped[str | None] = mapped_column(String(64))
    final_eval: Mapped[float | None] = mapped_column(Float)
    best_eval: Mapped[float | None] = mapped_column(Float)
    # When retention dropped its raw per-arm rows (server.store.retention); charts read its rollups only.
    raw_pruned_at: Mapped[dt.datetime | None]


class Arm(Base):
    __tablename__ = "arms"
    __table_args__ = (UniqueConstraint("run_id", "name", name="uq_arms_run_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(256))
    position: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    # As last reported by the agent in a step message.
    state: Mapped[str] = mapped_column(String(16), default="active")
    pin: Mapped[float | None] = mapped_column(Float)
    boost: Mapped[float | None] = mapped_column(Float)
    probability: Mapped[float | None] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(Integer, default=-1)


class ArmStep(Base):
    """One arm at one step: the bulk of the data (a row per arm per step).

    No foreign keys on purpose: PostgreSQL checks them row by row with triggers, which cut bulk
    ingest by 2/3. Only the ingest store writes these rows, with ids it has just resolved in the same
    transaction, and deleting a run deletes its rows explicitly.
    """

    __tablename__ = "arm_steps"
    # Keyed (and on SQLite clustered) step first: ingest appends every step's rows at the end of one
    # key range, and a zoomed chart reads a step range of all arms from sequential pages.
    __table_args__ = (
        PrimaryKeyConstraint("run_id", "step", "arm_id", name="pk_arm_steps"),
        {"sqlite_with_rowid": False},
    )

    run_id: Mapped[int] = mapped_column(Integer)
    arm_id: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)
    parts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_step: Mapped[int] = mapped_column(Integer)
    n_total: Mapped[int] = mapped_column(BigInteger)
    mean_abs_adv: Mapped[float | None] = mapped_column(Float)
    mean_reward: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    # The agent's signals (docs/wire.md): groups this step, the share of them with all rewards equal,
    # and the pass-rate profile of the arm's prompts (counts per protocol.PASS_HIST_BINS).
    n_groups: Mapped[int | None] = mapped_column(Integer)
    zero_var: Mapped[float | None] = mapped_column(Float)
    pass_hist: Mapped[list[int] | None] = mapped_column(JSON)
    # Derived from pass_hist on ingest, charted and rolled up like the metrics: the share of those prompts
    # solved in some attempts but not all (bins 1..3, 0 < pass rate < 1: the ones that still give GRPO a
    # gradient); null without a profile or when the window holds no prompt.
    pass_partial: Mapped[float | None] = mapped_column(Float)


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (Index("ix_run_steps_run_event", "run_id", "event_seq"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Float)
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_id: Mapped[str] = mapped_column(String(32))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The step's completions with an accuracy (sum over arms of n_step where accuracy is set), and the
    # sum of accuracy x n_step over those arms: the run's overall accuracy at the step is correct / graded.
    graded: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    correct: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class RunEval(Base):
    """One arm's accuracy in one evaluation (eval set `name`, at `step`), as the trainer reported it.

    `arm` is the trainer's name, not a key into `arms`: an eval set's arms need not be training arms.
    The first write wins (ingest inserts with ON CONFLICT DO NOTHING), like arm_steps.
    """

    __tablename__ = "evals"
    __table_args__ = (
        PrimaryKeyConstraint("run_id", "name", "arm", "step", name="pk_evals"),
        {"sqlite_with_rowid": False},
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    arm: Mapped[str] = mapped_column(String(256))
    accuracy: Mapped[float] = mapped_column(Float)
    correct: Mapped[float | None] = mapped_column(Float)
    total: Mapped[int | None] = mapped_column(BigInteger)
    ts: Mapped[float] = mapped_column(Float)  # the message's, unix seconds (the trainer's clock)
    # The run's live event that first carried this row (rebuilt for resuming SSE clients).
    event_seq: Mapped[int] = mapped_column(BigInteger)


class SentCommand(Base):
    """The audit log: every command the server sent, and what the agent answered."""

    __tablename__ = "commands"
    __table_args__ = (
        Index("ix_commands_run_created", "run_id", "created_at"),
        Index("ix_commands_run_ack_event", "run_id", "ack_event_seq"),
        Index("ix_commands_run_status_created", "run_id", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    arm: Mapped[str] = mapped_column(String(256))
    value: Mapped[float | None] = mapped_column(Float)
    steps: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    applied_step: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    acked_at: Mapped[dt.datetime | None]
    ack_event_seq: Mapped[int | None] = mapped_column(BigInteger)
    # Scheduler commands (issue 14; `arm` is ""): the scheduler a switch goes to, the parameters of
    # set_params and switch.
    scheduler: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class SchedulerSnapshot(Base):
    """A run's latest scheduler snapshot from its agent (wire message `scheduler`): what the scheduler
    panel shows and what the server decides and previews scheduler commands from. One row per run."""

    __tablename__ = "scheduler_snapshots"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(BigInteger)
    ts: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    frozen: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class User(Base):
    """A person who logs in to the pages; `role` is viewer or operator."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name", name="uq_users_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    password_hash: Mapped[str] = mapped_column(String(256))  # argon2id, PHC string
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime]
    # Set while the user may not log in (`steerboard user disable`); their sessions are deleted.
    disabled_at: Mapped[dt.datetime | None]


class UserSession(Base):
    """A login, held on the server: the cookie carries a random token, this row its SHA-256.

    Logging out, `steerboard user logout`, a password change, disabling or removing the user delete
    rows here, which ends those logins at the next request. The role is read from `users` on every
    request, so a role change takes effect at once too.
    """

    __tablename__ = "user_sessions"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_user_sessions_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime]
    last_seen_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(256))


class ServerState(Base):
    """Facts the server keeps about itself, by key. `credentials_seen`: a user or token has existed,
    so local dev mode never comes back on its own (server.auth)."""

    __tablename__ = "server_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[dt.datetime]


class ApiToken(Base):
    """A bearer token for scripts; only its SHA-256 is stored (the token itself is shown once)."""

    __tablename__ = "api_tokens"
    __table_args__ = (
        UniqueConstraint("name", name="uq_api_tokens_name"),
        UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    token_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime]


class RunTag(Base):
    """A tag of a run: from the agent (`config["tags"]`, replaced at each run_start) or added by a person.

    `position` orders a run's chips: the agent's in their config order, then people's as added.
    """

    __tablename__ = "run_tags"
    __table_args__ = (
        PrimaryKeyConstraint("run_id", "tag", name="pk_run_tags"),
        Index("ix_run_tags_tag", "tag"),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    tag: Mapped[str] = mapped_column(String(TAG_MAX))
    source: Mapped[str] = mapped_column(String(8))  # agent | user
    position: Mapped[int] = mapped_column(Integer)


class RunAction(Base):
    """The audit log of run management (archive, unarchive, tag, untag, note, delete): who, what, when.

    Keyed by the run's name, not its id: the row of a deletion outlives the run.
    """

    __tablename__ = "run_actions"
    __table_args__ = (Index("ix_run_actions_run_created", "run", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime]


# For the runs' evaluation summaries (store/evals.eval_summaries): one scan in this order groups
# each evaluation's arms without a sort (the key puts arm before step), covering what it reads.
Index("ix_evals_run_name_step", RunEval.run_id, RunEval.name, RunEval.step, RunEval.accuracy, RunEval.ts)


def _rollup_columns() -> list[Column[Any]]:
    cols: list[Column[Any]] = []
    for m in METRICS:
        cols.append(Column(f"{m}_n", Integer, nullable=False, default=0))
        cols.extend(Column(f"{m}_{agg}", Float, nullable=True) for agg in ("min", "max", "sum", "last"))
    return cols


# Per arm, width (ROLLUP_WIDTHS) and bucket of `width` steps: n/min/max/sum/last of each metric (mean = sum/n), with
# "last" the value at the bucket's last step. Maintained on ingest by upsert from the rows each batch
# inserts, so charts of long runs read few rows. Only Core touches it, hence a Table.
arm_rollups = Table(
    "arm_rollups",
    Base.metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("arm_id", ForeignKey("arms.id", ondelete="CASCADE"), primary_key=True),
    Column("width", Integer, primary_key=True),  # steps per bucket, one of ROLLUP_WIDTHS
    Column("bucket", Integer, primary_key=True),
    Column("first_step", Integer, nullable=False),
    Column("last_step", Integer, nullable=False),
    Column("n_rows", Integer, nullable=False),
    *_rollup_columns(),
    sqlite_with_rowid=False,
)

# Longest score-part name kept in part_rollups (longer ones stay in arm_steps.parts only).
PART_NAME_MAX = 64
# Widths kept for score parts: not the finest, which would more than double part_rollups' rows (and
# ingest's cost for them) for the parts view, a secondary one; zooms below 256 steps read raw rows.
PART_ROLLUP_WIDTHS: tuple[int, ...] = ROLLUP_WIDTHS[1:]

# The same buckets for the numeric parts of each arm's scheduler score (DUMP: mu and bonus), one row
# per part: a run's parts are named by its scheduler, so they cannot be columns of arm_rollups.
part_rollups = Table(
    "part_rollups",
    Base.metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("arm_id", ForeignKey("arms.id", ondelete="CASCADE"), nullable=False),
    Column("part", String(PART_NAME_MAX), nullable=False),
    Column("width", Integer, nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("first_step", Integer, nullable=False),
    Column("last_step", Integer, nullable=False),
    Column("value_n", Integer, nullable=False),
    Column("value_min", Float, nullable=False),
    Column("value_max", Float, nullable=False),
    Column("value_sum", Float, nullable=False),
    # Keyed by bucket before arm and part: a batch's new buckets go to the end of one key range per
    # width (not 4 x arms x parts places), and a chart reads all arms of a bucket range at once.
    PrimaryKeyConstraint("run_id", "width", "bucket", "arm_id", "part", name="pk_part_rollups"),
    sqlite_with_rowid=False,
)


class RunDiagnosis(Base):
    """What the diagnosis of a run carries from one ingest batch to the next (server/diagnosis.py): per
    arm id its decayed sums, candidate and diagnosis; `step` is the last step folded into it."""

    __tablename__ = "run_diagnoses"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime]


class DiagnosisChange(Base):
    """A change of an arm's diagnosis: it began at `since_step` and was confirmed at `step`."""

    __tablename__ = "diagnosis_changes"
    __table_args__ = (
        Index("ix_diagnosis_changes_run_event", "run_id", "event_seq"),
        Index("ix_diagnosis_changes_run_arm_step", "run_id", "arm_id", "step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    arm_id: Mapped[int] = mapped_column(ForeignKey("arms.id", ondelete="CASCADE"))
    since_step: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    diagnosis: Mapped[str | None] = mapped_column(String(16))
    previous: Mapped[str | None] = mapped_column(String(16))
    figures: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The run's live event that carried it (rebuilt for resuming SSE clients).
    event_seq: Mapped[int] = mapped_column(BigInteger)


class SuggestionResponse(Base):
    """A person accepted (the command sent: `command_id`) or dismissed the suggestion of an arm's diagnosis."""

    __tablename__ = "suggestion_responses"
    __table_args__ = (Index("ix_suggestion_responses_run_created", "run_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    arm: Mapped[str] = mapped_column(String(256))
    diagnosis: Mapped[str] = mapped_column(String(16))
    since_step: Mapped[int] = mapped_column(Integer)
    response: Mapped[str] = mapped_column(String(16))  # accepted | dismissed
    command_id: Mapped[str | None] = mapped_column(String(36))
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime]
