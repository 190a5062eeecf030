"""Diagnoses in SQL: each run's diagnosis state (run_diagnoses), the history of changes
(diagnosis_changes), suggestions accepted or dismissed (suggestion_responses); folding a batch's new
steps on ingest, and a stored run's steps on first read (runs stored before diagnoses existed).

The rules are server/diagnosis.py's; the suggestions server/suggestions.py's (docs/diagnosis.md).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.orm import Session

from server.db import SQLITE_IMMEDIATE
from server.diagnosis import INPUTS, ArmCarry, ArmEval, Change, Thresholds, fold
from server.models import DiagnosisChange, RunDiagnosis, SuggestionResponse
from server.store.evals import EvalResult
from server.store.sql import ARM_STEPS, ARMS, EVALS, RUNS, run_row, update_rows, utcnow
from server.store.sql import insert as dialect_insert
from server.suggestions import SuggestionRules, describe, suggest

RUN_DIAGNOSES = cast(Table, RunDiagnosis.__table__)
CHANGES = cast(Table, DiagnosisChange.__table__)
RESPONSES = cast(Table, SuggestionResponse.__table__)

# The layout of the rows ingest hands over: run, arm id, step, then INPUTS' values.
DIAG_COLS = ("run_id", "arm_id", "step", "p", "n", "acc", "mab", "zv", "ng", "retired")
# The connection option ingest reads its DiagnosisConfig from (server/ingest.py sets it).
DIAGNOSIS_CONFIG = "steerboard_diagnosis_config"
# A stored run is folded this many steps at a time.
_CHUNK_STEPS = 4096


@dataclass(frozen=True, slots=True)
class DiagnosisConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    rules: SuggestionRules = field(default_factory=SuggestionRules)


def split_rows(rows: list[tuple[Any, ...]]) -> dict[int, np.ndarray[Any, Any]]:
    """Ingest's DIAG_COLS rows as one float array per run (None becomes NaN)."""
    if not rows:
        return {}
    a = np.array(rows, dtype=np.float64)
    run = a[:, 0].astype(np.int64)
    return {int(r): a[run == r] for r in np.unique(run)}


def _entry(arm: str, diagnosis: str | None, previous: str | None, since: int, step: int,
           figures: dict[str, Any], cfg: DiagnosisConfig) -> dict[str, Any]:
    """A diagnosis as the API and the live events show it (docs/diagnosis.md)."""
    s = suggest(arm, diagnosis, since, figures, int(figures.get("active_arms") or 0), cfg.rules)
    return {
        "arm": arm, "diagnosis": diagnosis, "previous": previous, "since_step": since, "step": step,
        "figures": figures, "reason": describe(diagnosis, since, figures),
        "suggestion": None if s is None else {**s.command(), "label": s.label},
    }


class DiagnosisBatch:
    """An ingest batch's diagnoses: every run's stored state read in one query, each run folded in memory,
    the states written back together at the end (two round trips per run cost a 40-run batch most of its
    time on a busy machine)."""

    def __init__(self, conn: Connection, run_ids: Sequence[int]) -> None:
        d = RUN_DIAGNOSES.c
        self.stored: dict[int, tuple[int, dict[str, Any]]] = {
            int(r.run_id): (int(r.step), dict(r.state))
            for r in conn.execute(select(d.run_id, d.step, d.state).where(d.run_id.in_(list(run_ids))))
        } if run_ids else {}
        self._saves: list[tuple[int, int, dict[str, Any]]] = []

    def diagnose(self, conn: Connection, run_id: int, rows: np.ndarray[Any, Any] | None,
                 evals: Sequence[EvalResult], arm_ids: dict[str, int], event_seq: int,
                 cfg: DiagnosisConfig) -> list[dict[str, Any]]:
        """Fold a run's new steps (DIAG_COLS rows) and evaluations into its diagnosis, in the caller's
        transaction (the run's row is locked); store the changes at `event_seq`; return them as entries.

        Steps at or before the last step folded are skipped (a late delivery); a run stored before
        diagnoses existed is first folded from its stored steps."""
        got = self.stored.get(run_id)
        last, state = got if got is not None else (-1, {})
        if got is None and rows is not None and rows.size and int(rows[:, 2].min()) > 0:
            last, state = _fold_stored(conn, run_id, int(rows[:, 2].min()) - 1, state, cfg, arm_ids)
        if rows is not None:
            rows = rows[rows[:, 2] > last]
        names = {i: n for n, i in arm_ids.items()}
        changes, last = _fold_rows(state, last, rows, list(evals), arm_ids, cfg.thresholds)
        self._saves.append((run_id, last, state))
        return _store_changes(conn, run_id, changes, names, event_seq, cfg)

    def save(self, conn: Connection) -> None:
        """Write the folded states back, all in a few statements."""
        _save_states(conn, self._saves, self.stored.keys())
        self._saves.clear()


def _fold_rows(state: dict[str, Any], last: int, rows: np.ndarray[Any, Any] | None, evals: list[EvalResult],
               arm_ids: dict[str, int], th: Thresholds) -> tuple[list[tuple[int, Change]], int]:
    """Fold rows (DIAG_COLS) into `state` (per arm id, updated in place); (arm id, change) pairs, last step."""
    ids = sorted(arm_ids.values())
    arms = state.setdefault("arms", {})
    carry = [ArmCarry.from_json(arms.get(str(i), {})) for i in ids]
    col = {i: j for j, i in enumerate(ids)}
    if rows is not None and rows.size:
        steps, t_idx = np.unique(rows[:, 2].astype(np.int64), return_inverse=True)
        a_idx = np.searchsorted(np.array(ids, dtype=np.float64), rows[:, 1])  # ids are sorted
        m = {}
        for c, name in enumerate(INPUTS, start=3):
            mat = np.full((steps.size, len(ids)), np.nan)
            mat[t_idx, a_idx] = rows[:, c]
            m[name] = mat
    else:  # evaluations only: re-judged at the last step folded
        if last < 0:
            return [], last
        steps = np.zeros(0, dtype=np.int64)
        m = {name: np.zeros((0, len(ids))) for name in INPUTS}
    by_name = {n: col[i] for n, i in arm_ids.items()}
    points = [ArmEval(by_name[e.arm], e.step, e.name, e.accuracy, e.total) for e in evals if e.arm in by_name]
    changes = fold(carry, steps, m, points, th) if steps.size else _evals_only(carry, points, th)
    for i, arm_carry in zip(ids, carry, strict=True):
        arms[str(i)] = arm_carry.to_json()
    return [(ids[ch.arm], ch) for ch in changes], int(steps[-1]) if steps.size else last


def _evals_only(carry: list[ArmCarry], points: list[ArmEval], th: Thresholds) -> list[Change]:
    # Evaluations without new steps update what each arm knows of them; the next step judges them.
    from server.diagnosis import _eval_regress

    _eval_regress(carry, np.zeros(0, dtype=np.int64), points, th)
    return []


def _save_states(conn: Connection, saves: Sequence[tuple[int, int, dict[str, Any]]], stored: Collection[int]) -> None:
    """Store runs' diagnosis states, (run id, last step folded, state) each: an UPDATE for the runs in
    `stored` (that had one), an upsert for the others."""
    now = utcnow()
    update_rows(conn, RUN_DIAGNOSES, "run_id", [{"run_id": r, "step": st, "state": state, "updated_at": now}
                                                 for r, st, state in saves if r in stored])
    new = [{"run_id": r, "step": st, "state": state, "updated_at": now} for r, st, state in saves if r not in stored]
    if new:
        ins = dialect_insert(conn, RUN_DIAGNOSES)
        conn.execute(ins.on_conflict_do_update(index_elements=["run_id"], set_={
            "step": ins.excluded.step, "state": ins.excluded.state, "updated_at": ins.excluded.updated_at,
        }), new)


def _store_changes(conn: Connection, run_id: int, changes: list[tuple[int, Change]], names: dict[int, str],
                   event_seq: int, cfg: DiagnosisConfig) -> list[dict[str, Any]]:
    if not changes:
        return []
    conn.execute(insert(CHANGES), [
        {"run_id": run_id, "arm_id": arm_id, "since_step": ch.since, "step": ch.step, "diagnosis": ch.diagnosis,
         "previous": ch.previous, "figures": ch.figures, "event_seq": event_seq}
        for arm_id, ch in changes
    ])
    return [_entry(names.get(arm_id, str(arm_id)), ch.diagnosis, ch.previous, ch.since, ch.step, ch.figures, cfg)
            for arm_id, ch in changes]


def _stored_rows(conn: Connection, run_id: int, lo: int, hi: int) -> np.ndarray[Any, Any]:
    """Stored arm_steps of [lo, hi] as DIAG_COLS rows. Per-step retirement is not stored: a step with p
    exactly 0 of an arm retired now counts as retired."""
    t = ARM_STEPS.c
    retired_now = {int(i) for i, in conn.execute(
        select(ARMS.c.id).where(ARMS.c.run_id == run_id, ARMS.c.state == "retired"))}
    q = (select(t.run_id, t.arm_id, t.step, t.probability, t.n_step, t.accuracy, t.mean_abs_adv, t.zero_var,
                t.n_groups)
         .where(t.run_id == run_id, t.step.between(lo, hi)).order_by(t.step, t.arm_id))
    rows = [(*r, float(r[3] == 0.0 and r[1] in retired_now)) for r in conn.execute(q)]
    return np.array(rows, dtype=np.float64).reshape(-1, len(DIAG_COLS))


def _fold_stored(conn: Connection, run_id: int, until: int, state: dict[str, Any], cfg: DiagnosisConfig,
                 arm_ids: dict[str, int]) -> tuple[int, dict[str, Any]]:
    """Fold a run's stored steps up to `until` (and its evaluations) into `state`; changes stored at
    event 0 (no live event carried them)."""
    evals = [EvalResult(r.name, r.step, r.arm, r.accuracy, r.correct, r.total) for r in conn.execute(
        select(EVALS.c.name, EVALS.c.step, EVALS.c.arm, EVALS.c.accuracy, EVALS.c.correct, EVALS.c.total)
        .where(EVALS.c.run_id == run_id, EVALS.c.step <= until).order_by(EVALS.c.step))]
    names = {i: n for n, i in arm_ids.items()}
    last, lo = -1, 0
    while lo <= until:
        hi = min(until, lo + _CHUNK_STEPS - 1)
        rows = _stored_rows(conn, run_id, lo, hi)
        chunk_evals = [e for e in evals if lo <= e.step <= hi or (lo == 0 and e.step < lo)]
        changes, last = _fold_rows(state, last, rows if rows.size else None, chunk_evals, arm_ids, cfg.thresholds)
        _store_changes(conn, run_id, changes, names, 0, cfg)
        lo = hi + 1
    return last, state


def _arm_names(conn: Connection, run_id: int) -> dict[str, int]:
    return {str(n): int(i) for n, i in conn.execute(select(ARMS.c.name, ARMS.c.id).where(ARMS.c.run_id == run_id))}


@dataclass(frozen=True, slots=True)
class RunDiagnoses:
    run: str
    step: int  # the last step diagnosed (-1: none yet)
    arms: list[dict[str, Any]]  # per arm, in the run's arm order: the current diagnosis entry
    changes: list[dict[str, Any]]  # the history, oldest first
    responses: list[dict[str, Any]]  # suggestions accepted or dismissed, oldest first


def run_diagnoses(session: Session, run: str, cfg: DiagnosisConfig, history: int = 1000) -> RunDiagnoses:
    """A run's current diagnosis per arm (with the figures behind it, its reason and suggestion), its
    latest `history` changes and the responses to suggestions. A run stored before diagnoses existed is
    diagnosed from its stored steps first (once; stored)."""
    r = run_row(session, run, RUNS.c.id, RUNS.c.name, RUNS.c.last_step)
    conn = session.connection()
    got = conn.execute(select(RUN_DIAGNOSES.c.step, RUN_DIAGNOSES.c.state)
                       .where(RUN_DIAGNOSES.c.run_id == r.id)).first()
    if got is None and r.last_step >= 0:
        session.commit()
        conn = session.connection(execution_options={SQLITE_IMMEDIATE: True})
        conn.execute(select(RUNS.c.id).where(RUNS.c.id == r.id).with_for_update())
        if conn.execute(select(RUN_DIAGNOSES.c.run_id).where(RUN_DIAGNOSES.c.run_id == r.id)).first() is None:
            last, state = _fold_stored(conn, r.id, r.last_step, {}, cfg, _arm_names(conn, r.id))
            _save_states(conn, [(r.id, last, state)], ())
        session.commit()
        conn = session.connection()
        got = conn.execute(select(RUN_DIAGNOSES.c.step, RUN_DIAGNOSES.c.state)
                           .where(RUN_DIAGNOSES.c.run_id == r.id)).first()
    step, state = (int(got.step), dict(got.state)) if got is not None else (-1, {})
    carried = state.get("arms", {})
    arms = []
    for name, arm_id in conn.execute(select(ARMS.c.name, ARMS.c.id).where(ARMS.c.run_id == r.id)
                                     .order_by(ARMS.c.position, ARMS.c.id)):
        c = ArmCarry.from_json(carried.get(str(arm_id), {}))
        arms.append(_entry(name, c.diagnosis, None, c.since, step, c.figures, cfg))
    return RunDiagnoses(r.name, step, arms, changes_of(conn, r.id, cfg, history), responses_of(conn, r.id))


def changes_of(conn: Connection, run_id: int, cfg: DiagnosisConfig, limit: int = 1000,
               after_event: int | None = None) -> list[dict[str, Any]]:
    """The run's diagnosis changes, oldest first (the latest `limit`), or those carried by live events
    after `after_event` (each entry then has its `event_seq`)."""
    c = CHANGES.c
    q = (select(ARMS.c.name, c.diagnosis, c.previous, c.since_step, c.step, c.figures, c.event_seq)
         .join(ARMS, ARMS.c.id == c.arm_id).where(c.run_id == run_id))
    if after_event is not None:
        q = q.where(c.event_seq > after_event).order_by(c.event_seq, c.id)
    else:
        q = q.order_by(c.step.desc(), c.id.desc()).limit(limit)
    rows = list(conn.execute(q))
    if after_event is None:
        rows.reverse()
    out = []
    for row in rows:
        e = _entry(row.name, row.diagnosis, row.previous, row.since_step, row.step, dict(row.figures), cfg)
        e["event_seq"] = int(row.event_seq)
        out.append(e)
    return out


def record_response(session: Session, run_id: int, arm: str, diagnosis: str, since_step: int, response: str,
                    command_id: str | None, actor: str, reason: str) -> dict[str, Any]:
    """Audit a suggestion accepted (with the command sent) or dismissed, in the caller's transaction."""
    row = {"run_id": run_id, "arm": arm, "diagnosis": diagnosis, "since_step": since_step, "response": response,
           "command_id": command_id, "actor": actor, "reason": reason, "created_at": utcnow()}
    session.execute(insert(RESPONSES).values(**row))
    return {k: v for k, v in row.items() if k != "run_id"}


def responses_of(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    c = RESPONSES.c
    q = (select(c.arm, c.diagnosis, c.since_step, c.response, c.command_id, c.actor, c.reason, c.created_at)
         .where(c.run_id == run_id).order_by(c.created_at, c.id))
    return [dict(r._mapping) for r in conn.execute(q)]


def last_step_records(session: Session, run: str) -> tuple[int, list[dict[str, Any]]]:
    """The run's last step and each arm's record at it (what the run page's cockpit opens on): p, score,
    parts, completions, mean |A|, accuracy, zero-variance share; one primary-key range read."""
    r = run_row(session, run, RUNS.c.id, RUNS.c.last_step)
    s = ARM_STEPS.c
    q = (select(ARMS.c.name.label("arm"), s.probability.label("p"), s.score, s.parts, s.n_step, s.n_total,
                s.mean_abs_adv, s.accuracy, s.n_groups, s.zero_var)
         .join(ARMS, ARMS.c.id == s.arm_id).where(s.run_id == r.id, s.step == r.last_step))
    return int(r.last_step), [dict(row._mapping) for row in session.connection().execute(q)]


def diagnosis_config(settings: Any) -> DiagnosisConfig:
    """The rules' parameters from the server's settings (`diagnosis_*`, `suggest_*`)."""
    return DiagnosisConfig(
        Thresholds(
            window=settings.diagnosis_window, confirm_steps=settings.diagnosis_confirm_steps,
            min_samples=settings.diagnosis_min_samples, saturated_accuracy=settings.diagnosis_saturated_accuracy,
            too_hard_accuracy=settings.diagnosis_too_hard_accuracy,
            low_signal_zero_var=settings.diagnosis_low_signal_zero_var,
            low_signal_abs_adv=settings.diagnosis_low_signal_abs_adv,
            high_signal_zero_var=settings.diagnosis_high_signal_zero_var,
            high_signal_abs_adv=settings.diagnosis_high_signal_abs_adv,
            starved_share=settings.diagnosis_starved_share, unstable_ratio=settings.diagnosis_unstable_ratio,
            regress_drop=settings.diagnosis_regress_drop,
        ),
        SuggestionRules(
            boost_factor=settings.suggest_boost_factor, boost_steps=settings.suggest_boost_steps,
            lower_factor=settings.suggest_lower_factor, lower_steps=settings.suggest_lower_steps,
        ),
    )
