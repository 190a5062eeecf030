"""Ingest writes: a batch of validated wire messages into runs, arms, run_steps, arm_steps, the
rollups, the evaluations and the audit log, in the caller's transaction, idempotently; returns the live
events to publish once it has committed."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select, update

from server.store.commands import record_acks
from server.store.diagnoses import DIAGNOSIS_CONFIG, DiagnosisBatch, DiagnosisConfig, split_rows
from server.store.evals import insert_evals, update_eval_summary
from server.store.events import LiveEvent, ack_entry, status_entry, step_entry
from server.store.manage import sync_agent_tags
from server.store.rollups import NUMERIC_COLS, merge_rollups
from server.store.scheduler import store_snapshot
from server.store.sql import ARMS, RUN_STEPS, RUNS, insert, update_rows, utc_from_ts
from server.wire import AnyMessage, ArmRecord, CommandAck, Eval, Heartbeat, RunEnd, RunStart, SchedulerReport, Step


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated ingest message and the id of the stream entry that carried it."""

    entry_id: str
    msg: AnyMessage
    raw: bytes = b""  # the JSON document as received (kept for dead-lettering it)


def entry_time(entry_id: str) -> dt.datetime:
    """The Redis server time at which a stream entry was added (its id is `<ms>-<n>`)."""
    return utc_from_ts(int(entry_id.split("-", 1)[0]) / 1000.0)


@dataclass(slots=True)
class _RunAcc:
    """What one batch does to one run, accumulated in stream order."""

    run_id: int
    name: str
    event_seq: int
    status_seq: int
    last_seq: int
    last_step: int
    dropped: int
    last_seen: dt.datetime | None
    entry_ids: list[str] = field(default_factory=list)
    start: RunStart | None = None
    status: tuple[int, str, dt.datetime | None] | None = None  # (seq, status, ended_at)
    steps: list[tuple[Entry, Step]] = field(default_factory=list)
    acks: list[CommandAck] = field(default_factory=list)
    evals: list[Eval] = field(default_factory=list)
    scheduler: SchedulerReport | None = None  # the batch's newest scheduler snapshot


def apply_ingest(conn: Connection, entries: Sequence[Entry]) -> list[LiveEvent]:
    """Write a batch of ingest messages in the caller's transaction; idempotent under re-delivery.

    Steps are keyed by (run, step): a step already stored is skipped entirely (first write wins),
    which also makes a re-delivered (run, seq) a no-op. Runs touched are locked first, in id order,
    so concurrent workers on PostgreSQL serialize per run (and the per-run event sequence is gapless).
    Returns the live events to publish once the transaction has committed.
    """
    if not entries:
        return []
    # The diagnosis rules' parameters travel as a connection option (the worker's, from its settings).
    diagnosis = conn.get_execution_options().get(DIAGNOSIS_CONFIG) or DiagnosisConfig()
    accs = _lock_runs(conn, sorted({e.msg.run for e in entries}))
    for e in entries:
        acc = accs[e.msg.run]
        m = e.msg
        acc.entry_ids.append(e.entry_id)
        acc.last_seq = max(acc.last_seq, m.seq)
        seen = entry_time(e.entry_id)
        if acc.last_seen is None or seen > acc.last_seen:
            acc.last_seen = seen
        if isinstance(m, Step):
            acc.steps.append((e, m))
            acc.last_step = max(acc.last_step, m.step)
            acc.dropped = max(acc.dropped, m.dropped)
        elif isinstance(m, RunStart):
            acc.start = m
            if m.seq > acc.status_seq and (acc.status is None or m.seq > acc.status[0]):
                acc.status = (m.seq, "running", None)
        elif isinstance(m, RunEnd):
            acc.last_step = max(acc.last_step, m.step)
            if m.seq > acc.status_seq and (acc.status is None or m.seq > acc.status[0]):
                acc.status = (m.seq, m.status, utc_from_ts(m.ts))
        elif isinstance(m, Heartbeat):
            acc.last_step = max(acc.last_step, m.step)
        elif isinstance(m, Eval):
            # An evaluation's step is not the run's progress (step 0 is the baseline before training).
            acc.evals.append(m)
        elif isinstance(m, SchedulerReport):
            if acc.scheduler is None or (m.step, m.seq) > (acc.scheduler.step, acc.scheduler.seq):
                acc.scheduler = m
        else:
            acc.acks.append(m)

    arm_ids = _ensure_arms(conn, accs.values())
    events: list[LiveEvent] = []
    new_steps, diag_rows = _insert_steps(conn, accs.values(), arm_ids)
    diag_by_run = split_rows(diag_rows)
    diag = DiagnosisBatch(conn, [a.run_id for a in accs.values() if a.run_id in diag_by_run or a.evals])
    plain: list[dict[str, Any]] = []  # the runs' updates that can wait for the end of the loop
    for acc in accs.values():
        seq = acc.event_seq + 1  # this batch's event, if it changes anything shown
        payload: dict[str, Any] = {"run": acc.name, "entry_ids": acc.entry_ids}
        changed = False
        steps = new_steps.get(acc.run_id, [])
        if steps:
            payload["steps"] = [step_entry(m) for _, m in steps]
            changed = True
        acks = record_acks(conn, acc.run_id, acc.acks, seq) if acc.acks else []
        if acks:
            payload["acks"] = [ack_entry(c) for c in acks]
            changed = True
        evals = insert_evals(conn, acc.run_id, acc.evals, seq) if acc.evals else []
        if evals:
            payload["evals"] = [p.entry() for p in evals]
            update_eval_summary(conn, acc.run_id)
            changed = True
        head = store_snapshot(conn, acc.run_id, acc.scheduler) if acc.scheduler is not None else None
        if head is not None:
            payload["scheduler"] = head.entry()
            changed = True
        rows = diag_by_run.get(acc.run_id)
        if rows is not None or evals:
            diagnoses = diag.diagnose(conn, acc.run_id, rows, evals, arm_ids.get(acc.run_id, {}), seq, diagnosis)
            if diagnoses:
                payload["diagnoses"] = diagnoses
                changed = True
        values: dict[str, Any] = {
            "last_seq": acc.last_seq,
            "last_step": acc.last_step,
            "dropped": acc.dropped,
            "last_seen": acc.last_seen,
        }
        if acc.start is not None:
            s = acc.start
            values.update(
                project=s.project, scheduler=s.scheduler, params=s.params, config=s.config,
                host=s.host, pid=s.pid,
            )
        if acc.status is not None:
            status_seq, status, ended_at = acc.status
            values.update(status=status, ended_at=ended_at, status_seq=status_seq)
            changed = True
        if changed:
            values["event_seq"] = seq
            if acc.status is not None:
                values["status_event_seq"] = seq
        if acc.start is None and acc.status is None:
            plain.append({"id": acc.run_id, **values})  # written below, with the other runs'
        else:  # a start or an end: written now, as the status entry below reads it back
            conn.execute(update(RUNS).where(RUNS.c.id == acc.run_id).values(**values))
        if acc.start is not None:
            # A resumed run keeps its first start time.
            conn.execute(
                update(RUNS)
                .where(RUNS.c.id == acc.run_id, RUNS.c.started_at.is_(None))
                .values(started_at=utc_from_ts(acc.start.ts))
            )
            sync_agent_tags(conn, acc.run_id, acc.start.config)
        if changed:
            if acc.status is not None:
                payload["status"] = status_entry(conn, acc.run_id)
            payload["seq"] = seq
            events.append(LiveEvent(acc.name, seq, payload))
    diag.save(conn)
    update_rows(conn, RUNS, "id", plain)
    return events


def _lock_runs(conn: Connection, names: list[str]) -> dict[str, _RunAcc]:
    """Create the runs not seen yet, then lock all of the batch's runs (in id order) and read them."""

    def select_locked() -> list[Any]:
        return list(conn.execute(
            select(
                RUNS.c.id, RUNS.c.name, RUNS.c.event_seq, RUNS.c.status_seq, RUNS.c.last_seq,
                RUNS.c.last_step, RUNS.c.dropped, RUNS.c.last_seen,
            )
            .where(RUNS.c.name.in_(names))
            .order_by(RUNS.c.id)
            .with_for_update()
        ).all())

    rows = select_locked()
    missing = set(names) - {r.name for r in rows}
    if missing:
        # A run is normally created by its run_start; a step seen first creates it too.
        conn.execute(
            insert(conn, RUNS).on_conflict_do_nothing(index_elements=["name"]),
            [
                {
                    "name": n, "project": "default", "scheduler": "unknown", "params": {}, "config": {},
                    "status": "running", "last_step": -1, "last_seq": 0, "dropped": 0, "event_seq": 0,
                    "status_event_seq": 0, "status_seq": 0,
                }
                for n in sorted(missing)
            ],
        )
        rows = select_locked()
    return {
        r.name: _RunAcc(
            run_id=r.id, name=r.name, event_seq=r.event_seq, status_seq=r.status_seq,
            last_seq=r.last_seq, last_step=r.last_step, dropped=r.dropped, last_seen=r.last_seen,
        )
        for r in rows
    }


def _ensure_arms(conn: Connection, accs: Iterable[_RunAcc]) -> dict[int, dict[str, int]]:
    """Upsert the arms of run_start messages, create arms first seen in steps; return ids by run."""
    accs = list(accs)
    started = [
        {"run_id": a.run_id, "name": spec.name, "position": i, "metadata": spec.metadata, "state": "active",
         "last_step": -1}
        for a in accs if a.start is not None
        for i, spec in enumerate(a.start.arms)
    ]
    if started:
        ins = insert(conn, ARMS)
        conn.execute(
            ins.on_conflict_do_update(
                index_elements=["run_id", "name"],
                set_={"metadata": ins.excluded.metadata, "position": ins.excluded.position},
            ),
            started,
        )
    ids = _arm_ids(conn, [a.run_id for a in accs])
    missing: list[dict[str, Any]] = []
    for a in accs:
        known = ids.get(a.run_id, {})
        for _, m in a.steps:
            for rec in m.arms:
                if rec["arm"] not in known:
                    known[rec["arm"]] = -1
                    missing.append({
                        "run_id": a.run_id, "name": rec["arm"], "position": len(known) - 1, "metadata": {},
                        "state": rec.get("state", "active"), "last_step": -1,
                    })
    if missing:
        conn.execute(insert(conn, ARMS).on_conflict_do_nothing(index_elements=["run_id", "name"]), missing)
        ids = _arm_ids(conn, [a.run_id for a in accs])
    return ids


def _arm_ids(conn: Connection, run_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for run_id, name, arm_id in conn.execute(
        select(ARMS.c.run_id, ARMS.c.name, ARMS.c.id).where(ARMS.c.run_id.in_(run_ids))
    ):
        out[run_id][name] = arm_id
    return out


# Column order of the arm_steps tuples built in _insert_steps: the numeric columns first, in the layout
# the rollups read, then parts.
_ARM_STEP_COLS = (*NUMERIC_COLS, "n_groups", "pass_hist", "parts")


def _arm_step_sql(dialect: str) -> str:
    # Raw DBAPI executemany on the hot path: SQLAlchemy's per-row parameter processing would cost
    # more than the insert itself at 100k rows/s. `parts` arrives pre-serialized.
    cols = ", ".join(_ARM_STEP_COLS)
    marks = ", ".join(["?" if dialect == "sqlite" else "%s"] * len(_ARM_STEP_COLS))
    return (
        f"INSERT INTO arm_steps ({cols}) VALUES ({marks}) "
        "ON CONFLICT (run_id, step, arm_id) DO NOTHING"
    )


def _copy_arm_steps(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: COPY the rows straight into arm_steps.

    psycopg's executemany sends one statement per row (~20k rows/s). COPY has no ON CONFLICT, and
    needs none here: these rows belong to steps whose run_steps row this transaction has just
    inserted (INSERT .. ON CONFLICT DO NOTHING RETURNING, under the run's row lock), so no other
    transaction can have written them; a COPY into a temp table plus INSERT .. SELECT .. ON
    CONFLICT measured ~40% slower. Should a conflict ever happen the batch fails as a whole and the
    worker retries its entries one by one, dead-lettering the one at fault.
    """
    cols = ", ".join(_ARM_STEP_COLS)
    dbapi: Any = conn.connection.dbapi_connection  # psycopg.Connection
    with dbapi.cursor() as cur, cur.copy(f"COPY arm_steps ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


_ARM_FIELDS = itemgetter(
    "arm", "p", "score", "n_step", "n_total", "mean_abs_adv", "mean_reward", "accuracy", "zero_var", "n_groups",
    "pass_hist", "state", "parts",
)


def _arm_fields_slow(r: ArmRecord) -> tuple[Any, ...]:
    g = r.get
    return (
        r["arm"], r["p"], g("score"), r["n_step"], r["n_total"], g("mean_abs_adv"), g("mean_reward"),
        g("accuracy"), g("zero_var"), g("n_groups"), g("pass_hist"), g("state", "active"), g("parts") or {},
    )


def _insert_steps(
    conn: Connection, accs: Iterable[_RunAcc], arm_ids: dict[int, dict[str, int]]
) -> tuple[dict[int, list[tuple[Entry, Step]]], list[tuple[Any, ...]]]:
    """Insert run_steps and arm_steps of steps not stored yet; return the new steps per run id, and
    their rows as the diagnosis reads them."""
    run_rows: list[dict[str, Any]] = []
    by_key: dict[tuple[int, int], tuple[Entry, Step]] = {}
    for a in accs:
        for e, m in a.steps:
            key = (a.run_id, m.step)
            if key in by_key:  # the same step twice in one batch: first wins, as across batches
                continue
            by_key[key] = (e, m)
            graded, correct = 0, 0.0
            for r in m.arms:
                acc, k = r.get("accuracy"), r["n_step"]
                if acc is not None and k > 0:
                    graded += k
                    correct += acc * k
            run_rows.append({
                "run_id": a.run_id, "step": m.step, "ts": m.ts, "seq": m.seq, "entry_id": e.entry_id,
                "event_seq": a.event_seq + 1, "metrics": m.metrics, "graded": graded, "correct": correct,
            })
    if not run_rows:
        return {}, []
    ins = insert(conn, RUN_STEPS).on_conflict_do_nothing(index_elements=["run_id", "step"])
    inserted = conn.execute(ins.returning(RUN_STEPS.c.run_id, RUN_STEPS.c.step), run_rows).all()
    new: dict[int, list[tuple[Entry, Step]]] = defaultdict(list)
    for run_id, step in inserted:
        new[run_id].append(by_key[(run_id, step)])
    if not new:
        return {}, []
    rows: list[tuple[Any, ...]] = []
    nums: list[tuple[Any, ...]] = []  # the numeric columns again, for the rollups
    parts_of: list[dict[str, Any]] = []  # each row's score parts, for part_rollups
    diag: list[tuple[Any, ...]] = []  # what the diagnosis reads (server.store.diagnoses.DIAG_COLS)
    dumps = orjson.dumps
    for run_id, steps in new.items():
        steps.sort(key=lambda s: s[1].step)
        ids = arm_ids[run_id]
        for _, m in steps:
            step = m.step
            for r in m.arms:
                try:  # all keys present (what the agent sends): one C call
                    arm, p, score, n_step, n_total, mab, mr, acc, zv, ng, hist, state, parts = _ARM_FIELDS(r)
                except KeyError:
                    arm, p, score, n_step, n_total, mab, mr, acc, zv, ng, hist, state, parts = _arm_fields_slow(r)
                arm_id = ids[arm]
                partial = None
                if hist is not None:  # the share of window prompts solved sometimes (pass_partial)
                    seen = sum(hist)
                    if seen:
                        partial = (seen - hist[0] - hist[4]) / seen
                num = (run_id, arm_id, step, p, score, n_step, n_total, mab, mr, acc, zv, partial)
                nums.append(num)
                rows.append((*num, ng, None if hist is None else dumps(hist).decode(), dumps(parts).decode()))
                parts_of.append(parts)
                diag.append((run_id, arm_id, step, p, n_step, acc, mab, zv, ng, state == "retired"))
    if conn.dialect.name == "postgresql":
        _copy_arm_steps(conn, rows)
    else:
        conn.exec_driver_sql(_arm_step_sql(conn.dialect.name), rows)
    merge_rollups(conn, nums, parts_of)
    _update_arm_state(conn, new, arm_ids)
    return new, diag


def _update_arm_state(
    conn: Connection, new: dict[int, list[tuple[Entry, Step]]], arm_ids: dict[int, dict[str, int]]
) -> None:
    params: list[dict[str, Any]] = []
    for run_id, steps in new.items():
        latest = steps[-1][1]  # sorted by step
        ids = arm_ids[run_id]
        params.extend(
            {"b_id": ids[r["arm"]], "b_step": latest.step, "probability": r["p"],
             "state": r.get("state", "active"), "pin": r.get("pin"), "boost": r.get("boost"),
             "last_step": latest.step}
            for r in latest.arms
        )
    stmt = (
        update(ARMS)
        .where(ARMS.c.id == bindparam("b_id"), ARMS.c.last_step < bindparam("b_step"))
        .values(
            probability=bindparam("probability"), state=bindparam("state"), pin=bindparam("pin"),
            boost=bindparam("boost"), last_step=bindparam("last_step"),
        )
    )
    conn.execute(stmt, params)
