"""A command post decides on the run's pending commands without re-reading them when nothing but its own
posts changed them (server.steering.Projections), and re-reads them on any other change: a command
recorded by another web process, an answer from the agent, a new report of the arms."""

from __future__ import annotations

import uuid

import pytest
import redis
from sqlalchemy import Engine, insert, update

from server.settings import Settings
from server.store.sql import COMMANDS, run_id, utcnow

from .conftest import BACKENDS, LiveServer, step_msg, wait_for, xadd
from .test_api import ARMS, post, start_run


def other_process_pin(engine: Engine, run: str, arm: str, value: float) -> None:
    """A pin recorded as pending by another web process (straight into the audit log)."""
    with engine.begin() as conn:
        conn.execute(insert(COMMANDS).values(
            id=str(uuid.uuid4()), run_id=run_id(conn, run), kind="pin", arm=arm, value=value, steps=None,
            actor="other", reason="", created_at=utcnow(), status="pending",
        ))


def message(r: object) -> str:
    return str(r.json()["error"]["message"])  # type: ignore[attr-defined]


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_post_sees_every_change_to_the_pending_commands(
    app_server: LiveServer, rds: redis.Redis, settings: Settings, engine: Engine
) -> None:
    start_run(app_server, rds, settings, "proj")
    assert post(app_server, "proj", {"kind": "pin", "arm": "kk3", "value": 0.6}).status_code == 202
    # Decided on this process's own last post (kk3=0.6 pending).
    r = post(app_server, "proj", {"kind": "pin", "arm": "kk4", "value": 0.5})
    assert r.status_code == 409 and "other pins: kk3=0.6" in message(r)
    # Another process's pending pin counts.
    other_process_pin(engine, "proj", "kk5", 0.3)
    r = post(app_server, "proj", {"kind": "pin", "arm": "kk4", "value": 0.2})
    assert r.status_code == 409 and "other pins: kk3=0.6, kk5=0.3" in message(r), r.text
    assert post(app_server, "proj", {"kind": "pin", "arm": "kk4", "value": 0.1}).status_code == 202
    # The agent answered them all (rejected): nothing is pending, pins are free again.
    with engine.begin() as conn:
        conn.execute(update(COMMANDS).where(COMMANDS.c.status == "pending")
                     .values(status="rejected", message="test", acked_at=utcnow()))
    assert post(app_server, "proj", {"kind": "pin", "arm": "kk4", "value": 0.9}).status_code == 202
    # The agent reports kk4 retired at a new step; the pending pin of kk4 is then rejected on replay,
    # so a pin of kk3 has all of 1 - 0 to share.
    with engine.begin() as conn:
        conn.execute(update(COMMANDS).where(COMMANDS.c.status == "pending")
                     .values(status="rejected", message="test", acked_at=utcnow()))
    msg = step_msg("proj", 100, 3, ARMS)
    for rec in msg["arms"]:
        if rec["arm"] == "kk4":
            rec.update(state="retired", p=0.0)
    xadd(rds, settings, msg)
    wait_for(lambda: app_server.client.get("/api/runs/proj").json()["last_step"] == 3)
    r = post(app_server, "proj", {"kind": "pin", "arm": "kk4", "value": 0.1})
    assert r.status_code == 409 and "retired" in message(r)
    assert post(app_server, "proj", {"kind": "pin", "arm": "kk3", "value": 1.0}).status_code == 202
