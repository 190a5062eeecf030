"""Run management: tags (the agent's and people's), notes, archiving, deleting a run, and their audit
log (`run_actions`).

The agent's tags are its `config["tags"]`, copied into `run_tags` (source "agent") at each run_start by
ingest (`sync_agent_tags`), so that filtering and sorting by tag read one table; people's tags (source
"user") are added and removed here. Every change a person makes is a `run_actions` row, in the same
transaction as the change.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from sqlalchemy import Connection, CursorResult, Table, delete, func, select, update
from sqlalchemy.orm import Session

from server.errors import InvalidRequest
from server.models import (
    TAG_MAX,
    DiagnosisChange,
    RunAction,
    RunDiagnosis,
    RunTag,
    SuggestionResponse,
    arm_rollups,
    part_rollups,
)
from server.store.runs import is_stale, shown_status
from server.store.sql import (
    ARM_STEPS,
    ARMS,
    COMMANDS,
    EVALS,
    RUN_STEPS,
    RUNS,
    SCHEDULER_SNAPSHOTS,
    insert,
    run_id,
    run_row,
    utcnow,
)

RUN_TAGS = cast(Table, RunTag.__table__)
RUN_ACTIONS = cast(Table, RunAction.__table__)
NOTE_MAX = 10_000
Action = Literal["archive", "unarchive", "tag", "untag", "note", "delete"]

# Every table with rows keyed by a run, in the order a deletion empties them (children first), with the
# name a person reads. arm_steps has no foreign key (see models.ArmStep); the others cascade, but the
# counts are what the confirmation and the audit row report. A new run-keyed table belongs here.
RUN_TABLES: tuple[tuple[Table, str], ...] = (
    (ARM_STEPS, "arm step rows"),
    (arm_rollups, "rollup rows"),
    (part_rollups, "score-part rollup rows"),
    (RUN_STEPS, "steps"),
    (EVALS, "evaluation rows"),
    (COMMANDS, "commands"),
    (cast(Table, RunDiagnosis.__table__), "arm diagnoses"),
    (cast(Table, DiagnosisChange.__table__), "diagnosis changes"),
    (cast(Table, SuggestionResponse.__table__), "suggestion answers"),
    (SCHEDULER_SNAPSHOTS, "scheduler snapshots"),
    (RUN_TAGS, "tags"),
    (ARMS, "arms"),
)


@dataclass(frozen=True, slots=True)
class TagChip:
    """A tag shown on a run: `source` "agent" (from the run's config; not removable here) or "user"."""

    tag: str
    source: str


@dataclass(frozen=True, slots=True)
class RunLabels:
    """What people set on a run: archived (since when), tags (the agent's first), note."""

    name: str
    archived_at: dt.datetime | None
    tags: list[TagChip]
    note: str | None


@dataclass(frozen=True, slots=True)
class LabelChange:
    """A person's changes to a run's labels; each part left at its default changes nothing."""

    add_tags: Iterable[str] = ()
    remove_tags: Iterable[str] = ()
    note: str | None = None  # "" clears the note
    archived: bool | None = None


@dataclass(frozen=True, slots=True)
class ActionEntry:
    run: str
    action: str
    detail: str
    actor: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class DeletionPreview:
    """What deleting a run removes: rows per table (named for people), in RUN_TABLES order."""

    name: str
    status: str
    last_step: int
    rows: dict[str, int]


# ---------------------------------------------------------------------------------------------------
# Tags
# ---------------------------------------------------------------------------------------------------


def agent_tags(config: Any) -> list[str]:
    """The tags of a run's config: `config["tags"]` as a list, or one comma-separated string; each
    stripped, cut to TAG_MAX characters, empty ones and repeats dropped, in their order."""
    raw = config.get("tags") if isinstance(config, dict) else None
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else ()
    return list(dict.fromkeys(t for t in (str(x).strip()[:TAG_MAX] for x in items) if t))


def check_tag(raw: str) -> str:
    """A tag a person typed, stripped; InvalidRequest unless it has 1 to TAG_MAX characters, no comma
    (forms take comma-separated tags) and no control characters."""
    tag = raw.strip()
    if not tag:
        raise InvalidRequest("a tag cannot be empty")
    if len(tag) > TAG_MAX:
        raise InvalidRequest(f"a tag has at most {TAG_MAX} characters, got {len(tag)}: {tag[:20]!r}...")
    if "," in tag or any(unicodedata.category(c).startswith("C") for c in tag):
        raise InvalidRequest(f"a tag cannot hold commas or control characters: {tag!r}")
    return tag


def sync_agent_tags(conn: Connection, run_id: int, config: Any) -> None:
    """Replace the run's agent tags with those of `config` (at run_start). A tag a person also added
    stays theirs."""
    conn.execute(delete(RUN_TAGS).where(RUN_TAGS.c.run_id == run_id, RUN_TAGS.c.source == "agent"))
    rows = [{"run_id": run_id, "tag": t, "source": "agent", "position": i} for i, t in enumerate(agent_tags(config))]
    if rows:
        conn.execute(insert(conn, RUN_TAGS).on_conflict_do_nothing(index_elements=["run_id", "tag"]), rows)


def tags_of_runs(db: Connection | Session, run_ids: Sequence[int]) -> dict[int, list[TagChip]]:
    """The tags of each run, the agent's first (in config order), then people's (as added)."""
    t = RUN_TAGS.c
    out: dict[int, list[TagChip]] = defaultdict(list)
    if run_ids:
        q = (select(t.run_id, t.tag, t.source).where(t.run_id.in_(list(run_ids)))
             .order_by(t.run_id, t.source, t.position))
        for run_id, tag, source in db.execute(q):
            out[run_id].append(TagChip(tag, source))
    return out


def tag_names(session: Session) -> list[str]:
    """Every tag in use, for the runs page's tag filter."""
    return [t for (t,) in session.execute(select(RUN_TAGS.c.tag).distinct().order_by(RUN_TAGS.c.tag))]


# ---------------------------------------------------------------------------------------------------
# Reading and changing what people set
# ---------------------------------------------------------------------------------------------------


def labels(session: Session, name: str) -> RunLabels:
    r = run_row(session, name, RUNS.c.id, RUNS.c.name, RUNS.c.archived_at, RUNS.c.note)
    return RunLabels(r.name, r.archived_at, tags_of_runs(session, [r.id]).get(r.id, []), r.note)


def record_action(session: Session, run: str, action: Action, detail: str, actor: str) -> None:
    session.execute(RUN_ACTIONS.insert().values(run=run, action=action, detail=detail, actor=actor,
                                                created_at=utcnow()))


def update_labels(session: Session, name: str, actor: str, change: LabelChange) -> RunLabels:
    """Apply a person's changes to a run, each one that changes something audited; the caller commits.

    A tag already there is not added twice; removing a tag the run lacks, or one from its config, is
    refused (InvalidRequest), before anything changes.
    """
    adds = list(dict.fromkeys(check_tag(t) for t in change.add_tags))
    removes = list(dict.fromkeys(t.strip() for t in change.remove_tags))
    note, archived = change.note, change.archived
    if note is not None and len(note) > NOTE_MAX:
        raise InvalidRequest(f"a note has at most {NOTE_MAX} characters, got {len(note)}")
    r = run_row(session, name, RUNS.c.id, RUNS.c.archived_at, RUNS.c.note)
    have = {c.tag: c.source for c in tags_of_runs(session, [r.id]).get(r.id, [])}
    for t in removes:
        if t not in have:
            raise InvalidRequest(f"run {name!r} has no tag {t!r}", run=name, tag=t)
        if have[t] == "agent":
            raise InvalidRequest(
                f"tag {t!r} of run {name!r} comes from the run's config (set by its training script); "
                "it cannot be removed here", run=name, tag=t,
            )
    t_ = RUN_TAGS.c
    if removes:
        session.execute(delete(RUN_TAGS).where(t_.run_id == r.id, t_.tag.in_(removes)))
        for t in removes:
            record_action(session, name, "untag", t, actor)
    new = [t for t in adds if t not in have or t in removes]
    if new:
        top = session.scalar(select(func.max(t_.position)).where(t_.run_id == r.id, t_.source == "user"))
        start = -1 if top is None else int(top)
        # A tag another request added meanwhile stays as it is (no duplicate-key error).
        add = insert(session.connection(), RUN_TAGS).on_conflict_do_nothing(index_elements=["run_id", "tag"])
        session.execute(add, [
            {"run_id": r.id, "tag": t, "source": "user", "position": start + 1 + i} for i, t in enumerate(new)
        ])
        for t in new:
            record_action(session, name, "tag", t, actor)
    if note is not None:
        text = note.strip() or None
        if text != r.note:
            session.execute(update(RUNS).where(RUNS.c.id == r.id).values(note=text))
            record_action(session, name, "note", text or "", actor)
    if archived is not None and archived != (r.archived_at is not None):
        session.execute(update(RUNS).where(RUNS.c.id == r.id).values(archived_at=utcnow() if archived else None))
        record_action(session, name, "archive" if archived else "unarchive", "", actor)
    return labels(session, name)


def actions(session: Session, run: str, limit: int = 100) -> list[ActionEntry]:
    """The run's management actions, newest first (a deleted run's included)."""
    a = RUN_ACTIONS.c
    q = (select(a.run, a.action, a.detail, a.actor, a.created_at).where(a.run == run)
         .order_by(a.created_at.desc(), a.id.desc()).limit(limit))
    return [ActionEntry(*row) for row in session.execute(q)]


# ---------------------------------------------------------------------------------------------------
# Deleting a run
# ---------------------------------------------------------------------------------------------------


def _count_rows(session: Session, run_id: int) -> dict[str, int]:
    return {
        label: int(session.scalar(select(func.count()).select_from(table).where(table.c.run_id == run_id)) or 0)
        for table, label in RUN_TABLES
    }


def deletion_preview(session: Session, name: str, stale_seconds: float) -> DeletionPreview:
    """What deleting the run would remove, for the confirmation."""
    r = run_row(session, name, RUNS.c.id, RUNS.c.status, RUNS.c.last_seen, RUNS.c.last_step)
    status = shown_status(r.status, is_stale(r.status, r.last_seen, stale_seconds))
    return DeletionPreview(name, status, r.last_step, _count_rows(session, r.id))


def delete_run(session: Session, name: str, actor: str) -> dict[str, int]:
    """Delete the run and every row keyed by it (RUN_TABLES), and audit it; the caller commits.

    The run's row is locked first (FOR UPDATE on PostgreSQL; the caller's BEGIN IMMEDIATE on SQLite),
    so an ingest batch of the run either commits before or recreates the run after. Returns the rows
    removed per table (the run's own row as "run").
    """
    rid = run_id(session, name)
    session.execute(select(RUNS.c.id).where(RUNS.c.id == rid).with_for_update())
    removed: dict[str, int] = {}
    for table, label in RUN_TABLES:
        res = cast(CursorResult[Any], session.execute(delete(table).where(table.c.run_id == rid)))
        removed[label] = int(res.rowcount)
    session.execute(delete(RUNS).where(RUNS.c.id == rid))
    removed["run"] = 1
    detail = ", ".join(f"{n} {label}" for label, n in removed.items() if n and label != "run") or "no rows"
    record_action(session, name, "delete", detail, actor)
    return removed
