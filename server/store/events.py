"""Live events: what one committed ingest batch changed in one run, as the page receives it over SSE
(docs/sse.md). The ingest worker publishes them after commit; `events_since` rebuilds them from SQL
for a client that resumes.

The documents are built here from the stored (or validated) values, never relayed from the wire, so a
change of the wire protocol does not reach the browser.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from server.store.commands import AckedCommand, acked_since, command_label
from server.store.diagnoses import DiagnosisConfig, changes_of
from server.store.evals import evals_since
from server.store.sql import ARM_STEPS, ARMS, RUN_STEPS, RUNS, run_row
from server.wire import ArmRecord, Step

# Every field of an arm's record in a step entry, in the order documented in docs/sse.md.
ARM_FIELDS = (
    "arm", "p", "score", "parts", "n_step", "n_total", "mean_abs_adv", "mean_reward", "accuracy", "state", "pin",
    "boost", "n_groups", "zero_var", "pass_hist",
)
_ARM_DEFAULTS: dict[str, Any] = {
    "score": None, "parts": {}, "mean_abs_adv": None, "mean_reward": None, "accuracy": None, "state": "active",
    "pin": None, "boost": None, "n_groups": None, "zero_var": None, "pass_hist": None,
}


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """What one committed batch changed in one run; published on the run's live channel."""

    run: str
    seq: int
    payload: dict[str, Any]


# Validation keeps only ArmRecord's keys. While those are the fields above, a validated record that has
# all of them (what the agent sends) is an arm record of this contract already, and is reused as it is.
_WIRE_KEYS_ARE_FIELDS = ArmRecord.__required_keys__ | ArmRecord.__optional_keys__ == frozenset(ARM_FIELDS)


def step_entry(m: Step) -> dict[str, Any]:
    """A validated step message as a step entry of an `update` event: step, ts, metrics, and arms with
    every field of ARM_FIELDS (the wire's optional keys filled with their defaults). Built from the
    validated values, not relayed: a non-finite number goes out as null, never as invalid JSON."""
    n = len(ARM_FIELDS)
    if _WIRE_KEYS_ARE_FIELDS and all(map(n.__eq__, map(len, m.arms))):  # C loops: one call per record
        arms: list[Any] = m.arms
    else:
        arms = [_full_arm(r) for r in m.arms]
    return {"step": m.step, "ts": m.ts, "metrics": m.metrics, "arms": arms}


def _full_arm(r: ArmRecord) -> dict[str, Any]:
    return {k: r.get(k, _ARM_DEFAULTS.get(k)) for k in ARM_FIELDS}


def ack_entry(acked: AckedCommand) -> dict[str, Any]:
    """An ack of an `update` event: the command (what the page shows for it, `label` included) and its
    outcome."""
    c = acked.command
    return {
        "id": c.id, "kind": c.kind, "arm": c.arm, "value": c.value, "steps": c.steps, "status": acked.status,
        "applied_step": acked.applied_step, "message": acked.message,
        "label": command_label(c.kind, c.arm, c.value, c.steps, c.scheduler, c.params),
        "scheduler": c.scheduler, "params": c.params,
    }


def status_entry(conn: Connection, run_id: int) -> dict[str, Any]:
    r = conn.execute(
        select(RUNS.c.status, RUNS.c.started_at, RUNS.c.ended_at, RUNS.c.last_step).where(RUNS.c.id == run_id)
    ).one()
    return {
        "status": r.status,
        "started_at": r.started_at.isoformat() if r.started_at else None,
        "ended_at": r.ended_at.isoformat() if r.ended_at else None,
        "last_step": r.last_step,
    }


def event_seq(conn: Connection, run: str) -> int:
    """The run's latest live event seq (RunNotFound for an unknown run)."""
    return int(run_row(conn, run, RUNS.c.event_seq).event_seq)


def events_since(conn: Connection, run: str, after: int, limit: int) -> tuple[int, list[LiveEvent]] | None:
    """Rebuild from SQL the live events of `run` with seq > `after`, for an SSE client resuming.

    Returns (current event seq, events), or None when more than `limit` events were missed (the
    client should reload instead).
    """
    r = run_row(conn, run, RUNS.c.id, RUNS.c.event_seq, RUNS.c.status_event_seq)
    run_id, current, status_seq = int(r.id), int(r.event_seq), int(r.status_event_seq)
    after = max(after, 0)
    if current <= after:
        return current, []
    if current - after > limit:
        return None
    payloads: dict[int, dict[str, Any]] = {}

    def ev(seq: int) -> dict[str, Any]:
        return payloads.setdefault(seq, {"run": run, "entry_ids": [], "seq": seq})

    steps = conn.execute(
        select(RUN_STEPS.c.step, RUN_STEPS.c.ts, RUN_STEPS.c.metrics, RUN_STEPS.c.event_seq, RUN_STEPS.c.entry_id)
        .where(RUN_STEPS.c.run_id == run_id, RUN_STEPS.c.event_seq > after)
        .order_by(RUN_STEPS.c.step)
    ).all()
    if steps:
        arm_rows = _arm_entries(conn, run_id, [s.step for s in steps])
        for s in steps:
            e = ev(s.event_seq)
            e["entry_ids"].append(s.entry_id)
            e.setdefault("steps", []).append(
                {"step": s.step, "ts": s.ts, "metrics": s.metrics, "arms": arm_rows[s.step]}
            )
    for seq, c in acked_since(conn, run_id, after):
        ev(seq).setdefault("acks", []).append(ack_entry(c))
    for seq, p in evals_since(conn, run_id, after):
        ev(seq).setdefault("evals", []).append(p.entry())
    for d in changes_of(conn, run_id, DiagnosisConfig(), after_event=after):
        ev(d.pop("event_seq")).setdefault("diagnoses", []).append(d)
    if status_seq > after:
        # Only the latest status is kept; earlier status changes in the gap are superseded by it.
        ev(status_seq)["status"] = status_entry(conn, run_id)
    # Events whose only change was superseded still get an (empty) event so seqs stay gapless.
    for seq in range(after + 1, current + 1):
        ev(seq)
    return current, [LiveEvent(run, seq, payloads[seq]) for seq in sorted(payloads)]


def _arm_entries(conn: Connection, run_id: int, step_nums: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The arms' records of each of `step_nums`, as stored."""
    arm_state = {
        a.id: a for a in conn.execute(
            select(ARMS.c.id, ARMS.c.name, ARMS.c.state, ARMS.c.pin, ARMS.c.boost).where(ARMS.c.run_id == run_id)
        )
    }
    q = (
        select(ARM_STEPS)
        .where(
            ARM_STEPS.c.run_id == run_id,
            ARM_STEPS.c.arm_id.in_(list(arm_state)),
            ARM_STEPS.c.step.between(min(step_nums), max(step_nums)),
        )
        .order_by(ARM_STEPS.c.step, ARM_STEPS.c.arm_id)
    )
    wanted = set(step_nums)
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in conn.execute(q):
        if a.step not in wanted:
            continue
        st = arm_state[a.arm_id]
        # Per-step state/pin/boost are not stored; the arm's current ones stand in for them.
        out[a.step].append({
            "arm": st.name, "p": a.probability, "score": a.score, "parts": a.parts, "n_step": a.n_step,
            "n_total": a.n_total, "mean_abs_adv": a.mean_abs_adv, "mean_reward": a.mean_reward,
            "accuracy": a.accuracy, "state": st.state, "pin": st.pin, "boost": st.boost, "n_groups": a.n_groups,
            "zero_var": a.zero_var, "pass_hist": a.pass_hist,
        })
    return out
