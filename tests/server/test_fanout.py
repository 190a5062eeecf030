"""SSE fan-out to many viewers of one run: all connect at once (no connection is held from the pool for a
stream's life, and a burst of requests does not deadlock the pool against the thread pool), each gets
every event exactly once and byte for byte the same frame (encoded once per event by the hub)."""

from __future__ import annotations

import asyncio
import re

import pytest
import redis

from server.live import sse_frame
from server.settings import Settings

from .conftest import BACKENDS, LiveServer, run_start, step_msg, wait_for, xadd

ARMS = ["a", "b", "c"]
VIEWERS = 120  # far over the pool's 15 connections and the thread pool's 40 threads
UPDATE = re.compile(rb"id: (\d+)\r\nevent: update\r\n(data: [^\r\n]*\r\n)\r\n")


async def _viewer(port: int, run: str, last: int, ready: asyncio.Queue[None]) -> list[tuple[int, bytes]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/runs/{run}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    buf = b""
    got: list[tuple[int, bytes]] = []
    told = False
    try:
        while not any(b'"step":%d,' % last in data for _, data in got):
            chunk = await reader.read(1 << 16)
            assert chunk, "the stream ended"
            buf += chunk
            if not told and b"event: ready" in buf:
                told = True
                ready.put_nowait(None)
            got = [(int(m.group(1)), m.group(2)) for m in UPDATE.finditer(buf)]
        return got
    finally:
        writer.close()


async def _watch(port: int, run: str, n: int, last: int, start: asyncio.Event) -> list[list[tuple[int, bytes]]]:
    ready: asyncio.Queue[None] = asyncio.Queue()
    tasks = [asyncio.create_task(_viewer(port, run, last, ready)) for _ in range(n)]
    for _ in range(n):
        await asyncio.wait_for(ready.get(), 60)
    start.set()
    return await asyncio.wait_for(asyncio.gather(*tasks), 60)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_many_viewers_get_every_event_once(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    run = "fan"
    xadd(rds, settings, run_start(run, 1, ARMS), step_msg(run, 2, 0, ARMS))
    wait_for(lambda: app_server.client.get(f"/api/runs/{run}").status_code == 200
             and app_server.client.get(f"/api/runs/{run}").json()["last_step"] == 0)
    seq0 = app_server.client.get(f"/api/runs/{run}").json()["event_seq"]
    port = int(app_server.url.rsplit(":", 1)[1])

    async def main() -> list[list[tuple[int, bytes]]]:
        start = asyncio.Event()
        watch = asyncio.create_task(_watch(port, run, VIEWERS, 5, start))
        await asyncio.wait_for(start.wait(), 90)
        await asyncio.to_thread(xadd, rds, settings, *(step_msg(run, 3 + k, 1 + k, ARMS) for k in range(5)))
        return await watch

    seen = asyncio.run(main())
    assert len(seen) == VIEWERS
    first = seen[0]
    # Every event after the connection, in order, once: the worker may store the five steps in fewer batches.
    assert [s for s, _ in first] == list(range(seq0 + 1, seq0 + 1 + len(first)))
    steps = [st for _, data in first for st in range(1, 6) if b'"step":%d,' % st in data]
    assert steps == [1, 2, 3, 4, 5]
    for other in seen[1:]:
        assert other == first  # the same events, once each, byte for byte


def test_sse_frame_splits_lines() -> None:
    assert sse_frame("update", 7, b'{"a":1}') == b'id: 7\r\nevent: update\r\ndata: {"a":1}\r\n\r\n'
    assert sse_frame("x", 1, b"a\nb\r\nc") == b"id: 1\r\nevent: x\r\ndata: a\r\ndata: b\r\ndata: c\r\n\r\n"
