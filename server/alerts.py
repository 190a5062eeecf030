"""Alerts: an outgoing webhook on diagnosis changes and on runs that fail or go stale.

Ingest never waits on it. The ingest worker turns the live events it publishes into alert jobs and
XADDs them to `{prefix}alerts` in the pipeline it runs after each commit anyway (`alert_jobs`: a dict
lookup per event when nothing alerts). A sender thread (`AlertSender`, started by the app's lifespan
when `STEERBOARD_ALERT_WEBHOOK_URL` is set) reads that stream with a consumer group, POSTs each job
(plain JSON, or a Slack-compatible `{"text": ...}` body), retries with exponential backoff while the
receiver is down, and XACKs it once delivered or given up. It also looks for runs that went stale
(running, silent for `stale_seconds`) and alerts once per silence. Several web processes may each run
a sender: the consumer group gives every job to one of them, and a stale run is claimed with SET NX.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote

import orjson
import redis
from sqlalchemy import Engine, select

from server.logsafe import printable
from server.settings import Settings
from server.store.runs import stale_clause
from server.store.sql import RUNS as _RUNS
from server.store.sql import utcnow

log = logging.getLogger(__name__)

GROUP = "alerts"


def stream_key(settings: Settings) -> str:
    return f"{settings.key_prefix}alerts"


def _stale_key(settings: Settings, run: str, last_seen: dt.datetime | None) -> str:
    stamp = last_seen.isoformat() if last_seen is not None else "never"
    return f"{settings.key_prefix}alerts:stale:{run}:{stamp}"


def alert_jobs(payload: dict[str, Any], diagnoses: frozenset[str]) -> list[dict[str, Any]]:
    """The alert jobs of one live event (docs/sse.md `update`): a diagnosis change into one of
    `diagnoses`, and a run reported failed."""
    jobs: list[dict[str, Any]] = []
    for d in payload.get("diagnoses", ()):
        if d.get("diagnosis") in diagnoses:
            jobs.append({"kind": "diagnosis", "run": payload["run"], "arm": d["arm"], "diagnosis": d["diagnosis"],
                         "previous": d.get("previous"), "since_step": d.get("since_step"), "step": d.get("step"),
                         "reason": d.get("reason"), "suggestion": d.get("suggestion")})
    status = payload.get("status")
    if status and status.get("status") == "failed":
        jobs.append({"kind": "failed", "run": payload["run"], "last_step": status.get("last_step"),
                     "ended_at": status.get("ended_at")})
    return jobs


def describe(job: dict[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    run = job["run"]
    if job["kind"] == "diagnosis":
        text = f"[{run}] {job['arm']}: {job['reason'] or job['diagnosis']}"
        if job.get("suggestion"):
            text += f". Suggested: {job['suggestion']['label']}"
        return text
    if job["kind"] == "failed":
        return f"[{run}] the run failed at step {job.get('last_step')}"
    return f"[{run}] the run is stale: no message since {job.get('last_seen')} (last step {job.get('last_step')})"


def body(job: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The webhook's JSON body: the job with its text and the run page's URL, or Slack's `{"text"}`."""
    base = settings.alert_base_url.rstrip("/")
    url = f"{base}/runs/{quote(job['run'], safe='')}" if base else None
    text = describe(job)
    if settings.alert_format == "slack":
        return {"text": f"{text} <{url}|open the run>" if url else text}
    return {**job, "text": text, "url": url}


def post(url: str, doc: dict[str, Any], timeout: float) -> None:
    """POST JSON; raises on a connection failure or a status other than 2xx."""
    req = urllib.request.Request(url, data=orjson.dumps(doc), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "steerboard-alerts"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        if not 200 <= resp.status < 300:
            raise urllib.error.HTTPError(url, resp.status, "not 2xx", resp.headers, None)


class AlertSender:
    """Delivers the alert stream's jobs to the webhook; `run(stop)` until stop is set."""

    def __init__(self, settings: Settings, engine: Engine, client: redis.Redis, consumer: str,
                 send: Callable[[str, dict[str, Any], float], None] = post) -> None:
        assert settings.alert_webhook_url is not None
        self.settings, self.engine, self.redis, self.consumer = settings, engine, client, consumer
        self.url = settings.alert_webhook_url.get_secret_value()
        self.stream = stream_key(settings)
        self.send = send
        self.projects = frozenset(settings.alert_projects)
        self.delivered = 0
        self.failed = 0  # jobs given up after alert_max_attempts
        self._last_stale = 0.0

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.ensure_group()
                break
            except redis.RedisError as e:
                log.warning("alerts: Redis error (%s); retrying in 1s", e)
                stop.wait(1.0)
        while not stop.is_set():
            try:
                if time.monotonic() - self._last_stale >= self.settings.alert_stale_check_s:
                    self._last_stale = time.monotonic()
                    self.check_stale()
                self.once(stop)
            except redis.RedisError as e:
                log.warning("alerts: Redis error (%s); retrying in 1s", e)
                stop.wait(1.0)
            except Exception:  # the sender must outlive a bad job or a database hiccup
                log.exception("alerts: sender error; retrying in 1s")
                stop.wait(1.0)

    def once(self, stop: threading.Event, block_ms: int = 500) -> int:
        """Claim jobs another sender left pending, read new ones, deliver each; how many were handled."""
        claimed: Any = self.redis.xautoclaim(self.stream, GROUP, self.consumer, min_idle_time=self._claim_idle_ms(),
                                             start_id="0-0", count=10)
        entries = [e for e in claimed[1] if e[1] is not None]
        if not entries:
            resp: Any = self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=10, block=block_ms)
            entries = resp[0][1] if resp else []
        for eid, fields in entries:
            if stop.is_set():
                break  # left pending: reclaimed later
            self._deliver(orjson.loads(fields[b"j"]), stop)
            self.redis.xack(self.stream, GROUP, eid)
        return len(entries)

    def _claim_idle_ms(self) -> int:
        # Longer than one job's whole retry schedule, so a live sender's job is never taken from it.
        s = self.settings
        worst = sum(min(s.alert_backoff_max_s, s.alert_backoff_s * 2 ** k) + s.alert_timeout_s
                    for k in range(s.alert_max_attempts))
        return int(1000 * (worst + 60))

    def _wanted(self, job: dict[str, Any]) -> bool:
        if not self.projects:
            return True
        with self.engine.connect() as conn:
            project = conn.execute(select(_RUNS.c.project).where(_RUNS.c.name == job["run"])).scalar()
        return project in self.projects

    def _deliver(self, job: dict[str, Any], stop: threading.Event) -> bool:
        if not self._wanted(job):
            return False
        s = self.settings
        doc = body(job, s)
        for attempt in range(s.alert_max_attempts):
            try:
                self.send(self.url, doc, s.alert_timeout_s)
                self.delivered += 1
                return True
            except (OSError, urllib.error.URLError) as e:
                wait = min(s.alert_backoff_max_s, s.alert_backoff_s * 2 ** attempt)
                log.warning("alerts: webhook failed (%s), attempt %d of %d; next in %.1fs", printable(e),
                            attempt + 1, s.alert_max_attempts, wait)
                if attempt + 1 < s.alert_max_attempts and stop.wait(wait):
                    return False
        self.failed += 1
        log.error("alerts: gave up on %s after %d attempts", printable(describe(job)), s.alert_max_attempts)
        return False

    def check_stale(self) -> int:
        """Queue a `stale` job for each run that went silent since it was last alerted; how many."""
        now = utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(select(_RUNS.c.name, _RUNS.c.last_seen, _RUNS.c.last_step)
                                .where(stale_clause(self.settings.stale_seconds, now))).all()
        queued = 0
        for name, last_seen, last_step in rows:
            if self.redis.set(_stale_key(self.settings, name, last_seen), b"1", nx=True, ex=30 * 86400):
                job = {"kind": "stale", "run": name, "last_step": last_step,
                       "last_seen": last_seen.isoformat() if last_seen is not None else None}
                self.redis.xadd(self.stream, {"j": orjson.dumps(job)}, maxlen=self.settings.alert_maxlen,
                                approximate=True)
                queued += 1
        return queued


def start_thread(settings: Settings, engine: Engine, consumer: str) -> tuple[threading.Thread, threading.Event]:
    """The sender in a daemon thread of this process; set the event to stop it."""
    client = redis.Redis.from_url(settings.redis_url, decode_responses=False, socket_timeout=10)
    sender = AlertSender(settings, engine, client, consumer)
    stop = threading.Event()

    def target() -> None:
        try:
            sender.run(stop)
        finally:
            client.close()

    thread = threading.Thread(target=target, name="steerboard-alerts", daemon=True)
    thread.start()
    return thread, stop


def queue_jobs(pipe: Any, settings: Settings, payloads: list[dict[str, Any]], diagnoses: frozenset[str]) -> None:
    """XADD the events' alert jobs on `pipe` (the ingest worker's post-commit pipeline)."""
    key = stream_key(settings)
    for payload in payloads:
        for job in alert_jobs(payload, diagnoses):
            cast(Any, pipe).xadd(key, {"j": orjson.dumps(job)}, maxlen=settings.alert_maxlen, approximate=True)
