"""One shared Redis subscriber per web process, fanning live events out to SSE connections.

The ingest worker publishes on `{prefix}{run}:live` after each commit a JSON document with `seq`,
the run's gapless event sequence number. Every SSE connection tracks the last seq it sent; on a
gap (a slow consumer's queue overflowed, Redis reconnected, two workers published out of order)
it rebuilds the missing events from SQL (server.store.events.events_since), so a page never misses or
repeats an event, including when it reconnects with `Last-Event-ID`.

Fan-out does the per-event work once, not once per connection: the hub parses an event's `seq` and
encodes its SSE frame (`id`, `event`, `data` lines) when it arrives, and every connection of the run is
handed the same `Frame`, whose bytes go to the socket as they are. What a connection does per event is
a queue append, a comparison and a write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from server.redis_clients import pubsub_client
from server.settings import Settings

log = logging.getLogger(__name__)


SSE_SEP = b"\r\n"  # sse-starlette's line separator, for frames built here and there alike


def sse_frame(event: str, event_id: int, data: bytes) -> bytes:
    """One server-sent event, encoded: `id`, `event`, a `data` line per line of `data`, a blank line."""
    lines = data.splitlines() if (b"\n" in data or b"\r" in data) else [data]
    head = b"id: %d%bevent: %b%b" % (event_id, SSE_SEP, event.encode(), SSE_SEP)
    return head + b"".join(b"data: " + line + SSE_SEP for line in lines) + SSE_SEP


@dataclass(frozen=True, slots=True)
class Frame:
    """A live event as every connection of its run sends it."""

    seq: int
    data: bytes  # the whole SSE frame


@dataclass(eq=False)
class Subscription:
    """One SSE connection's view of a run's live channel."""

    run: str
    queue: asyncio.Queue[Frame] = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    lagged: bool = False  # set when events were dropped for it; it must catch up from SQL
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class LiveHub:
    """Pattern-subscribes once to every run's live channel and dispatches messages by run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._subs: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: aioredis.Redis | None = None
        self._keys = settings.keys
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._client = pubsub_client(self.settings.redis_url, socket_connect_timeout=5)
        self._task = asyncio.create_task(self._loop(), name="steerboard-live-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def subscribe(self, run: str) -> Subscription:
        sub = Subscription(run)
        self._subs.setdefault(run, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.run)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.run]

    def _dispatch(self, run: str, data: bytes) -> None:
        subs = self._subs.get(run)
        if not subs:
            return
        try:
            seq = int(orjson.loads(data)["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("live hub: an event of a run without a seq was dropped")
            return
        frame = Frame(seq, sse_frame("update", seq, data))
        for sub in subs:
            try:
                sub.queue.put_nowait(frame)
            except asyncio.QueueFull:
                sub.lagged = True  # the connection catches up from SQL instead
            sub.wake.set()

    def _mark_all_lagged(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.lagged = True
                sub.wake.set()

    async def _loop(self) -> None:
        assert self._client is not None
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.psubscribe(self._keys.live_pattern)
                # Anything published while we were not subscribed is only in SQL now.
                self._mark_all_lagged()
                self.connected.set()
                async for msg in pubsub.listen():
                    if msg.get("type") != "pmessage":
                        continue
                    run = self._keys.run_of_live(msg["channel"].decode(errors="replace"))
                    if run is not None:
                        self._dispatch(run, msg["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self.connected.clear()
                log.warning("live hub: Redis subscription lost (%s); resubscribing in 1s", e)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
