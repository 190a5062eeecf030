"""All SQL of the server, one module per concern; each answers in plain dataclasses or rows.

- `sql`: table handles, the dialect's INSERT, upserts, numeric fetches, the clock (`utcnow`) and the
  one run lookup (`run_row`, `run_id`).
- `ingest`: ingest writes (`apply_ingest`); `rollups`: the rollups ingest keeps.
- `events`: live events (docs/sse.md), published after ingest and replayed by `events_since`.
- `series`: chart series (downsampled), step metrics and times; `retention`: dropping old runs' raw arm rows.
- `metrics`: the trainer's metrics as chart series, from a per-process cache of each run's metric columns.
- `runs`: a run in full, project and run names; the stale rule (`is_stale`, `stale_clause` in SQL).
- `runs_table`: the runs table and JSON list (filters, sort by any column, pages, each run's summary).
- `manage`: tags (the agent's and people's), notes, archiving, deleting a run; their audit log.
- `compare`: what comparing runs reads (per-step accuracy, final accuracy per arm).
- `commands`: the audit log (steering's view, commands, acks); `exports`: CSV reads; `users`: logins.

Nothing here knows the web layer: no FastAPI, no response models (the routes own those).
"""
