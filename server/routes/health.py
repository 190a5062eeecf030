"""Liveness of the backing services, and the ingest dead letters."""

from __future__ import annotations

from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from server.deps import RedisDep, SessionDep, SettingsDep, get_reader
from server.ingest import read_dead_letters
from server.schemas import DeadLetter, DeadLetters, Health
from server.store.sql import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(session: SessionDep, client: RedisDep) -> JSONResponse:
    """200 when SQL and Redis both answer; 503 naming the part that does not."""
    sql = redis_state = "ok"
    try:
        ping(session)
    except SQLAlchemyError as e:
        sql = f"error: {str(getattr(e, 'orig', e) or e).strip().splitlines()[0]}"
    try:
        client.ping()
    except redis.RedisError as e:
        redis_state = f"error: {e}"
    ok = sql == "ok" and redis_state == "ok"
    body = Health(status="ok" if ok else "unavailable", sql=sql, redis=redis_state)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/api/dead-letters", response_model=DeadLetters, tags=["ingest"], dependencies=[Depends(get_reader)])
def dead_letters(
    client: RedisDep, settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50
) -> DeadLetters:
    """Ingest entries that could not be stored, with the reason, newest first."""
    count, retained, entries = read_dead_letters(client, settings, limit)
    return DeadLetters(count=count, retained=retained, entries=[DeadLetter(**e) for e in entries])
