"""Many light SSE viewers in one asyncio process, and a reference subscriber to the live channel.

Each viewer is a raw HTTP/1.1 connection to GET /api/runs/{run}/events that notes, per event id, the wall
time the event's first bytes arrived (it finds `id: N` of each `update` in the stream; it does not parse
the JSON, so one process can hold a thousand viewers on a small machine). The reference subscriber
(a thread of the benchmark's main process) notes when each event was published to Redis, so
`receipt - publish` is the fan-out latency of the web process: Redis -> LiveHub -> every SSE socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
import redis

UPDATE = re.compile(rb"id: (\d+)\r?\nevent: update")
READY = re.compile(rb"event: ready")


class _Viewer(asyncio.Protocol):
    """One SSE connection; data_received notes the arrival of each `update` id (no stream buffering)."""

    def __init__(self, request: bytes, ready: list[int], until_seq: list[int], done: asyncio.Event,
                 finished: list[int], n: int) -> None:
        self.request, self.ready, self.until_seq, self.done, self.finished, self.n = (
            request, ready, until_seq, done, finished, n)
        self.times: dict[int, float] = {}
        self.tail = b""
        self.seen_ready = False
        self.over = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.tail + data if self.tail else data
        if not self.seen_ready and READY.search(buf):
            self.seen_ready = True
            self.ready[0] += 1
        end = 0
        for m in UPDATE.finditer(buf):
            self.times.setdefault(int(m.group(1)), now)
            end = m.end()
        self.tail = buf[max(end, len(buf) - 64):]
        if not self.over and self.until_seq[0] and self.until_seq[0] in self.times:
            self.over = True
            self.finished[0] += 1
            if self.finished[0] == self.n:
                self.done.set()


async def _viewers(base: str, runs: list[str], n: int, connect_batch: int = 50) -> None:
    """Connect `n` viewers to each of `runs`, print `READY k` once all got their `ready` event, read
    `{"until_seq": {run: S}}` (or EOF) from stdin, then print one JSON line: the run of each viewer and,
    per viewer, {seq: receipt wall time}."""
    u = urlsplit(base)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    total = n * len(runs)
    ready, finished = [0], [0]
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    viewers: list[_Viewer] = []
    of_run: list[str] = []
    untils: dict[str, list[int]] = {run: [0] for run in runs}
    for k in range(total):
        run = runs[k % len(runs)]
        path = f"/api/runs/{quote(run, safe='')}/events"
        request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        v = _Viewer(request, ready, untils[run], done, finished, total)
        await loop.create_connection(lambda v=v: v, host, port)  # type: ignore[misc]
        viewers.append(v)
        of_run.append(run)
        if k % connect_batch == connect_batch - 1:
            await asyncio.sleep(0.05)
    deadline = time.monotonic() + 120
    while ready[0] < total and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    print(f"READY {ready[0]}", flush=True)
    line = await loop.run_in_executor(None, sys.stdin.readline)
    until = json.loads(line)["until_seq"] if line.strip() else {}
    for run, seq in until.items():
        untils[run][0] = int(seq)
    finished[0] = sum(1 for v in viewers if v.until_seq[0] in v.times)
    if finished[0] < total:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 60)
    sys.stdout.write(json.dumps({"runs": of_run, "times": [{str(k): t for k, t in v.times.items()}
                                                           for v in viewers]}) + "\n")
    sys.stdout.flush()


def viewers_main(base: str, runs: list[str], n: int) -> None:
    asyncio.run(_viewers(base, runs, n))


class Subscriber:
    """A thread subscribed to a Redis channel (with `pattern`, to every channel the pattern matches) that
    hands each message to `on_message` with the wall time it arrived."""

    def __init__(self, redis_url: str, channel: str, pattern: bool = False) -> None:
        self._client = redis.Redis.from_url(redis_url)
        self._pubsub = self._client.pubsub()
        if pattern:
            self._pubsub.psubscribe(channel)
        else:
            self._pubsub.subscribe(channel)
        self._kind = "pmessage" if pattern else "message"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def on_message(self, msg: dict[str, Any], now: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self._pubsub.get_message(timeout=0.2)
            if msg is None or msg["type"] != self._kind:
                continue
            self.on_message(msg, time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()
        self._client.close()


def event_steps(doc: dict[str, Any]) -> list[tuple[int, float]]:
    """The (step, step ts) of each step a live event carries."""
    return [(int(s["step"]), float(s["ts"])) for s in doc.get("steps", ())]


class Published(Subscriber):
    """A thread subscribed to a run's live channel: the wall time each event seq was published."""

    def __init__(self, redis_url: str, channel: str) -> None:
        self.times: dict[int, float] = {}
        self.steps: dict[int, list[tuple[int, float]]] = {}  # seq -> [(step, step ts)]
        super().__init__(redis_url, channel)

    def on_message(self, msg: dict[str, Any], now: float) -> None:
        doc = orjson.loads(msg["data"])
        seq = int(doc["seq"])
        self.times.setdefault(seq, now)
        self.steps[seq] = event_steps(doc)


if __name__ == "__main__":  # python bench/_sse.py BASE RUN[,RUN...] N (viewers per run)
    viewers_main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]))
