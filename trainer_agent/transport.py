"""Background streaming to Redis: the training thread only appends to a bounded queue.

One daemon thread per agent (rank 0) turns step statistics into wire messages (docs/wire.md), XADDs
them to the ingest stream, reads the run's control stream, and sends heartbeats. When Redis is
unreachable, messages are appended to a local spool file (JSON lines) and replayed in order when it
is back; anything that cannot be kept is counted and reported in the next step message.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import logging
import os
import queue
import re
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .overrides import Ack, Command
from .protocol import (
    Keys,
    RunEndStatus,
    command_ack_message,
    encode,
    envelope,
    heartbeat_message,
    redis_cluster_url,
    run_end_message,
    step_message,
)
from .run_status import install_sigterm_handler, status_of
from .step_stats import StepStats

log = logging.getLogger("trainer_agent.transport")

INGEST_MAXLEN = 1_000_000
CONTROL_POLL_S = 0.05
RECONNECT_S = 0.5
BATCH = 256
REPLAY_BATCH = 8


# What a Redis (or Redis Cluster) that is away raises: spool and retry.
_UNREACHABLE = (
    redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
    redis.exceptions.RedisClusterException, OSError,
)


def default_spool_dir(run: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run)[:120]
    return base / "steerboard" / "spool" / safe


DEFAULT_SPOOL_MAX_BYTES = 256 << 20
_STEP_PREFIX = '{"type":"step",'  # how protocol.encode writes a step message (its type comes first)


class Spool:
    """An append-only JSON-lines file of messages waiting for Redis, replayed oldest first.

    Replay reads it in small batches and records how far it got in a sidecar file, so a crash during
    replay re-sends at most one batch (the server is idempotent on (run, seq)).

    Bounded: past `max_bytes` of messages waiting, the oldest steps are thinned until they take three
    quarters of it: the older half of the waiting steps keeps every other step, again and again while it
    is still too big, so the older a stretch of the run the sparser it becomes, and the newest steps are
    all kept. Other messages (run_start, run_end, command acks, evaluations, heartbeats, scheduler
    snapshots) are never thinned. `append` returns how many steps it thinned.
    """

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        self.path = directory / "pending.jsonl"
        self.offset_path = directory / "pending.offset"
        self.max_bytes = max_bytes
        self._count: int | None = None
        self._bytes: int | None = None

    def __len__(self) -> int:
        """Messages not yet replayed."""
        if self._count is None:
            try:
                with self.path.open("rb") as f:
                    f.seek(self._offset())
                    self._count = sum(1 for line in f if line.strip())
            except FileNotFoundError:
                self._count = 0
        return self._count

    @property
    def nbytes(self) -> int:
        """Bytes of the messages not yet replayed."""
        if self._bytes is None:
            try:
                self._bytes = max(0, self.path.stat().st_size - self._offset())
            except FileNotFoundError:
                self._bytes = 0
        return self._bytes

    def _offset(self) -> int:
        try:
            return int(self.offset_path.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def append(self, payloads: list[str]) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(p + "\n" for p in payloads).encode("utf-8")
        with self.path.open("ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self._count = len(self) + len(payloads)
        self._bytes = self.nbytes + len(data)
        return self._thin() if self._bytes > self.max_bytes else 0

    def _thin(self) -> int:
        """Drop old steps until the waiting messages fit in 3/4 of `max_bytes`; how many were dropped."""
        offset = self._offset()
        sizes: list[int] = []
        steps: list[int] = []  # indexes of step lines
        with self.path.open("rb") as f:
            f.seek(offset)
            for i, line in enumerate(f):
                sizes.append(len(line))
                if line.startswith(_STEP_PREFIX.encode()):
                    steps.append(i)
        total, target = sum(sizes), self.max_bytes * 3 // 4
        drop: set[int] = set()
        while total > target:
            older = steps[: len(steps) // 2]  # the newest half is kept whole
            if len(older) < 2:
                break
            gone = older[1::2]  # every other one of the older half
            drop.update(gone)
            total -= sum(sizes[i] for i in gone)
            steps = [i for i in steps if i not in drop]
        if not drop:
            return 0
        tmp = self.path.with_suffix(".thin")
        with self.path.open("rb") as src, tmp.open("wb") as dst:
            src.seek(offset)
            for i, line in enumerate(src):
                if i not in drop:
                    dst.write(line)
            dst.flush()
            os.fsync(dst.fileno())
        # Offset first: a crash in between re-sends what was sent already, which the server ignores.
        self.offset_path.write_text("0")
        os.replace(tmp, self.path)
        self._count = len(sizes) - len(drop)
        self._bytes = total
        log.warning("steerboard: the spool passed %d bytes; %d of its oldest steps were thinned out",
                    self.max_bytes, len(drop))
        return len(drop)

    def batches(self, size: int) -> Iterator[tuple[list[str], int]]:
        """Yield (payloads, end offset) from where the last replay stopped."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(self._offset())
            batch: list[str] = []
            for line in f:
                if line.strip():
                    batch.append(line.decode("utf-8").rstrip("\n"))
                if len(batch) >= size:
                    yield batch, f.tell()
                    batch = []
            if batch:
                yield batch, f.tell()

    def commit(self, offset: int, n: int) -> None:
        """Mark everything before byte `offset` as sent."""
        self.offset_path.write_text(str(offset))
        self._count = max(0, len(self) - n)
        self._bytes = None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.offset_path.unlink(missing_ok=True)
        self._count = 0
        self._bytes = 0


class Transport:
    """Streams one run's messages to Redis and collects its commands, from a daemon thread.

    Args:
        redis_url: Redis to talk to.
        run: run name.
        key_prefix: prefix of every key (docs/wire.md).
        spool_dir: where messages wait while Redis is unreachable.
        heartbeat_s: seconds between heartbeats.
        close_timeout: the most `close()` waits for the queue to drain.
        queue_size: bound of the in-memory queue between the training thread and this one.
        last_step: the run's last completed step before this agent's first (-1 for a new run): what
            heartbeats say until this agent completes a step.
        spool_max_bytes: the most the spool keeps waiting (default: STEERBOARD_SPOOL_MAX_BYTES or 256 MiB);
            past it the oldest steps are thinned (`Spool`) and counted in `dropped`.
    """

    def __init__(self, redis_url: str, run: str, key_prefix: str = "steerboard:",
                 spool_dir: str | os.PathLike[str] | None = None, heartbeat_s: float = 5.0,
                 close_timeout: float = 5.0, queue_size: int = 10_000, last_step: int = -1,
                 spool_max_bytes: int | None = None) -> None:
        self.redis_url = redis_url
        self.run = run
        keys = Keys(key_prefix)
        self.ingest_key = keys.ingest
        self.control_key = keys.control(run)
        self.applied_key = keys.control_applied(run)
        if spool_max_bytes is None:
            spool_max_bytes = int(os.environ.get("STEERBOARD_SPOOL_MAX_BYTES") or DEFAULT_SPOOL_MAX_BYTES)
        self.spool = Spool(Path(spool_dir) if spool_dir is not None else default_spool_dir(run), spool_max_bytes)
        self.heartbeat_s = heartbeat_s
        self.close_timeout = close_timeout
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=queue_size)
        self._commands: collections.deque[Command] = collections.deque()
        self._stream_ids: dict[str, str] = {}  # command id -> control stream id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"steerboard-transport-{run}", daemon=True)
        # seq starts at the start time in microseconds, so a restarted agent's messages sort after
        # everything an earlier process of the same run sent and (run, seq) stays unique.
        self._seq = time.time_ns() // 1000
        self.dropped = 0
        self.sent = 0
        self.connected = False
        self._client: redis.Redis | None = None
        self._last_read = "0-0"
        self._last_applied: str | None = None
        self._last_step = last_step
        self._next_heartbeat = 0.0
        self._retry_at = 0.0  # while disconnected: when to try Redis again
        self._closed = False

    # -- called from the training thread (never blocks on the network) ---------------------------
    def start(self, run_start: dict[str, Any]) -> None:
        self._put("msg", run_start)
        _install_exit_hooks()
        self._thread.start()
        _live.add(self)

    def send(self, msg: dict[str, Any]) -> None:
        """Queue a message built by a `protocol` encoder (an eval, say)."""
        self._put("msg", msg)

    def send_step(self, stats: StepStats) -> None:
        self._last_step = stats.step  # what heartbeats and a run_end at exit report
        self._put("step", stats)

    def send_acks(self, acks: list[Ack]) -> None:
        for a in acks:
            self._put("ack", a)

    def note_step(self, last_step: int) -> None:
        """The run's last completed step changed outside `send_step` (the agent loaded a state)."""
        self._last_step = last_step

    def take_commands(self) -> list[Command]:
        out = []
        while self._commands:
            out.append(self._commands.popleft())
        return out

    def _put(self, kind: str, item: Any) -> None:
        try:
            self._q.put_nowait((kind, item))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("steerboard queue full: %d messages dropped so far (is the transport stuck?)",
                          self.dropped)

    def close(self, status: RunEndStatus, step: int) -> None:
        """Queue `run_end`, then wait up to `close_timeout` s for everything to be sent or spooled."""
        if self._closed:
            return
        self._closed = True
        self._put("msg", run_end_message(status, step))
        self._stop.set()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive():
            log.warning("steerboard transport did not flush within %.1fs; %d messages left unsent",
                        self.close_timeout, self._q.qsize())
        _live.discard(self)

    # -- the background thread ----------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                payloads: list[str] = []
                try:
                    batch = self._drain(timeout=CONTROL_POLL_S)
                    payloads = [self._encode(kind, item) for kind, item in batch]
                    acked = [item.id for kind, item in batch if kind == "ack"]
                    now = time.monotonic()
                    if now >= self._next_heartbeat and not self._stop.is_set():
                        payloads.append(self._encode("msg", heartbeat_message(self._last_step)))
                        self._next_heartbeat = now + self.heartbeat_s
                    self._ship(payloads, acked)
                    self._poll_control()
                except Exception:  # never die: say why, keep what was in hand, go on
                    log.exception("steerboard transport error; keeping %d messages in the spool", len(payloads))
                    self._keep(payloads)
                    self.connected = False
                    self._retry_at = time.monotonic() + RECONNECT_S
                if self._stop.is_set() and self._q.empty():
                    break
        finally:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # closing a broken connection must not raise at exit
                    log.debug("closing the Redis client failed", exc_info=True)

    def _drain(self, timeout: float) -> list[tuple[str, Any]]:
        items: list[tuple[str, Any]] = []
        try:
            items.append(self._q.get(timeout=timeout))
            while len(items) < BATCH:
                items.append(self._q.get_nowait())
        except queue.Empty:
            pass
        return items

    def _encode(self, kind: str, item: Any) -> str:
        """One queued item as a wire document: a step, an ack, or a message dict already built."""
        self._seq += 1
        ts = time.time()
        if kind == "step":
            stats: StepStats = item
            msg = step_message(stats.step, stats.metrics, self.dropped, stats.records())
            ts = stats.ts
        elif kind == "ack":
            ack: Ack = item
            msg = command_ack_message(ack.id, ack.status, ack.applied_step, ack.message)
        else:
            msg = item
        return encode(envelope(msg, self.run, self._seq, ts))

    def _redis(self) -> redis.Redis:
        if self._client is not None:
            return self._client
        # Short timeouts and no client-side retries: this thread has its own retry loop and spool.
        cluster = redis_cluster_url(self.redis_url)
        if cluster is not None:
            from redis.cluster import RedisCluster

            client = cast(redis.Redis, RedisCluster.from_url(
                cluster, socket_connect_timeout=1.0, socket_timeout=2.0, decode_responses=True,
                retry=Retry(NoBackoff(), 0)))
        else:
            client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0,
                                          retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._client = client
        return client

    def _fault(self, e: Exception) -> None:
        if redis_cluster_url(self.redis_url) is not None and self._client is not None:
            self._client.close()
            self._client = None  # a cluster client is built again: its nodes may have changed
        if self.connected:
            log.warning("steerboard: Redis unreachable (%s); spooling to %s", e, self.spool.path)
        self.connected = False
        self._retry_at = time.monotonic() + RECONNECT_S

    def _ship(self, payloads: list[str], acked: list[str]) -> None:
        """XADD `payloads` (after any spooled backlog), or spool them; `acked`: the command ids they ack."""
        if not self.connected and time.monotonic() < self._retry_at:
            self._keep(payloads)
            return
        try:
            client = self._redis()  # a cluster client finds its nodes here: it may fail
            if not self.connected:
                client.ping()
                if self._last_applied is None:
                    stored = cast("str | None", client.get(self.applied_key))
                    self._last_applied = stored or "0-0"
                    self._last_read = self._last_applied
                    if stored:
                        self._restore_overrides(client, stored)
                log.info("steerboard: connected to Redis at %s", _redact(self.redis_url))
                self.connected = True
            if len(self.spool):
                replayed = 0
                for batch, offset in self.spool.batches(REPLAY_BATCH):
                    self._xadd(client, batch)
                    self.spool.commit(offset, len(batch))
                    replayed += len(batch)
                    # Let the training thread have the GIL between batches.
                    time.sleep(0.002)
                self.spool.clear()
                log.info("steerboard: replayed %d spooled messages", replayed)
            if payloads:
                self._xadd(client, payloads)
            self._mark_applied(client, acked)
        except _UNREACHABLE as e:
            self._fault(e)
            self._keep(payloads)

    def _xadd(self, client: redis.Redis, payloads: list[str]) -> None:
        pipe = client.pipeline(transaction=False)
        for p in payloads:
            pipe.xadd(self.ingest_key, {"m": p}, maxlen=INGEST_MAXLEN, approximate=True)
        pipe.execute()
        self.sent += len(payloads)

    def _keep(self, payloads: list[str]) -> None:
        if not payloads:
            return
        try:
            self.dropped += self.spool.append(payloads)
        except OSError as e:
            self.dropped += len(payloads)
            log.error("steerboard: cannot spool %d messages (%s); %d dropped so far",
                      len(payloads), e, self.dropped)

    def _mark_applied(self, client: redis.Redis, acked: list[str]) -> None:
        """Remember the control-stream id of the last acknowledged command, in Redis."""
        last = None
        for command_id in acked:
            sid = self._stream_ids.pop(command_id, None)
            if sid is not None:
                last = sid
        if last is not None:
            client.set(self.applied_key, last)
            self._last_applied = last

    def _restore_overrides(self, client: redis.Redis, upto: str) -> None:
        """A restarted agent re-applies, without acks, the commands an earlier process answered."""
        entries = cast("list[tuple[str, dict[str, str]]]", client.xrange(self.control_key, "-", upto))
        restored = 0
        for _sid, fields in entries:
            try:
                cmd = Command.from_message(json.loads(fields.get("m", "")))
            except (ValueError, TypeError):
                continue
            self._commands.append(dataclasses.replace(cmd, replay=True))
            restored += 1
        if restored:
            log.info("steerboard: restoring overrides from %d earlier commands", restored)

    def _poll_control(self) -> None:
        if not self.connected or self._client is None:
            return
        try:
            resp = cast("list[tuple[str, list[tuple[str, dict[str, str]]]]] | None",
                        self._client.xread({self.control_key: self._last_read}, count=100))
        except _UNREACHABLE as e:
            self._fault(e)
            return
        for _key, entries in resp or []:
            for sid, fields in entries:
                self._last_read = sid
                try:
                    cmd = Command.from_message(json.loads(fields.get("m", "")))
                except (ValueError, TypeError) as e:
                    log.warning("steerboard: ignoring malformed command %s: %s", sid, e)
                    continue
                self._stream_ids[cmd.id] = sid
                self._commands.append(cmd)


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


_live: weakref.WeakSet[Transport] = weakref.WeakSet()
_uncaught: list[tuple[type[BaseException], BaseException]] = []
_prev_excepthook = sys.excepthook
_exit_hooks_installed = False


def _excepthook(tp: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    _uncaught.append((tp, value))
    _prev_excepthook(tp, value, tb)


def _install_exit_hooks() -> None:
    """Once per process: remember uncaught exceptions, unwind on SIGTERM, close open transports at exit."""
    global _exit_hooks_installed, _prev_excepthook
    if _exit_hooks_installed:
        return
    _exit_hooks_installed = True
    _prev_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    install_sigterm_handler()
    atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    """Close transports nobody closed (run_end says how the process ended), within their timeout."""
    status = status_of(*_uncaught[-1]) if _uncaught else status_of(None)
    for t in list(_live):
        t.close(status=status, step=t._last_step)
