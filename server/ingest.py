"""The ingest worker: `{prefix}ingest` (a Redis stream, consumer group) into SQL, at least once.

One worker per process or thread; N workers share one consumer group. Each batch is validated
(server.wire), written in one transaction (server.store.ingest.apply_ingest, idempotent), and only then
XACKed; entries that can never be written go to `{prefix}ingest:dead` with the reason. After the
commit the worker publishes what changed to each run's live channel for the web processes.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
from pydantic import ValidationError
from redis.cluster import RedisCluster
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from server import alerts
from server.db import SQLITE_IMMEDIATE
from server.logsafe import printable
from server.redis_clients import sync_client
from server.settings import Settings
from server.store.diagnoses import DIAGNOSIS_CONFIG, diagnosis_config
from server.store.events import LiveEvent
from server.store.ingest import Entry, apply_ingest
from server.wire import INGEST_ADAPTER

log = logging.getLogger(__name__)

DEAD_PAYLOAD_LIMIT = 64 * 1024
RawEntry = tuple[bytes | str, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """A stream entry that can never be stored, on its way to the dead-letter stream."""

    entry_id: str
    raw: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class _Parsed:
    ids: list[str]
    valid: list[Entry]
    dead: list[RejectedEntry]

    def extend(self, other: _Parsed) -> None:
        """Take `other`'s entries after these (the lists are this batch's own)."""
        self.ids.extend(other.ids)
        self.valid.extend(other.valid)
        self.dead.extend(other.dead)


class TransientError(Exception):
    """SQL cannot be reached right now; the batch stays pending and is retried."""


class _GCPause:
    """Pause the cyclic garbage collector while batches are parsed and written.

    A batch allocates about a million short-lived objects (parsed records, row tuples) that
    reference counting frees at once; the collector, triggered by the allocation count, would scan
    them over and over for nothing (17% of ingest CPU). Counted, because the reader thread and the
    writer pause it independently and `gc.disable()` is process-wide.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = True

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _GCPause()


def consumer_name() -> str:
    """A name unique to this worker (host, pid and a random suffix: threads share a pid)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _reason(err: ValidationError) -> str:
    errors = err.errors(include_url=False, include_input=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first['msg']}"
    if first["type"] == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag")
        return f"unknown message type {tag!r}"
    if first["type"] == "union_tag_not_found":
        return "message has no 'type'"
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5]]
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "validation failed: " + "; ".join(parts) + more


def _is_entry_fault(err: Exception) -> bool:
    """Errors that one entry's data causes (it is dead-lettered). Anything else (a lost connection,
    a lock, a missing table after a bad deploy) is the database's state: the batch is retried and
    nothing is discarded."""
    return isinstance(err, IntegrityError | DataError | OverflowError)


class IngestWorker:
    """Reads the ingest stream with a consumer group and writes it to SQL.

    Args:
        settings: keys, batch size, block time, claim idle time, size limit.
        engine: the SQL engine (SQLite or PostgreSQL).
        client: a synchronous Redis client with `decode_responses=False`.
        consumer: this worker's consumer name (unique; generated when omitted).
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        client: redis.Redis,
        consumer: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = client
        self.consumer = consumer or consumer_name()
        self.stream = settings.keys.ingest
        self.group = settings.ingest_group
        self._last_claim = 0.0
        self._cluster = isinstance(client, RedisCluster)
        self._last_maintenance = 0.0
        self._last_prune = 0.0
        self._pruner: threading.Thread | None = None
        self.diagnosis = diagnosis_config(settings)
        # Alert jobs go out with the post-commit pipeline (server/alerts.py), only when a webhook is set.
        self.alert_diagnoses = frozenset(settings.alert_diagnoses) if settings.alert_webhook_url else None
        self.committed = 0  # entries written and acked (counting dead letters)
        self.dead = 0

    def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def run(self, stop: threading.Event) -> None:
        """Process batches until `stop` is set; survives SQL and Redis outages (retrying).

        A reader thread fetches and validates the next batch while this thread writes the current
        one: validation holds the GIL but the database works outside it, so the two overlap.
        """
        self.ensure_group()
        log.info("ingest worker %s reading %s (group %s)", self.consumer, self.stream, self.group)
        batches: queue.Queue[_Parsed] = queue.Queue(maxsize=2)
        reader = threading.Thread(target=self._reader, args=(stop, batches), name="ingest-reader", daemon=True)
        reader.start()
        while not stop.is_set():
            try:
                if time.monotonic() - self._last_claim >= self.settings.ingest_claim_interval_s:
                    self.claim_once(stop)
                if time.monotonic() - self._last_maintenance >= self.settings.ingest_maintenance_interval_s:
                    self.maintain()
                try:
                    parsed = batches.get(timeout=0.2)
                except queue.Empty:
                    continue
                # What the reader read meanwhile goes in the same transaction: a batch's cost is mostly
                # per run it holds (rollups, diagnosis, arm states), so with many runs one larger write
                # beats several small ones (bench/fleet.py: 40 runs).
                while len(parsed.ids) < self.settings.ingest_batch:
                    try:
                        parsed.extend(batches.get_nowait())
                    except queue.Empty:
                        break
                self._process_parsed(parsed, stop)
            except redis.RedisError as e:
                log.warning("ingest: Redis error (%s); retrying in 1s", e)
                stop.wait(1.0)
        reader.join()
        # What the reader already took is written now rather than left for XAUTOCLAIM (one try
        # each: with `stop` set, a database outage leaves them pending instead of blocking exit).
        while not batches.empty():
            try:
                self._process_parsed(batches.get_nowait(), stop)
            except redis.RedisError as e:
                log.warning("ingest: Redis error while draining (%s); entries stay pending", e)
                break
        self._leave()

    def _reader(self, stop: threading.Event, batches: queue.Queue[_Parsed]) -> None:
        while not stop.is_set():
            try:
                entries = self._read()
            except redis.RedisError as e:
                log.warning("ingest: Redis error (%s); retrying in 1s", e)
                if "NOGROUP" in str(e):
                    self._recreate_group()
                stop.wait(1.0)
                continue
            except Exception:  # never let the reader die silently while the writer waits on it
                log.exception("ingest: reader failed; retrying in 1s")
                stop.wait(1.0)
                continue
            if entries:
                with _gc_paused():
                    parsed = self._parse(entries)
                while not stop.is_set():
                    try:
                        batches.put(parsed, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                else:
                    batches.put(parsed)  # run() drains the queue after joining this thread

    def _read(self) -> list[RawEntry]:
        resp: Any = self.redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=self.settings.ingest_batch,
            block=self.settings.ingest_block_ms,
        )
        return cast(list[RawEntry], resp[0][1]) if resp else []

    def read_once(self, stop: threading.Event | None = None) -> int:
        """One XREADGROUP of new entries, processed; returns how many entries it handled."""
        entries = self._read()
        if entries:
            self.process(entries, stop)
        return len(entries)

    def claim_once(self, stop: threading.Event | None = None) -> int:
        """XAUTOCLAIM what other consumers left pending too long, and process it."""
        self._last_claim = time.monotonic()
        start: bytes | str = "0-0"
        total = 0
        while True:
            resp = self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.settings.ingest_claim_idle_ms,
                start_id=start,
                count=self.settings.ingest_batch,
            )
            start, claimed = resp[0], [e for e in resp[1] if e[1] is not None]
            if claimed:
                log.info("ingest: reclaimed %d entries left pending by another consumer", len(claimed))
                self.process(claimed, stop)
                total += len(claimed)
            if start in (b"0-0", "0-0"):
                return total

    def process(self, entries: Sequence[RawEntry], stop: threading.Event | None = None) -> None:
        """Validate, commit, then dead-letter, ack and publish. Retries while SQL is unreachable."""
        with _gc_paused():
            parsed = self._parse(entries)
        self._process_parsed(parsed, stop)

    def _process_parsed(self, parsed: _Parsed, stop: threading.Event | None) -> None:
        while True:
            try:
                with _gc_paused():
                    events, more_dead = self._commit(parsed.valid)
                break
            except TransientError as e:
                log.warning("ingest: database unavailable (%s); retrying in 1s", e)
                if stop is not None and stop.wait(1.0):
                    return  # left pending; another worker (or this one, restarted) reclaims it
                if stop is None:
                    time.sleep(1.0)
        self._finish(parsed.ids, [*parsed.dead, *more_dead], events)

    def _parse(self, entries: Sequence[RawEntry]) -> _Parsed:
        valid: list[Entry] = []
        dead: list[RejectedEntry] = []
        ids: list[str] = []
        limit = self.settings.ingest_max_bytes
        for raw_id, fields in entries:
            eid = _id(raw_id)
            ids.append(eid)
            raw = fields.get(b"m")
            if raw is None:
                dead.append(RejectedEntry(eid, orjson.dumps({_s(k): _s(v) for k, v in fields.items()}),
                                          "entry has no field 'm'"))
                continue
            if len(raw) > limit:
                dead.append(RejectedEntry(eid, raw, f"oversized: {len(raw)} bytes > limit {limit}"))
                continue
            try:
                msg = INGEST_ADAPTER.validate_json(raw)
            except ValidationError as e:
                dead.append(RejectedEntry(eid, raw, _reason(e)))
                continue
            valid.append(Entry(eid, msg, raw))
        return _Parsed(ids, valid, dead)

    def _commit(self, valid: list[Entry]) -> tuple[list[LiveEvent], list[RejectedEntry]]:
        if not valid:
            return [], []
        try:
            return self._write(valid), []
        except (SQLAlchemyError, OverflowError) as e:
            if not _is_entry_fault(e):
                raise TransientError(_first_line(e)) from e
            log.warning("ingest: batch of %d rejected (%s); writing entries one by one", len(valid), printable(e))
        # Isolate the entries the database refuses so the rest of the batch still lands.
        events: list[LiveEvent] = []
        dead: list[RejectedEntry] = []
        for entry in valid:
            try:
                events.extend(self._write([entry]))
            except (SQLAlchemyError, OverflowError) as e:
                if not _is_entry_fault(e):
                    raise TransientError(_first_line(e)) from e
                raw = entry.raw or INGEST_ADAPTER.dump_json(entry.msg)
                dead.append(RejectedEntry(entry.entry_id, raw, f"database rejected: {_first_line(e)}"))
        return events, dead

    def _write(self, entries: list[Entry]) -> list[LiveEvent]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{SQLITE_IMMEDIATE: True, DIAGNOSIS_CONFIG: self.diagnosis})
            with conn.begin():
                return apply_ingest(conn, entries)

    def _finish(self, ids: list[str], dead: list[RejectedEntry], events: list[LiveEvent]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        now = time.time()
        for d in dead:
            log.warning("ingest: dead-lettered entry %s: %s", d.entry_id, printable(d.reason))
            pipe.xadd(
                self.settings.keys.dead,
                {"m": d.raw[:DEAD_PAYLOAD_LIMIT], "reason": d.reason, "entry_id": d.entry_id, "ts": repr(now)},
                maxlen=self.settings.dead_maxlen,
                approximate=True,
            )
        if dead:
            pipe.incrby(self.settings.keys.dead_count, len(dead))
        if ids:
            pipe.xack(self.stream, self.group, *ids)
        # A cluster pipeline refuses PUBLISH (its nodes relay pub/sub anyway): sent after it there.
        live = [(self.settings.keys.live(ev.run), orjson.dumps(ev.payload)) for ev in events]
        if not self._cluster:
            for channel, doc in live:
                pipe.publish(channel, doc)
        if self.alert_diagnoses is not None and events:
            alerts.queue_jobs(pipe, self.settings, [ev.payload for ev in events], self.alert_diagnoses)
        pipe.execute()
        if self._cluster:
            for channel, doc in live:
                self.redis.publish(channel, doc)
        self.committed += len(ids)
        self.dead += len(dead)

    def _recreate_group(self) -> None:
        try:
            self.ensure_group()
        except redis.RedisError as e:
            log.warning("ingest: cannot recreate the consumer group: %s", e)

    def maintain(self) -> None:
        """Housekeeping between batches: dead consumers out of the group, and retention when it is due."""
        self._last_maintenance = time.monotonic()
        self.remove_dead_consumers()
        days = self.settings.retention_raw_days
        due = time.monotonic() - self._last_prune >= self.settings.retention_interval_s or not self._last_prune
        if days is not None and due and (self._pruner is None or not self._pruner.is_alive()):
            self._last_prune = time.monotonic()
            # Its own thread: a large run's DELETE must not hold up this worker's batches.
            self._pruner = threading.Thread(target=self._prune, args=(days,), name="ingest-retention", daemon=True)
            self._pruner.start()

    def _prune(self, days: float) -> None:
        from server.store.retention import prune_raw

        try:
            done = prune_raw(self.engine, days)
        except Exception:  # retried at the next interval
            log.exception("retention: pruning raw rows failed")
            return
        if done:
            log.info("retention: dropped %d raw arm rows of %d run(s) ended more than %g days ago",
                     sum(p.rows for p in done), len(done), days)

    def remove_dead_consumers(self) -> list[str]:
        """XGROUP DELCONSUMER every other consumer of the group idle past `ingest_consumer_idle_ms` with
        nothing pending (workers that died: what they left pending is reclaimed by XAUTOCLAIM first).
        Returns the names removed."""
        removed: list[str] = []
        try:
            consumers: Any = self.redis.xinfo_consumers(self.stream, self.group)
            for c in consumers:
                name = _s(c["name"])
                if name == self.consumer or int(c["pending"]) or int(c["idle"]) < self.settings.ingest_consumer_idle_ms:
                    continue
                # DELCONSUMER answers the entries it still had pending: 0 unless it read one just now, and
                # then it is alive after all (its entries would be lost to the group: re-checked first).
                if self.redis.xpending_range(self.stream, self.group, min="-", max="+", count=1, consumername=name):
                    continue
                self.redis.xgroup_delconsumer(self.stream, self.group, name)
                removed.append(name)
        except redis.RedisError as e:
            log.warning("ingest: could not clean up the consumer group: %s", e)
        if removed:
            log.info("ingest: removed %d dead consumer(s) from group %s: %s", len(removed), self.group,
                     ", ".join(removed))
        return removed

    def _leave(self) -> None:
        """Remove this consumer from the group on a clean stop, unless it still owns entries."""
        try:
            pending: Any = self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=1, consumername=self.consumer
            )
            if not pending:
                self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except redis.RedisError as e:
            log.debug("ingest: could not leave the group cleanly: %s", e)


def _first_line(err: Exception) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _id(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _s(v: bytes | str) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def start_thread(settings: Settings, engine: Engine) -> tuple[threading.Thread, threading.Event]:
    """Run a worker in a daemon thread of this process (`steerboard serve`); set the event to stop."""
    client = sync_client(settings.redis_url, decode_responses=False)
    worker = IngestWorker(settings, engine, client)
    stop = threading.Event()

    def target() -> None:
        try:
            worker.run(stop)
        except Exception:
            log.exception("ingest worker thread died")
        finally:
            client.close()

    thread = threading.Thread(target=target, name="steerboard-ingest", daemon=True)
    thread.start()
    return thread, stop


def read_dead_letters(client: redis.Redis, settings: Settings, limit: int) -> tuple[int, int, list[dict[str, Any]]]:
    """(total ever dead-lettered, entries still retained, the `limit` most recent, newest first)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(settings.keys.dead_count)
    pipe.xlen(settings.keys.dead)
    pipe.xrevrange(settings.keys.dead, count=limit)
    count, retained, entries = pipe.execute()
    out = []
    for eid, fields in entries:
        f = {_s(k): v for k, v in fields.items()}
        ts = f.get("ts")
        out.append({
            "id": _s(eid),
            "entry_id": _s(f.get("entry_id", b"")),
            "reason": _s(f.get("reason", b"")),
            "ts": float(ts) if ts is not None else None,
            "m": _s(f.get("m", b"")),
        })
    return int(count or 0), int(retained), out
