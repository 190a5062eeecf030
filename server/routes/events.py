"""Server-sent events: a run's live updates, resumable with `Last-Event-ID`.

A page loads the run (its `event_seq`), then connects with `?after=<event_seq>` so nothing
committed in between is lost; the browser's automatic reconnects send `Last-Event-ID`.

Event types: `ready` (sent first; its id is the run's current event seq, so a client that has
seen nothing yet still gets a resume point), `update` (one committed ingest batch: new steps with
every arm field, command acks with what each command was, status changes; id = the run's event
seq), `reset` (more events were missed than the server replays; reload the page's data). Every
field is documented in docs/sse.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from server.deps import HubDep, SessionMakerDep, SettingsDep
from server.errors import InvalidRequest
from server.live import LiveHub, Subscription, sse_frame
from server.schemas import ErrorResponse
from server.store.events import LiveEvent, event_seq, events_since

router = APIRouter(prefix="/api/runs", tags=["events"])
MAX_EVENT_ID = 2**63 - 1  # a BIGINT
log = logging.getLogger(__name__)


@router.get(
    "/{run:path}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": ErrorResponse}},
)
async def run_events(
    run: str,
    hub: HubDep,
    maker: SessionMakerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
    after_seq: Annotated[
        int | None,
        Query(
            alias="after",
            ge=0,
            le=MAX_EVENT_ID,
            description="resume after this event id on a first connect (EventSource cannot send "
            "Last-Event-ID until it reconnects): the `event_seq` of the run data the page loaded",
        ),
    ] = None,
) -> EventSourceResponse:
    """Live updates of one run (text/event-stream)."""
    after: int | None = after_seq
    if last_event_id:  # a reconnect: newer than the page's `after`
        try:
            after = max(0, int(last_event_id))
            if after > MAX_EVENT_ID:
                raise ValueError(last_event_id)
        except ValueError as e:
            raise InvalidRequest(
                f"Last-Event-ID must be an event id from this stream, got {last_event_id[:40]!r}"
            ) from e

    def catch_up(since: int) -> tuple[int, list[LiveEvent]] | None:
        with maker() as session:
            return events_since(session.connection(), run, since, settings.sse_replay_limit)

    def current_seq() -> int:
        with maker() as session:
            return event_seq(session.connection(), run)

    # Subscribe before reading SQL so nothing committed in between is missed (seqs dedupe).
    sub = hub.subscribe(run)
    try:
        current = await run_in_threadpool(current_seq)  # also: 404 for an unknown run
    except BaseException:
        hub.unsubscribe(sub)
        raise
    return EventSourceResponse(
        _stream(run, sub, hub, catch_up, current_seq, current, after), ping=settings.sse_ping_s
    )


def _seq_frame(event: str, run: str, seq: int, event_id: int | None = None) -> bytes:
    return sse_frame(event, seq if event_id is None else event_id, orjson.dumps({"run": run, "seq": seq}))


async def _stream(
    run: str,
    sub: Subscription,
    hub: LiveHub,
    replay: Callable[[int], tuple[int, list[LiveEvent]] | None],
    current_seq: Callable[[], int],
    current: int,
    after: int | None,
) -> AsyncIterator[bytes]:
    try:
        if after is not None and after > current:
            # An id this run never reached (another database, a deleted run): start over.
            yield _seq_frame("reset", run, current)
            after = None
        last = current if after is None else after
        yield _seq_frame("ready", run, current, event_id=last)
        pending_gap = after is not None and after < current
        while True:
            if pending_gap or sub.lagged:
                sub.lagged = False
                pending_gap = False
                res = await run_in_threadpool(replay, last)
                if res is None:
                    seq = await run_in_threadpool(current_seq)
                    last = seq
                    yield _seq_frame("reset", run, seq)
                else:
                    for ev in res[1]:
                        if ev.seq > last:
                            last = ev.seq
                            yield sse_frame("update", ev.seq, orjson.dumps(ev.payload))
            try:
                frame = sub.queue.get_nowait()
            except asyncio.QueueEmpty:
                sub.wake.clear()
                if sub.queue.empty() and not sub.lagged:
                    await sub.wake.wait()
                continue
            if frame.seq <= last:
                continue  # already sent (replayed from SQL)
            if frame.seq > last + 1:
                pending_gap = True  # the missing events are committed; rebuild them from SQL
                continue
            last = frame.seq
            yield frame.data  # encoded once by the hub for every connection
    finally:
        hub.unsubscribe(sub)
