"""Retention: the raw per-arm rows (arm_steps) of runs that ended long ago are dropped, their rollups kept.

A run's charts read `arm_rollups` / `part_rollups` over long ranges anyway (server.store.series); once a
run's raw rows are pruned (`runs.raw_pruned_at` set) every range is read from the rollups, and a zoom
below the finest rollup width shows that width's buckets (min and max of each) instead of single steps.
What needs the raw rows is then unavailable for that run: the per-arm columns of the CSV export, the
train-accuracy curves of the compare page, diagnoses not computed before, and SSE replays of its steps.
The runs' own rows (run_steps: trainer metrics, times), evaluations, commands and rollups all stay.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select, update

from server.store.sql import ARM_STEPS, RUNS, utcnow


@dataclass(frozen=True, slots=True)
class Pruned:
    run: str
    rows: int


def prunable(engine: Engine, older_than_days: float) -> list[tuple[int, str]]:
    """Runs that ended (finished, failed, interrupted) more than `older_than_days` ago, raw rows still kept."""
    cutoff = utcnow() - dt.timedelta(days=older_than_days)
    r = RUNS.c
    with engine.connect() as conn:
        return [(int(i), str(n)) for i, n in conn.execute(
            select(r.id, r.name)
            .where(r.status != "running", r.raw_pruned_at.is_(None),
                   func.coalesce(r.ended_at, r.last_seen) < cutoff)
            .order_by(r.id)
        )]


def prune_raw(engine: Engine, older_than_days: float, dry_run: bool = False) -> list[Pruned]:
    """Drop the arm_steps rows of every prunable run, one transaction per run; what was (or would be) dropped."""
    out: list[Pruned] = []
    for run_id, name in prunable(engine, older_than_days):
        with engine.begin() as conn:
            if dry_run:
                n = conn.execute(select(func.count()).select_from(ARM_STEPS).where(ARM_STEPS.c.run_id == run_id))
                out.append(Pruned(name, int(n.scalar_one())))
                continue
            rows = conn.execute(delete(ARM_STEPS).where(ARM_STEPS.c.run_id == run_id)).rowcount
            conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(raw_pruned_at=utcnow()))
            out.append(Pruned(name, int(rows or 0)))
    return out
