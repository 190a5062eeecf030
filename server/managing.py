"""Managing runs: what people set on a run (tags, note, archived) and deleting a run, from SQL and from
Redis. The JSON API, the pages and the CLI all come through here (as commands come through
server.steering); the SQL is server.store.manage's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from sqlalchemy.orm import Session

from server.db import write_transaction
from server.logsafe import printable
from server.settings import Settings
from server.store import manage

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeletedRun:
    run: str
    rows: dict[str, int]  # per kind of row (manage.RUN_TABLES' names, and "run")
    redis_keys: int


def update_run(session: Session, run: str, actor: str, change: manage.LabelChange) -> manage.RunLabels:
    """Apply and audit a person's changes to a run (InvalidRequest for a bad tag, RunNotFound)."""
    write_transaction(session)
    try:
        labels = manage.update_labels(session, run, actor, change)
    except BaseException:
        session.rollback()
        raise
    session.commit()
    log.info("run %s updated by %s", printable(run), printable(actor))
    return labels


def delete_run(session: Session, client: redis.Redis, settings: Settings, run: str, actor: str) -> DeletedRun:
    """Delete the run's rows (every table keyed by it), then its Redis keys, then commit; audited.

    Redis goes before the commit: when Redis cannot be reached nothing is deleted (the error says so).
    A trainer still sending recreates the run from its next message, without its history.
    """
    write_transaction(session)
    try:
        rows = manage.delete_run(session, run, actor)
        keys = settings.keys
        gone = int(client.delete(keys.control(run), keys.control_applied(run)))
    except BaseException:
        session.rollback()
        raise
    session.commit()
    log.warning("run %s deleted by %s: %s; %d Redis keys", printable(run), printable(actor), rows, gone)
    return DeletedRun(run, rows, gone)
