"""All SQL of the server: ingest writes, API reads and the command audit log.

Functions take a Connection or Session and return plain dataclasses or the Pydantic models of
`server.schemas`; routes and the ingest worker never write SQL themselves.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, cast

import numpy as np
import orjson
from sqlalchemy import Connection, Float, Table, bindparam, func, select, text, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.db import BINARY_ROWS
from server.errors import InvalidRequest, RunNotFound
from server.models import (
    METRICS,
    PART_NAME_MAX,
    PART_ROLLUP_WIDTHS,
    ROLLUP_WIDTHS,
    Arm,
    ArmStep,
    Command,
    Run,
    RunStep,
    arm_rollups,
    part_rollups,
)
from server.schemas import (
    ArmSeries,
    ArmState,
    CommandRecord,
    Metric,
    PartSeries,
    RunDetail,
    RunSummary,
    StepRow,
    StepTimes,
)
from server.wire import ArmRecord, CommandAck, Heartbeat, RunEnd, RunStart, Step

AnyMessage = RunStart | Step | CommandAck | Heartbeat | RunEnd

_RUN = cast(Table, Run.__table__)
_ARM = cast(Table, Arm.__table__)
_ARM_STEP = cast(Table, ArmStep.__table__)
_RUN_STEP = cast(Table, RunStep.__table__)
_COMMAND = cast(Table, Command.__table__)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def entry_time(entry_id: str) -> dt.datetime:
    """The Redis server time at which a stream entry was added (its id is `<ms>-<n>`)."""
    ms = int(entry_id.split("-", 1)[0])
    return dt.datetime.fromtimestamp(ms / 1000.0, dt.UTC)


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT DO NOTHING / DO UPDATE."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"unsupported database dialect {name!r} (use SQLite or PostgreSQL)")


# ---------------------------------------------------------------------------------------------------
# Ingest
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated ingest message and the id of the stream entry that carried it."""

    entry_id: str
    msg: AnyMessage
    raw: bytes = b""  # the validated JSON document, relayed as-is in live events


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


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """What one committed batch changed in one run; published on the run's live channel."""

    run: str
    seq: int
    payload: dict[str, Any]


def apply_ingest(conn: Connection, entries: Sequence[Entry]) -> list[LiveEvent]:
    """Write a batch of ingest messages in the caller's transaction; idempotent under re-delivery.

    Steps are keyed by (run, step): a step already stored is skipped entirely (first write wins),
    which also makes a re-delivered (run, seq) a no-op. Runs touched are locked first, in id order,
    so concurrent workers on PostgreSQL serialize per run (and the per-run event sequence is gapless).
    Returns the live events to publish once the transaction has committed.
    """
    if not entries:
        return []
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
                acc.status = (m.seq, m.status, dt.datetime.fromtimestamp(m.ts, dt.UTC))
        elif isinstance(m, Heartbeat):
            acc.last_step = max(acc.last_step, m.step)
        else:
            acc.acks.append(m)

    arm_ids = _ensure_arms(conn, accs.values())
    events: list[LiveEvent] = []
    new_steps = _insert_steps(conn, accs.values(), arm_ids)
    for acc in accs.values():
        payload: dict[str, Any] = {"run": acc.name, "entry_ids": acc.entry_ids}
        changed = False
        steps = new_steps.get(acc.run_id, [])
        if steps:
            payload["steps"] = [_step_payload(e, m) for e, m in steps]
            changed = True
        acks = _apply_acks(conn, acc)
        if acks:
            payload["acks"] = acks
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
            seq, status, ended_at = acc.status
            values.update(status=status, ended_at=ended_at, status_seq=seq)
            changed = True
        if changed:
            values["event_seq"] = acc.event_seq + 1
            if acc.status is not None:
                values["status_event_seq"] = acc.event_seq + 1
        conn.execute(update(_RUN).where(_RUN.c.id == acc.run_id).values(**values))
        if acc.start is not None:
            # A resumed run keeps its first start time.
            conn.execute(
                update(_RUN)
                .where(_RUN.c.id == acc.run_id, _RUN.c.started_at.is_(None))
                .values(started_at=dt.datetime.fromtimestamp(acc.start.ts, dt.UTC))
            )
        if changed:
            if acc.status is not None:
                payload["status"] = _status_payload(conn, acc.run_id)
            payload["seq"] = acc.event_seq + 1
            events.append(LiveEvent(acc.name, acc.event_seq + 1, payload))
    return events


def _lock_runs(conn: Connection, names: list[str]) -> dict[str, _RunAcc]:
    """Create the runs not seen yet, then lock all of the batch's runs (in id order) and read them."""

    def select_locked() -> list[Any]:
        return list(conn.execute(
            select(
                _RUN.c.id, _RUN.c.name, _RUN.c.event_seq, _RUN.c.status_seq, _RUN.c.last_seq,
                _RUN.c.last_step, _RUN.c.dropped, _RUN.c.last_seen,
            )
            .where(_RUN.c.name.in_(names))
            .order_by(_RUN.c.id)
            .with_for_update()
        ).all())

    rows = select_locked()
    missing = set(names) - {r.name for r in rows}
    if missing:
        # A run is normally created by its run_start; a step seen first creates it too.
        conn.execute(
            _insert(conn, _RUN).on_conflict_do_nothing(index_elements=["name"]),
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
        ins = _insert(conn, _ARM)
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
        conn.execute(_insert(conn, _ARM).on_conflict_do_nothing(index_elements=["run_id", "name"]), missing)
        ids = _arm_ids(conn, [a.run_id for a in accs])
    return ids


def _arm_ids(conn: Connection, run_ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = defaultdict(dict)
    for run_id, name, arm_id in conn.execute(
        select(_ARM.c.run_id, _ARM.c.name, _ARM.c.id).where(_ARM.c.run_id.in_(run_ids))
    ):
        out[run_id][name] = arm_id
    return out


# Column order of the arm_steps tuples built in _insert_steps: numeric columns first (the rollups
# read them as one float array), then parts.
_ARM_STEP_COLS = (
    "run_id", "arm_id", "step", "probability", "score", "n_step", "n_total",
    "mean_abs_adv", "mean_reward", "accuracy", "parts",
)


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
    "arm", "p", "score", "n_step", "n_total", "mean_abs_adv", "mean_reward", "accuracy", "parts"
)


def _arm_fields_slow(r: ArmRecord) -> tuple[Any, ...]:
    g = r.get
    return (
        r["arm"], r["p"], g("score"), r["n_step"], r["n_total"], g("mean_abs_adv"), g("mean_reward"),
        g("accuracy"), g("parts") or {},
    )


def _insert_steps(
    conn: Connection, accs: Iterable[_RunAcc], arm_ids: dict[int, dict[str, int]]
) -> dict[int, list[tuple[Entry, Step]]]:
    """Insert run_steps and arm_steps of steps not stored yet; return the new steps per run id."""
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
        return {}
    ins = _insert(conn, _RUN_STEP).on_conflict_do_nothing(index_elements=["run_id", "step"])
    inserted = conn.execute(ins.returning(_RUN_STEP.c.run_id, _RUN_STEP.c.step), run_rows).all()
    new: dict[int, list[tuple[Entry, Step]]] = defaultdict(list)
    for run_id, step in inserted:
        new[run_id].append(by_key[(run_id, step)])
    if not new:
        return {}
    rows: list[tuple[Any, ...]] = []
    nums: list[tuple[Any, ...]] = []  # the numeric columns again, for the rollups
    parts_of: list[dict[str, Any]] = []  # each row's score parts, for part_rollups
    dumps = orjson.dumps
    for run_id, steps in new.items():
        steps.sort(key=lambda s: s[1].step)
        ids = arm_ids[run_id]
        for _, m in steps:
            step = m.step
            for r in m.arms:
                try:  # all keys present (what the agent sends): one C call
                    arm, p, score, n_step, n_total, mab, mr, acc, parts = _ARM_FIELDS(r)
                except KeyError:
                    arm, p, score, n_step, n_total, mab, mr, acc, parts = _arm_fields_slow(r)
                num = (run_id, ids[arm], step, p, score, n_step, n_total, mab, mr, acc)
                nums.append(num)
                rows.append((*num, dumps(parts).decode()))
                parts_of.append(parts)
    if conn.dialect.name == "postgresql":
        _copy_arm_steps(conn, rows)
    else:
        conn.exec_driver_sql(_arm_step_sql(conn.dialect.name), rows)
    _merge_rollups(conn, nums, parts_of)
    _update_arm_state(conn, new, arm_ids)
    return new


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
        update(_ARM)
        .where(_ARM.c.id == bindparam("b_id"), _ARM.c.last_step < bindparam("b_step"))
        .values(
            probability=bindparam("probability"), state=bindparam("state"), pin=bindparam("pin"),
            boost=bindparam("boost"), last_step=bindparam("last_step"),
        )
    )
    conn.execute(stmt, params)


def _merge_rollups(conn: Connection, nums: list[tuple[Any, ...]], parts_of: list[dict[str, Any]]) -> None:
    """Merge the batch's new arm_steps rows into arm_rollups (n/min/max/sum/last per bucket) and their
    numeric score parts into part_rollups, at every width of ROLLUP_WIDTHS (PART_ROLLUP_WIDTHS for parts).

    Only rows inserted by this transaction reach here (a step already stored is skipped whole, see
    apply_ingest), so adding their sums and counts stays exact under re-delivery. Aggregated with
    numpy from memory rather than re-read with SQL: same result, a fraction of the cost.
    """
    a = np.array(nums, dtype=np.float64)  # None becomes NaN
    n = len(a)
    run, arm, step = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64)
    # Sorted by (run, arm, step), the rows of every bucket of every width are contiguous: one sort.
    order = np.lexsort((step, arm, run))
    a, run, arm, step = a[order], run[order], arm[order], step[order]
    parts = _part_columns(parts_of, order)
    cols: dict[str, list[Any]] = defaultdict(list)
    part_cols: dict[str, list[Any]] = defaultdict(list)
    for width in ROLLUP_WIDTHS:
        bucket, starts, ends = _buckets((run, arm), step, width)
        if width in PART_ROLLUP_WIDTHS:
            _part_rollup_rows(part_cols, parts, run, arm, step, width, bucket, starts)
        cols["run_id"] += run[starts].tolist()
        cols["arm_id"] += arm[starts].tolist()
        cols["width"] += [width] * len(starts)
        cols["bucket"] += bucket[starts].tolist()
        cols["first_step"] += step[starts].tolist()
        cols["last_step"] += step[ends].tolist()
        cols["n_rows"] += np.diff(np.append(starts, n)).tolist()
        for m in METRICS:
            vals = a[:, _ARM_STEP_COLS.index(m)]
            present, has, vmin, vmax, vsum = _bucket_stats(vals, starts)
            some = has > 0
            cols[f"{m}_n"] += has.tolist()
            cols[f"{m}_min"] += _nullable(vmin, some)
            cols[f"{m}_max"] += _nullable(vmax, some)
            cols[f"{m}_sum"] += _nullable(vsum, some)
            cols[f"{m}_last"] += _nullable(vals[ends], present[ends])
    _upsert(conn, arm_rollups, cols, _ROLLUP_MERGE)
    if part_cols:
        _upsert(conn, part_rollups, part_cols, _PART_ROLLUP_MERGE)


# How a rollup row merges into the stored one: SQL with {t} (the stored row), {x} (the new one) and
# {least}/{greatest} (the dialect's two-argument min/max). min/max/sum columns are NULL where a bucket has
# no value yet.
_NULLABLE_MIN = "COALESCE({least}({t}.{c}, {x}.{c}), {t}.{c}, {x}.{c})"
_NULLABLE_MAX = "COALESCE({greatest}({t}.{c}, {x}.{c}), {t}.{c}, {x}.{c})"
_NULLABLE_SUM = "COALESCE({t}.{c} + {x}.{c}, {t}.{c}, {x}.{c})"
_ADD = "{t}.{c} + {x}.{c}"
_BUCKET_SPAN = {"first_step": "{least}({t}.{c}, {x}.{c})", "last_step": "{greatest}({t}.{c}, {x}.{c})"}
_ROLLUP_MERGE: dict[str, str] = {
    **_BUCKET_SPAN,
    "n_rows": _ADD,
    **{
        f"{m}_{agg}": merge
        for m in METRICS
        for agg, merge in (
            ("n", _ADD), ("min", _NULLABLE_MIN), ("max", _NULLABLE_MAX), ("sum", _NULLABLE_SUM),
            ("last", "CASE WHEN {x}.last_step >= {t}.last_step THEN {x}.{c} ELSE {t}.{c} END"),
        )
    },
}
_PART_ROLLUP_MERGE: dict[str, str] = {
    **_BUCKET_SPAN, "value_n": _ADD, "value_min": _NULLABLE_MIN, "value_max": _NULLABLE_MAX, "value_sum": _ADD,
}


def _upsert(conn: Connection, table: Table, cols: dict[str, list[Any]], merge: dict[str, str]) -> None:
    """Insert rows given column by column; a row whose primary key exists merges into it by `merge`.

    Raw driver calls: on PostgreSQL one INSERT .. SELECT FROM unnest(one array per column), on SQLite
    one executemany; SQLAlchemy's per-row parameter handling cost more than the upserts themselves.
    """
    names = list(cols)
    key = ", ".join(c.name for c in table.primary_key.columns)
    pg = conn.dialect.name == "postgresql"
    fmt = {"t": table.name, "x": "excluded", "least": "LEAST" if pg else "min",
           "greatest": "GREATEST" if pg else "max"}
    sets = ", ".join(f"{c} = {expr.format(c=c, **fmt)}" for c, expr in merge.items())
    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
    if pg:
        arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in names)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) {conflict}",
            tuple(cols.values()),
        )
    else:
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) {conflict}",
            list(zip(*cols.values(), strict=True)),
        )


def _buckets(
    keys: Sequence[np.ndarray[Any, Any]], step: np.ndarray[Any, Any], width: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Rows sorted by (*keys, step) -> their bucket of `width` steps, and each group's first and last row
    (a group: the rows of one bucket with the same keys)."""
    n = step.size
    bucket = step // width
    brk = np.ones(n, dtype=bool)
    brk[1:] = bucket[1:] != bucket[:-1]
    for k in keys:
        brk[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(brk)
    return bucket, starts, np.append(starts[1:], n) - 1


def _part_columns(parts_of: list[dict[str, Any]], order: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Each numeric score part of the batch's rows as a float column (NaN where a row lacks it), in `order`.

    Parts whose name is longer than PART_NAME_MAX, or whose values are not numbers, stay in
    arm_steps.parts only.
    """
    cols: dict[str, np.ndarray[Any, Any]] = {}
    for name in sorted(set().union(*parts_of)):
        if len(name) > PART_NAME_MAX:
            continue
        got = [p.get(name) for p in parts_of]
        try:
            col = np.array(got, dtype=np.float64)  # None becomes NaN
        except (TypeError, ValueError):
            col = np.array([v if isinstance(v, int | float) else None for v in got], dtype=np.float64)
        col[~np.isfinite(col)] = np.nan
        cols[name] = col[order]
    return cols


def _part_rollup_rows(
    out: dict[str, list[Any]], parts: dict[str, np.ndarray[Any, Any]], run: np.ndarray[Any, Any],
    arm: np.ndarray[Any, Any], step: np.ndarray[Any, Any], width: int, bucket: np.ndarray[Any, Any],
    starts: np.ndarray[Any, Any],
) -> None:
    """Append to `out` (part_rollups columns) the buckets of one width in which each part has values."""
    for name, vals in parts.items():
        present, has, vmin, vmax, vsum = _bucket_stats(vals, starts)
        some = np.flatnonzero(has > 0)
        if not some.size:
            continue
        # A bucket's first and last step with a value: the first/last step of the rows that have one.
        pos = np.where(present, np.arange(step.size), -1)
        last_row = np.maximum.reduceat(pos, starts)
        first_row = np.minimum.reduceat(np.where(present, pos, step.size), starts)
        out["run_id"] += run[starts][some].tolist()
        out["arm_id"] += arm[starts][some].tolist()
        out["part"] += [name] * some.size
        out["width"] += [width] * some.size
        out["bucket"] += bucket[starts][some].tolist()
        out["first_step"] += step[first_row[some]].tolist()
        out["last_step"] += step[last_row[some]].tolist()
        out["value_n"] += has[some].tolist()
        out["value_min"] += vmin[some].tolist()
        out["value_max"] += vmax[some].tolist()
        out["value_sum"] += vsum[some].tolist()


def _bucket_stats(vals: np.ndarray[Any, Any], starts: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], ...]:
    """Per group starting at `starts` (NaN = no value): which rows have a value, and each group's count,
    min, max and sum of values (min/max NaN and sum 0 where a group has none)."""
    present = ~np.isnan(vals)
    return (
        present,
        np.add.reduceat(present.astype(np.int64), starts),
        np.fmin.reduceat(vals, starts),
        np.fmax.reduceat(vals, starts),
        np.add.reduceat(np.where(present, vals, 0.0), starts),
    )


def _nullable(values: np.ndarray[Any, Any], keep: np.ndarray[Any, Any]) -> list[float | None]:
    return [v if k else None for v, k in zip(values.tolist(), keep.tolist(), strict=True)]


def _step_payload(e: Entry, m: Step) -> Any:
    if e.raw:
        # The step message itself (validated); it has step, ts, metrics and arms with every field.
        return orjson.Fragment(e.raw)
    return {"step": m.step, "ts": m.ts, "metrics": m.metrics, "arms": m.arms}


def _apply_acks(conn: Connection, acc: _RunAcc) -> list[dict[str, Any]]:
    """Record acks of pending commands (the first outcome of a command wins)."""
    out: list[dict[str, Any]] = []
    for ack in acc.acks:
        res = conn.execute(
            update(_COMMAND)
            .where(_COMMAND.c.id == ack.id, _COMMAND.c.run_id == acc.run_id, _COMMAND.c.status == "pending")
            .values(
                status=ack.status, applied_step=ack.applied_step, message=ack.message,
                acked_at=dt.datetime.fromtimestamp(ack.ts, dt.UTC), ack_event_seq=acc.event_seq + 1,
            )
        )
        if res.rowcount:
            out.append(_ack_payload(ack.id, ack.status, ack.applied_step, ack.message))
    return out


def _ack_payload(cid: str, status: str, applied_step: int | None, message: str | None) -> dict[str, Any]:
    return {"id": cid, "status": status, "applied_step": applied_step, "message": message}


def _status_payload(conn: Connection, run_id: int) -> dict[str, Any]:
    r = conn.execute(
        select(_RUN.c.status, _RUN.c.started_at, _RUN.c.ended_at, _RUN.c.last_step).where(_RUN.c.id == run_id)
    ).one()
    return {
        "status": r.status,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "ended_at": r.ended_at.isoformat() if r.ended_at else None,
        "last_step": r.last_step,
    }


def event_seq(conn: Connection, run: str) -> int:
    """The run's latest live event seq (RunNotFound for an unknown run)."""
    seq = conn.execute(select(_RUN.c.event_seq).where(_RUN.c.name == run)).scalar_one_or_none()
    if seq is None:
        raise RunNotFound(f"no run named {run!r}", run=run)
    return int(seq)


def events_since(conn: Connection, run: str, after: int, limit: int) -> tuple[int, list[LiveEvent]] | None:
    """Rebuild from SQL the live events of `run` with seq > `after`, for an SSE client resuming.

    Returns (current event seq, events), or None when more than `limit` events were missed (the
    client should reload instead).
    """
    r = conn.execute(
        select(_RUN.c.id, _RUN.c.event_seq, _RUN.c.status_event_seq).where(_RUN.c.name == run)
    ).one_or_none()
    if r is None:
        raise RunNotFound(f"no run named {run!r}", run=run)
    run_id, current, status_seq = r
    after = max(after, 0)
    if current <= after:
        return current, []
    if current - after > limit:
        return None
    payloads: dict[int, dict[str, Any]] = {}

    def ev(seq: int) -> dict[str, Any]:
        return payloads.setdefault(seq, {"run": run, "entry_ids": [], "seq": seq})

    names = {i: n for i, n in conn.execute(select(_ARM.c.id, _ARM.c.name).where(_ARM.c.run_id == run_id))}
    steps = conn.execute(
        select(_RUN_STEP.c.step, _RUN_STEP.c.ts, _RUN_STEP.c.metrics, _RUN_STEP.c.event_seq, _RUN_STEP.c.entry_id)
        .where(_RUN_STEP.c.run_id == run_id, _RUN_STEP.c.event_seq > after)
        .order_by(_RUN_STEP.c.step)
    ).all()
    if steps:
        step_nums = [s.step for s in steps]
        arm_rows: dict[int, list[dict[str, Any]]] = defaultdict(list)
        arm_state = {
            a.id: a for a in conn.execute(
                select(_ARM.c.id, _ARM.c.state, _ARM.c.pin, _ARM.c.boost).where(_ARM.c.run_id == run_id)
            )
        }
        q = (
            select(_ARM_STEP)
            .where(
                _ARM_STEP.c.run_id == run_id,
                _ARM_STEP.c.arm_id.in_(list(names)),
                _ARM_STEP.c.step.between(min(step_nums), max(step_nums)),
            )
            .order_by(_ARM_STEP.c.step, _ARM_STEP.c.arm_id)
        )
        wanted = set(step_nums)
        for a in conn.execute(q):
            if a.step not in wanted:
                continue
            st = arm_state[a.arm_id]
            # Per-step state/pin/boost are not stored; the arm's current ones stand in for them.
            arm_rows[a.step].append({
                "arm": names[a.arm_id], "p": a.probability, "score": a.score, "parts": a.parts,
                "n_step": a.n_step, "n_total": a.n_total, "mean_abs_adv": a.mean_abs_adv,
                "mean_reward": a.mean_reward, "accuracy": a.accuracy, "state": st.state, "pin": st.pin,
                "boost": st.boost,
            })
        for s in steps:
            e = ev(s.event_seq)
            e["entry_ids"].append(s.entry_id)
            e.setdefault("steps", []).append(
                {"step": s.step, "ts": s.ts, "metrics": s.metrics, "arms": arm_rows[s.step]}
            )
    for c in conn.execute(
        select(_COMMAND.c.id, _COMMAND.c.status, _COMMAND.c.applied_step, _COMMAND.c.message,
               _COMMAND.c.ack_event_seq)
        .where(_COMMAND.c.run_id == run_id, _COMMAND.c.ack_event_seq > after)
        .order_by(_COMMAND.c.acked_at)
    ):
        ev(c.ack_event_seq).setdefault("acks", []).append(
            _ack_payload(c.id, c.status, c.applied_step, c.message)
        )
    if status_seq > after:
        # Only the latest status is kept; earlier status changes in the gap are superseded by it.
        ev(status_seq)["status"] = _status_payload(conn, run_id)
    # Events whose only change was superseded still get an (empty) event so seqs stay gapless.
    for seq in range(after + 1, current + 1):
        ev(seq)
    return current, [LiveEvent(run, seq, payloads[seq]) for seq in sorted(payloads)]


# ---------------------------------------------------------------------------------------------------
# Reads for the API
# ---------------------------------------------------------------------------------------------------


def _is_stale(r: Run, stale_seconds: float, now: dt.datetime) -> bool:
    return r.status == "running" and (
        r.last_seen is None or (now - r.last_seen).total_seconds() > stale_seconds
    )


def _summary_fields(r: Run, stale_seconds: float, now: dt.datetime) -> dict[str, Any]:
    return {
        "name": r.name, "project": r.project, "scheduler": r.scheduler, "status": r.status,
        "stale": _is_stale(r, stale_seconds, now), "started_at": r.started_at, "ended_at": r.ended_at,
        "last_seen": r.last_seen, "last_step": r.last_step, "dropped": r.dropped, "event_seq": r.event_seq,
    }


def list_runs(
    session: Session, stale_seconds: float, project: str | None = None, limit: int = 200
) -> list[RunSummary]:
    q = select(Run).order_by(Run.id.desc()).limit(limit)
    if project is not None:
        q = q.where(Run.project == project)
    now = utcnow()
    return [RunSummary(**_summary_fields(r, stale_seconds, now)) for r in session.scalars(q)]


def _run(session: Session, name: str) -> Run:
    r = session.scalars(select(Run).where(Run.name == name)).one_or_none()
    if r is None:
        raise RunNotFound(f"no run named {name!r}", run=name)
    return r


def _arms(session: Session, run_id: int) -> list[Arm]:
    return list(session.scalars(select(Arm).where(Arm.run_id == run_id).order_by(Arm.position, Arm.id)))


def get_run(session: Session, name: str, stale_seconds: float) -> RunDetail:
    r = _run(session, name)
    arms = [
        ArmState(
            name=a.name, metadata=a.meta, state=a.state, pin=a.pin, boost=a.boost,
            probability=a.probability, last_step=a.last_step,
        )
        for a in _arms(session, r.id)
    ]
    return RunDetail(
        **_summary_fields(r, stale_seconds, utcnow()),
        params=r.params, config=r.config, host=r.host, pid=r.pid, last_seq=r.last_seq, arms=arms,
    )


@dataclass(frozen=True, slots=True)
class _Source:
    """Where one charted quantity lives: its raw value per arm_steps row, and its rollup columns."""

    raw: Any  # SQL expression on arm_steps
    table: Table  # arm_rollups or part_rollups
    prefix: str  # the rollup columns are {prefix}_n/_min/_max/_sum
    widths: tuple[int, ...]  # the bucket widths kept, finest first
    where: tuple[Any, ...] = ()  # more rollup filters (the part's name)


def _metric_source(metric: Metric) -> _Source:
    return _Source(_ARM_STEP.c[metric], arm_rollups, metric, ROLLUP_WIDTHS)


def _part_source(part: str) -> _Source:
    return _Source(_ARM_STEP.c.parts[part].as_float(), part_rollups, "value", PART_ROLLUP_WIDTHS,
                   (part_rollups.c.part == part,))


@dataclass(frozen=True, slots=True)
class _RunArms:
    """What a chart read needs of a run: its id, last step, and the chosen arms' (id, name)."""

    id: int
    last_step: int
    arms: list[tuple[int, str]]


def _chosen_arms(session: Session, run: str, arms: Sequence[str] | None) -> _RunArms:
    # Core selects: no ORM objects on the charts' hot path.
    row = session.execute(select(_RUN.c.id, _RUN.c.last_step).where(_RUN.c.name == run)).first()
    if row is None:
        raise RunNotFound(f"no run named {run!r}", run=run)
    all_arms = [(int(i), str(n)) for i, n in session.execute(
        select(_ARM.c.id, _ARM.c.name).where(_ARM.c.run_id == row.id).order_by(_ARM.c.position, _ARM.c.id))]
    if not arms:
        return _RunArms(row.id, row.last_step, all_arms)
    by_name = {n: (i, n) for i, n in all_arms}
    unknown = [a for a in arms if a not in by_name]
    if unknown:
        raise InvalidRequest(
            f"run {run!r} has no arm {unknown[0]!r}; its arms are: {', '.join(sorted(by_name))}",
            unknown=unknown,
        )
    return _RunArms(row.id, row.last_step, [by_name[a] for a in arms])


def series(
    session: Session,
    run: str,
    metric: Metric,
    arms: Sequence[str] | None,
    start: int | None,
    end: int | None,
    max_points: int,
) -> list[ArmSeries]:
    """Per arm, (step, value) of `metric` over [start, end], at most `max_points` points per arm.

    Every bucket keeps its min and its max, so no spike disappears. Three ways, by range length:
    a range of at most `max_points` steps returns the raw rows; a long range (enough rollup buckets
    for the chart) reads `arm_rollups` (kept on ingest at each of ROLLUP_WIDTHS) from the coarsest
    width that has enough buckets, so a 100,000-step run reads a few hundred rows per arm; in between,
    the raw rows are bucketed in SQL.
    When bucketed, a bucket's min and max are placed at its first and last step, in the order its
    trend suggests (zooming in gives exact positions).
    """
    r = _chosen_arms(session, run, arms)
    data = _downsampled(session.connection(), r, _metric_source(metric), [i for i, _ in r.arms], start, end,
                        max_points)
    return [
        ArmSeries(arm=name, steps=st.tolist(), values=v.tolist(), downsampled=d)
        for name, (st, v, d) in ((name, data[i]) for i, name in r.arms)
    ]


def part_names(conn: Connection, run_id: int) -> list[str]:
    """The score parts a run reports (read from its latest step)."""
    row = conn.execute(
        select(_ARM_STEP.c.parts).where(_ARM_STEP.c.run_id == run_id).order_by(_ARM_STEP.c.step.desc()).limit(1)
    ).first()
    return sorted(str(k) for k in (row[0] or {})) if row else []


def part_series(
    session: Session,
    run: str,
    arms: Sequence[str] | None,
    start: int | None,
    end: int | None,
    max_points: int,
) -> list[PartSeries]:
    """Per arm and numeric part of its scheduler score (DUMP: mu and bonus), downsampled like `series`
    (from part_rollups over long ranges): every bucket keeps its min and max."""
    r = _chosen_arms(session, run, arms)
    conn = session.connection()
    ids = [i for i, _ in r.arms]
    by_part = {
        p: _downsampled(conn, r, _part_source(p), ids, start, end, max_points)
        for p in part_names(conn, r.id) if len(p) <= PART_NAME_MAX
    }
    return [
        PartSeries(arm=name, part=p, steps=st.tolist(), values=v.tolist(), downsampled=d)
        for i, name in r.arms
        for p, data in by_part.items()
        for st, v, d in (data[i],)
        if st.size
    ]


def _downsampled(conn: Connection, r: _RunArms, src: _Source, ids: list[int], start: int | None, end: int | None,
                 max_points: int) -> dict[int, _SeriesData]:
    if not ids:
        return {}
    lo = 0 if start is None else start
    hi = r.last_step if end is None else min(end, max(r.last_step, 0))
    if hi < lo:
        return dict.fromkeys(ids, _EMPTY)
    span = hi - lo + 1
    pairs = max(2, max_points // 2)  # buckets per arm, two points each
    if span <= max_points:
        return _series_rows(conn, r.id, src, ids, lo, hi)
    finest = src.widths[0]
    if span // finest >= pairs // 4 or span * len(ids) > SERIES_SQL_BUCKET_ROWS:
        # The coarsest width that still gives at least half the buckets wanted: few rows, no merging.
        widths = [w for w in src.widths if w == finest or span // w >= pairs // 2]
        return _pairs(_rollup_rows(conn, r.id, src, ids, lo, hi, pairs, widths), ids)
    return _pairs(_bucket_rows(conn, r.id, src, ids, lo, hi, -(-span // pairs)), ids)


# Past this many raw rows in range (all chosen arms), bucketing in SQL costs more than reading rollups.
SERIES_SQL_BUCKET_ROWS = 300_000

_SeriesData = tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], bool]
_EMPTY: _SeriesData = (np.zeros(0, dtype=np.int64), np.zeros(0), False)


def fetch_array(conn: Connection, q: Any, n_cols: int) -> np.ndarray[Any, Any]:
    """Rows of a numeric query (no NULLs: the queries filter them) as a float64 array of `n_cols` columns.

    Straight from the driver's cursor: SQLAlchemy's Row objects cost more than the query itself here.
    On PostgreSQL the rows come in binary (db.BINARY_ROWS).
    """
    res = conn.execute(q.execution_options(**{BINARY_ROWS: True}))
    try:
        rows = res.cursor.fetchall()
    finally:
        res.close()
    return np.array(rows, dtype=np.float64).reshape(-1, n_cols)


def _series_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 ) -> dict[int, _SeriesData]:
    t = _ARM_STEP.c
    q = (
        select(t.arm_id, t.step, src.raw)
        .where(t.run_id == run_id, t.step.between(lo, hi), t.arm_id.in_(ids), src.raw.is_not(None))
        .order_by(t.step, t.arm_id)  # the key's order: no sort in SQL; grouped by arm below
    )
    a = fetch_array(conn, q, 3)
    a = a[np.argsort(a[:, 0], kind="stable")]  # by arm, each arm's rows still in step order
    arm_ids, steps, vals = a[:, 0], a[:, 1], a[:, 2]
    out = dict.fromkeys(ids, _EMPTY)
    for i in ids:
        i0, i1 = np.searchsorted(arm_ids, [i, i + 1])
        out[i] = (steps[i0:i1].astype(np.int64), vals[i0:i1], False)
    return out


def _bucket_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 width: int) -> np.ndarray[Any, Any]:
    """Raw rows of [lo, hi] bucketed in SQL, `width` steps a bucket: (arm, g, first, last, min, max, mean)."""
    t = _ARM_STEP.c
    col = src.raw
    g = ((t.step - lo) // width).label("g")
    q = (
        # avg of an integer column is NUMERIC (Decimal) on PostgreSQL: make every mean a float.
        select(t.arm_id, g, func.min(t.step), func.max(t.step), func.min(col), func.max(col),
               sql_cast(func.avg(col), Float))
        .where(t.run_id == run_id, t.step.between(lo, hi), t.arm_id.in_(ids), col.is_not(None))
        .group_by(t.arm_id, g)
    )
    return fetch_array(conn, q, 7)


def _rollup_rows(conn: Connection, run_id: int, src: _Source, ids: list[int], lo: int, hi: int,
                 groups: int, widths: Sequence[int]) -> np.ndarray[Any, Any]:
    """[lo, hi] in at most `groups` buckets per arm from the rollups of the coarsest of `widths`.

    Rollup buckets wholly inside [lo, hi] are merged `per_group` at a time in SQL; each partial bucket
    at either end is one more bucket, read from the finest width (and raw rows for what is left of it:
    two small queries whatever the level), so nothing outside the requested range is shown.
    """
    if not widths:
        return _bucket_rows(conn, run_id, src, ids, lo, hi, -(-(hi - lo + 1) // groups))
    w = widths[-1]
    b0, b1 = -(-lo // w), (hi + 1) // w - 1
    if b1 < b0:
        return _rollup_rows(conn, run_id, src, ids, lo, hi, groups, widths[:-1])
    head_end, tail_start = b0 * w - 1, (b1 + 1) * w
    edges = int(lo <= head_end) + int(tail_start <= hi)
    per_group = max(1, -(-(b1 - b0 + 1) // max(1, groups - edges)))
    t = src.table.c
    n = t[f"{src.prefix}_n"]
    vmin, vmax, vsum = t[f"{src.prefix}_min"], t[f"{src.prefix}_max"], t[f"{src.prefix}_sum"]
    where = (t.run_id == run_id, t.arm_id.in_(ids), *src.where, t.width == w, t.bucket.between(b0, b1), n > 0)
    if per_group == 1:  # one rollup row per bucket shown: read the rows as they are, no GROUP BY
        q = select(t.arm_id, t.bucket, t.first_step, t.last_step, vmin, vmax, vsum / n).where(*where)
    else:
        g = ((t.bucket - b0) // per_group).label("g")
        q = (
            select(t.arm_id, g, func.min(t.first_step), func.max(t.last_step), func.min(vmin), func.max(vmax),
                   func.sum(vsum) / func.sum(n))
            .where(*where)
            .group_by(t.arm_id, g)
        )
    parts = [fetch_array(conn, q, 7)]
    if lo <= head_end:
        parts.append(_one_per_arm(_rollup_rows(conn, run_id, src, ids, lo, head_end, 1, widths[:1])))
    if tail_start <= hi:
        parts.append(_one_per_arm(_rollup_rows(conn, run_id, src, ids, tail_start, hi, 1, widths[:1])))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _one_per_arm(rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Merge (arm, g, first, last, min, max, mean) rows into one bucket per arm."""
    if rows.shape[0] == 0:
        return rows
    arm_ids, inverse = np.unique(rows[:, 0], return_inverse=True)
    k = arm_ids.size
    out = np.empty((k, 7))
    out[:, 0] = arm_ids
    out[:, 1] = 0
    for col, ufunc, init in ((2, np.minimum, np.inf), (3, np.maximum, -np.inf), (4, np.minimum, np.inf),
                             (5, np.maximum, -np.inf)):
        acc = np.full(k, init)
        ufunc.at(acc, inverse, rows[:, col])
        out[:, col] = acc
    # The mean only orders a bucket's two points (rising or falling); an unweighted mean will do.
    out[:, 6] = np.bincount(inverse, weights=rows[:, 6], minlength=k) / np.bincount(inverse, minlength=k)
    return out


def _pairs(rows: np.ndarray[Any, Any], ids: list[int]) -> dict[int, _SeriesData]:
    """(arm, group, first step, last step, min, max, mean) rows, any order -> two points per bucket."""
    order = np.lexsort((rows[:, 2], rows[:, 0]))
    arm_ids, _, first, last, vmin, vmax, mean = (rows[order, c] for c in range(7))
    out = dict.fromkeys(ids, _EMPTY)
    for i in ids:
        i0, i1 = np.searchsorted(arm_ids, [i, i + 1])
        f, la = first[i0:i1].astype(np.int64), last[i0:i1].astype(np.int64)
        mn, mx, me = vmin[i0:i1], vmax[i0:i1], mean[i0:i1]
        # A rising bucket (mean above the previous bucket's) shows its min first, a falling one its max.
        prev = np.concatenate([me[:1], me[:-1]])
        rising = me >= prev
        x = np.empty(2 * mn.size, dtype=np.int64)
        y = np.empty(2 * mn.size, dtype=np.float64)
        x[0::2], x[1::2] = f, la
        y[0::2] = np.where(rising, mn, mx)
        y[1::2] = np.where(rising, mx, mn)
        out[i] = (x, y, True)
    return out


def steps(session: Session, run: str, start: int | None, end: int | None, limit: int) -> list[StepRow]:
    r = _run(session, run)
    q = select(RunStep).where(RunStep.run_id == r.id)
    if start is not None:
        q = q.where(RunStep.step >= start)
    if end is not None:
        q = q.where(RunStep.step <= end)
    return [
        StepRow(step=s.step, ts=s.ts, seq=s.seq, metrics=s.metrics)
        for s in session.scalars(q.order_by(RunStep.step).limit(limit))
    ]


def step_times(session: Session, run: str) -> StepTimes:
    """Every stored step and its wall time, as two arrays (what a chart's time axis needs)."""
    r = _run(session, run)
    a = fetch_array(
        session.connection(), select(_RUN_STEP.c.step, _RUN_STEP.c.ts).where(_RUN_STEP.c.run_id == r.id)
        .order_by(_RUN_STEP.c.step), 2,
    )
    return StepTimes(run=run, steps=a[:, 0].astype(np.int64).tolist(), ts=a[:, 1].tolist())


# ---------------------------------------------------------------------------------------------------
# Commands (the audit log)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArmView:
    name: str
    state: str
    pin: float | None


@dataclass(frozen=True, slots=True)
class PendingCommand:
    kind: str
    arm: str
    value: float | None


@dataclass(frozen=True, slots=True)
class SteeringView:
    """What command validation needs: the run, its arms as reported, and commands not yet acked."""

    run_id: int
    name: str
    status: str
    arms: list[ArmView]
    pending: list[PendingCommand]


def steering_view(session: Session, run: str) -> SteeringView:
    r = _run(session, run)
    pending = session.execute(
        select(Command.kind, Command.arm, Command.value)
        .where(Command.run_id == r.id, Command.status == "pending")
        .order_by(Command.created_at)
    ).all()
    return SteeringView(
        run_id=r.id,
        name=r.name,
        status=r.status,
        arms=[ArmView(a.name, a.state, a.pin) for a in _arms(session, r.id)],
        pending=[PendingCommand(k, a, v) for k, a, v in pending],
    )


def record_command(
    session: Session,
    run_id: int,
    kind: str,
    arm: str,
    value: float | None,
    steps: int | None,
    actor: str,
    reason: str,
) -> Command:
    cmd = Command(
        id=str(uuid.uuid4()), run_id=run_id, kind=kind, arm=arm, value=value, steps=steps, actor=actor,
        reason=reason, created_at=utcnow(), status="pending",
    )
    session.add(cmd)
    session.flush()
    return cmd


def reject_command(session: Session, command_id: str, message: str) -> None:
    session.execute(
        update(Command)
        .where(Command.id == command_id, Command.status == "pending")
        .values(status="rejected", message=message, acked_at=utcnow())
    )


def list_commands(session: Session, run: str, limit: int) -> list[CommandRecord]:
    r = _run(session, run)
    q = select(Command).where(Command.run_id == r.id).order_by(Command.created_at.desc()).limit(limit)
    return [
        CommandRecord(
            id=c.id, run=r.name, kind=c.kind, arm=c.arm, value=c.value, steps=c.steps, actor=c.actor,
            reason=c.reason, created_at=c.created_at, status=c.status, applied_step=c.applied_step,
            message=c.message, acked_at=c.acked_at,
        )
        for c in session.scalars(q)
    ]


def ping(session: Session) -> None:
    session.execute(text("SELECT 1"))


def last_steps(session: Session, runs: Sequence[str]) -> dict[str, int]:
    """The last stored step of each named run that exists (-1 before its first step)."""
    rows = session.execute(select(Run.name, Run.last_step).where(Run.name.in_(list(runs)))).all()
    return {name: int(step) for name, step in rows}
