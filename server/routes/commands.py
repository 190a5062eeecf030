"""Steering commands (pin, boost, retire, restore, release) and their audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from server import steering
from server.deps import Operator, RedisDep, SessionDep, SettingsDep
from server.schemas import AuditEntry, CommandAccepted, CommandIn, ErrorResponse
from server.store import commands as command_store

router = APIRouter(prefix="/api/runs", tags=["commands"])


@router.post(
    "/{run:path}/commands",
    status_code=202,
    response_model=CommandAccepted,
    responses={
        401: {"model": ErrorResponse, "description": "a bearer token is required"},
        404: {"model": ErrorResponse, "description": "no such run"},
        409: {"model": ErrorResponse, "description": "the run's current state forbids the command"},
        422: {"model": ErrorResponse, "description": "the command can never be valid as written"},
        503: {"model": ErrorResponse, "description": "Redis unreachable; the command was not sent"},
    },
)
def post_command(
    run: str, body: CommandIn, session: SessionDep, client: RedisDep, settings: SettingsDep, actor: Operator
) -> CommandAccepted:
    """Send a command to a running run; it takes effect at the run's next step boundary.

    Answers 202 with the command id; the command stays `pending` in the audit log until the agent
    acknowledges it (`applied` with the step, or `rejected` with a reason).
    """
    return steering.submit(session, client, settings, run, body, actor)


@router.get("/{run:path}/commands", response_model=list[AuditEntry], responses={404: {"model": ErrorResponse}})
def list_commands(
    run: str, session: SessionDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 500
) -> list[AuditEntry]:
    """The audit log of a run's commands, newest first."""
    return command_store.list_commands(session, run, limit)
