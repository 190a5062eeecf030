"""Evaluations: a run's held-out accuracy per eval set, step and arm (`agent.log_eval`).

Written by ingest in the batch's transaction (the first write of a (run, name, arm, step) wins), read
by the API, the CSV export and the live events (docs/sse.md, the `evals` field of `update`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from server.store.sql import EVALS, RUNS, insert, run_row
from server.wire import Eval


@dataclass(frozen=True, slots=True)
class EvalResult:
    """One arm's result in one evaluation."""

    name: str
    step: int
    arm: str
    accuracy: float
    correct: float | None
    total: int | None

    def entry(self) -> dict[str, Any]:
        """As an `evals` item of a live `update` event (docs/sse.md)."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RunEvals:
    run: str
    names: list[str]
    evals: list[EvalResult]


def _sort_key(p: EvalResult) -> tuple[str, int, str]:
    return p.name, p.step, p.arm


def insert_evals(conn: Connection, run_id: int, msgs: Iterable[Eval], event_seq: int) -> list[EvalResult]:
    """Store the evaluations of `msgs` not stored yet (first write wins, within the batch too), tagged
    with the live event that carries them; return those stored now, by name, step and arm."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for m in msgs:
        for r in m.arms:
            rows.setdefault((m.name, r.arm, m.step), {
                "run_id": run_id, "name": m.name, "step": m.step, "arm": r.arm, "accuracy": r.accuracy,
                "correct": r.correct, "total": r.total, "ts": m.ts, "event_seq": event_seq,
            })
    if not rows:
        return []
    e = EVALS.c
    stmt = insert(conn, EVALS).on_conflict_do_nothing(index_elements=["run_id", "name", "arm", "step"])
    stored = conn.execute(
        stmt.returning(e.name, e.step, e.arm, e.accuracy, e.correct, e.total), list(rows.values())
    ).all()
    return sorted((EvalResult(*r) for r in stored), key=_sort_key)


# Sorted in Python, not by ORDER BY: a run has a few thousand points at most, and the order of names
# must not depend on the database's collation (live events, replays and the API agree).


def evals_since(conn: Connection, run_id: int, after: int) -> list[tuple[int, EvalResult]]:
    """(event seq, point) of the run's evaluations first stored by events after `after`, in event
    order, then by name, step and arm."""
    e = EVALS.c
    q = select(e.event_seq, e.name, e.step, e.arm, e.accuracy, e.correct, e.total).where(
        e.run_id == run_id, e.event_seq > after
    )
    got = [(int(r[0]), EvalResult(*r[1:])) for r in conn.execute(q)]
    return sorted(got, key=lambda sp: (sp[0], *_sort_key(sp[1])))


def run_evals(session: Session, run: str, name: str | None = None) -> RunEvals:
    """The run's evaluation names, and its points (of eval set `name` only, when given) by name, step
    and arm. RunNotFound for an unknown run."""
    rid = run_row(session, run, RUNS.c.id).id
    e = EVALS.c
    names = sorted(str(n) for n in session.scalars(select(e.name).where(e.run_id == rid).distinct()))
    q = select(e.name, e.step, e.arm, e.accuracy, e.correct, e.total).where(e.run_id == rid)
    if name is not None:
        q = q.where(e.name == name)
    points = sorted((EvalResult(*r) for r in session.execute(q)), key=_sort_key)
    return RunEvals(run=run, names=names, evals=points)


@dataclass(frozen=True, slots=True)
class EvalSummary:
    name: str  # the eval set of the run's latest evaluation (highest step, then latest sent, then name)
    final: float  # that evaluation's mean accuracy over arms
    best: float  # the best such mean of that eval set


def eval_summaries(db: Connection | Session, run_ids: Sequence[int] | None) -> dict[int, EvalSummary]:
    """Each run's latest evaluation and the best of its eval set, from one row per evaluation (its mean
    over arms, averaged in SQL). Reduced here rather than in SQL: SQLite joins a windowed subquery to
    `runs` by scanning it once per run, and this is one grouped scan."""
    e = EVALS.c
    q = select(e.run_id, e.name, e.step, func.avg(e.accuracy), func.max(e.ts)).group_by(e.run_id, e.name, e.step)
    if run_ids is not None:
        q = q.where(e.run_id.in_(list(run_ids)))
    latest: dict[int, tuple[int, float, str, float]] = {}
    best: dict[tuple[int, str], float] = {}
    for rid, name, step, mean, ts in db.execute(q):
        mean, ts = float(mean), float(ts)
        had = latest.get(rid)
        if had is None or (step, ts) > (had[0], had[1]) or ((step, ts) == (had[0], had[1]) and name < had[2]):
            latest[rid] = (step, ts, name, mean)
        if mean > best.get((rid, name), -math.inf):
            best[(rid, name)] = mean
    return {rid: EvalSummary(name, mean, best[(rid, name)]) for rid, (_, _, name, mean) in latest.items()}


def update_eval_summary(conn: Connection, run_id: int) -> None:
    """Keep the run's evaluation columns (the runs table's final and best, sortable as columns) in step
    with its evaluations; ingest calls it when a batch stored some. One run's evaluations: a few rows."""
    got = eval_summaries(conn, [run_id]).get(run_id)
    if got is not None:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id)
                     .values(eval_name=got.name, final_eval=got.final, best_eval=got.best))
