"""Alerts (server/alerts.py) against a real HTTP receiver in the test: diagnosis changes from a real
agent, a failed run, a stale run; the receiver down, then back; the Slack-compatible body."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from pydantic import SecretStr

from server.settings import Settings
from tests.server.conftest import REDIS_URL, LiveServer, free_port, run_start, step_msg, wait_for, xadd
from trainer_agent import CurriculumAgent

from .test_diagnoses_api import step_bernoulli


class Receiver:
    """A webhook receiver: an HTTP server on a port of its own, recording each JSON body it is sent."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.bodies: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                bodies.append(orjson.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


def alerting(settings: Settings, receiver: Receiver, **over: Any) -> Settings:
    return settings.model_copy(update={
        "alert_webhook_url": SecretStr(receiver.url), "alert_backoff_s": 0.1, "alert_backoff_max_s": 0.5,
        "alert_max_attempts": 100, "alert_stale_check_s": 0.2, **over})


def test_diagnosis_changes_are_posted_with_their_reason_and_suggestion(
    make_server: Callable[..., LiveServer], settings: Settings, receiver: Receiver
) -> None:
    receiver.start()
    s = alerting(settings, receiver, alert_base_url="https://sb.example/")
    server = make_server(s, ingest=True)
    rates = {"easy": 1.0, "mid": 0.5, "hard": 0.0}
    rng = np.random.default_rng(0)
    with CurriculumAgent("alert-diag", list(rates), scheduler="uniform", redis_url=REDIS_URL,
                         key_prefix=s.key_prefix, seed=0) as agent:
        step_bernoulli(agent, rates, rng, 40)
    got = wait_for(lambda: {b["arm"]: b for b in receiver.bodies if b["kind"] == "diagnosis"}.keys() >= {"easy", "hard"}
                   and {b["arm"]: b for b in receiver.bodies if b["kind"] == "diagnosis"})
    easy = got["easy"]
    api = {a["arm"]: a for a in server.client.get("/api/runs/alert-diag/diagnoses").json()["arms"]}
    assert (easy["diagnosis"], easy["since_step"], easy["reason"]) == (
        "saturated", api["easy"]["since_step"], api["easy"]["reason"])
    assert easy["suggestion"]["label"] == "retire easy"
    assert easy["url"] == "https://sb.example/runs/alert-diag"
    assert easy["text"] == f"[alert-diag] easy: {api['easy']['reason']}. Suggested: retire easy"
    assert got["hard"]["diagnosis"] == "too_hard"
    # "learning" is not among STEERBOARD_ALERT_DIAGNOSES' defaults: the middle arm never alerts.
    assert "mid" not in got


def test_a_receiver_that_is_down_gets_the_alerts_once_it_is_back_in_slack_form(
    make_server: Callable[..., LiveServer], settings: Settings, receiver: Receiver, rds: redis.Redis
) -> None:
    s = alerting(settings, receiver, alert_format="slack")
    server = make_server(s, ingest=True)
    xadd(rds, s, run_start("alert-fail", 1, ["a", "b"]), step_msg("alert-fail", 2, 0, ["a", "b"]),
         {"v": 1, "type": "run_end", "run": "alert-fail", "seq": 3, "ts": time.time(), "status": "failed", "step": 0})
    wait_for(lambda: server.client.get("/api/runs/alert-fail").json().get("status") == "failed")
    # The job waits in Redis, pending with the sender, which retries with backoff; ingest went on.
    time.sleep(1.5)
    assert receiver.bodies == []
    assert rds.xlen(f"{s.key_prefix}alerts") == 1
    receiver.start()
    wait_for(lambda: receiver.bodies, timeout=10)
    assert receiver.bodies == [{"text": "[alert-fail] the run failed at step 0"}]
    # Delivered once: acknowledged, nothing left pending.
    wait_for(lambda: rds.xpending(f"{s.key_prefix}alerts", "alerts")["pending"] == 0)
    time.sleep(0.5)
    assert len(receiver.bodies) == 1


def test_a_run_that_goes_stale_alerts_once(
    make_server: Callable[..., LiveServer], settings: Settings, receiver: Receiver, rds: redis.Redis
) -> None:
    receiver.start()
    s = alerting(settings, receiver, stale_seconds=1.0, alert_projects=["watched"])
    server = make_server(s, ingest=True)
    xadd(rds, s, run_start("alert-quiet", 1, ["a"], project="watched"), step_msg("alert-quiet", 2, 0, ["a"]),
         run_start("alert-other", 1, ["a"], project="elsewhere"))
    wait_for(lambda: server.client.get("/api/runs/alert-quiet").json().get("last_step") == 0)
    body = wait_for(lambda: receiver.bodies, timeout=10)[0]
    assert (body["kind"], body["run"], body["last_step"]) == ("stale", "alert-quiet", 0)
    assert body["text"].startswith("[alert-quiet] the run is stale: no message since ")
    time.sleep(1.0)  # several more checks: the same silence alerts once, the other project never
    assert [b["run"] for b in receiver.bodies] == ["alert-quiet"]
