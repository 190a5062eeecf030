"""Arm diagnoses of a run, their history, and suggestions accepted or dismissed (docs/diagnosis.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from server import steering
from server.db import write_transaction
from server.deps import Operator, RedisDep, SessionDep, SettingsDep
from server.errors import CommandConflict
from server.schemas import CommandIn, ErrorResponse
from server.store import diagnoses as store
from server.store.sql import run_id

router = APIRouter(prefix="/api/runs", tags=["diagnoses"])
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no such run"}}


class SuggestionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arm: str = Field(min_length=1, max_length=256)
    diagnosis: str = Field(description="the diagnosis the suggestion was made for (a stale one is a 409)")
    since_step: int = Field(description="the step that diagnosis began, as shown")
    reason: str | None = Field(None, max_length=2000,
                               description="accept: the command's reason (default: the suggestion's); dismiss: why")


class SuggestionResponseOut(BaseModel):
    arm: str
    diagnosis: str
    since_step: int
    response: Literal["accepted", "dismissed"]
    command_id: str | None
    actor: str
    reason: str


@router.get("/{run:path}/diagnoses", responses=_404)
def get_diagnoses(run: str, session: SessionDep, settings: SettingsDep,
                  history: Annotated[int, Query(ge=0, le=100_000)] = 1000,
                  latest: Annotated[bool, Query(description="add each arm's record at the run's last step")] = False,
                  ) -> dict[str, Any]:
    """Per arm the diagnosis in force, the step it began, the figures behind it, a reason and the
    suggested command; the latest `history` changes (oldest first); suggestions accepted or dismissed;
    `window`, the steps of the figures' decayed means. With `latest`, the arms' records at the last step
    (`{step, arms: [{arm, p, score, parts, n_step, n_total, mean_abs_adv, accuracy, n_groups, zero_var}]}`)."""
    got = store.run_diagnoses(session, run, store.diagnosis_config(settings), history)
    for c in got.changes:
        c.pop("event_seq", None)
    out = {"run": got.run, "step": got.step, "window": settings.diagnosis_window, "arms": got.arms,
           "changes": got.changes, "responses": got.responses}
    if latest:
        step, records = store.last_step_records(session, run)
        out["latest"] = {"step": step, "arms": records}
    return out


def _current(session: SessionDep, settings: SettingsDep, run: str, body: SuggestionBody) -> dict[str, Any]:
    got = store.run_diagnoses(session, run, store.diagnosis_config(settings), history=0)
    entry = next((a for a in got.arms if a["arm"] == body.arm), None)
    if entry is None or entry["diagnosis"] != body.diagnosis or entry["since_step"] != body.since_step:
        now = None if entry is None else f"{entry['diagnosis']} since step {entry['since_step']}"
        raise CommandConflict(f"arm {body.arm!r} is no longer {body.diagnosis} since step {body.since_step} "
                              f"(now: {now})", arm=body.arm)
    return entry


@router.post("/{run:path}/suggestions/accept", status_code=202, response_model=SuggestionResponseOut,
             responses={**_404, 409: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
                        503: {"model": ErrorResponse}})
def accept(run: str, body: SuggestionBody, session: SessionDep, client: RedisDep, settings: SettingsDep,
           actor: Operator) -> SuggestionResponseOut:
    """Send the suggested command, exactly, with its reason (or `reason`), and audit the acceptance.
    Posting the suggestion's `command` to `/commands` yourself sends the same command, unaudited here."""
    write_transaction(session)  # reads, then writes: the SQLite write lock first
    entry = _current(session, settings, run, body)
    s = entry["suggestion"]
    if s is None:
        raise CommandConflict(f"{entry['reason']}: no command is suggested", arm=body.arm)
    reason = body.reason or s["reason"]
    cmd = CommandIn(kind=s["kind"], arm=s["arm"], value=s["value"], steps=s["steps"], reason=reason)
    sent = steering.submit(session, client, settings, run, cmd, actor)
    # submit committed its own transaction: the audit row's read-then-write takes the write lock anew, or
    # an ingest commit in between fails it at once on SQLite ("database is locked").
    write_transaction(session)
    row = store.record_response(session, run_id(session, run), body.arm, body.diagnosis, body.since_step,
                                "accepted", sent.id, actor, reason)
    session.commit()
    return SuggestionResponseOut(**{k: row[k] for k in SuggestionResponseOut.model_fields})


@router.post("/{run:path}/suggestions/dismiss", status_code=201, response_model=SuggestionResponseOut,
             responses={**_404, 409: {"model": ErrorResponse}})
def dismiss(run: str, body: SuggestionBody, session: SessionDep, settings: SettingsDep,
            actor: Operator) -> SuggestionResponseOut:
    """Dismiss the suggestion of an arm's current diagnosis: audited with who, when and why."""
    write_transaction(session)  # reads, then writes: the SQLite write lock first
    _current(session, settings, run, body)
    row = store.record_response(session, run_id(session, run), body.arm, body.diagnosis, body.since_step,
                                "dismissed", None, actor, body.reason or "")
    session.commit()
    return SuggestionResponseOut(**{k: row[k] for k in SuggestionResponseOut.model_fields})
