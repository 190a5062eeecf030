"""The scheduler of a run: what is in force with every scheduler's parameters (the scheduler panel), and the
preview of a command. Scheduler commands themselves go through POST /api/runs/{run}/commands."""

from __future__ import annotations

from fastapi import APIRouter

from server import steering
from server.deps import Operator, SessionDep
from server.schemas import CommandIn, ErrorResponse, SchedulerCommandEntry, SchedulerPanel, SchedulerPreview
from server.store import commands as command_store
from server.store import scheduler as scheduler_store
from trainer_agent.protocol import SCHEDULER_COMMAND_KINDS
from trainer_agent.schedulers import available_schedulers, scheduler_class

router = APIRouter(prefix="/api/runs", tags=["scheduler"])


@router.get("/{run:path}/scheduler", response_model=SchedulerPanel, responses={404: {"model": ErrorResponse}})
def get_scheduler(run: str, session: SessionDep) -> SchedulerPanel:
    """The scheduler in force as the agent last reported it, the schema of its parameters and of every
    scheduler a switch may name, and the run's scheduler commands (newest first)."""
    _, view = scheduler_store.scheduler_view(session, run)
    head = view.head
    schedulers = {name: {k: p.describe() for k, p in scheduler_class(name).param_schema.items()}
                  for name in available_schedulers()}
    history = [
        SchedulerCommandEntry(id=c.id, kind=c.kind, scheduler=c.scheduler, params=c.params, actor=c.actor,
                              reason=c.reason, created_at=c.created_at, status=c.status, applied_step=c.applied_step,
                              message=c.message, label=c.label)
        for c in command_store.list_commands(session, run, 200, kinds=SCHEDULER_COMMAND_KINDS)
    ]
    return SchedulerPanel(
        name=head.name, params=head.params, frozen=head.frozen, step=head.step, previewable=view.state is not None,
        param_schema=schedulers.get(head.name, {}), schedulers=schedulers, history=history,
    )


@router.post(
    "/{run:path}/scheduler/preview",
    response_model=SchedulerPreview,
    responses={
        401: {"model": ErrorResponse, "description": "a bearer token is required"},
        404: {"model": ErrorResponse, "description": "no such run"},
        409: {"model": ErrorResponse, "description": "the run's state forbids the command, or there is no "
              "scheduler state to preview from"},
        422: {"model": ErrorResponse, "description": "the command can never be valid as written"},
    },
)
def preview_command(run: str, body: CommandIn, session: SessionDep, actor: Operator) -> SchedulerPreview:
    """The probabilities per arm now and after the command (any kind; built for the scheduler commands),
    computed with the agent's own code from its latest scheduler snapshot. Nothing is sent or recorded."""
    return steering.preview(session, run, body)
