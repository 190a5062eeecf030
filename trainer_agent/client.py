"""Read runs from a Steerboard server in a notebook: what `wandb.Api()` or `MlflowClient` are to theirs.

Standard library HTTP only (the bare `pip install steerboard` has no HTTP client); tables come back
as pandas DataFrames when pandas is installed, else as lists of dicts.

Example (comparing two runs on their evaluation)::

    from trainer_agent.client import SteerboardClient

    sb = SteerboardClient("http://127.0.0.1:8000", token=None)   # token: `steerboard token create`
    ev = sb.evals("kk-dump-0").assign(run="dump")
    ev2 = sb.evals("kk-uniform-0").assign(run="uniform")
    import pandas as pd
    both = pd.concat([ev, ev2])
    both.groupby(["run", "step"]).accuracy.mean().unstack(0)      # mean eval accuracy over arms
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SteerboardError
from .recent import WarmStart
from .staged_schedulers import schedule_from_export


class ClientError(SteerboardError):
    """The server answered with an error (its message included), or could not be reached."""

    code = "client_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# The columns of each table, so that an empty one still has them (a notebook goes on to select them).
_EVAL_COLUMNS = ["name", "step", "arm", "accuracy", "correct", "total"]
_COMMAND_COLUMNS = [
    "id", "run", "kind", "arm", "value", "steps", "actor", "reason", "created_at", "status", "applied_step",
    "message", "acked_at",
]


def _frame(rows: list[dict[str, Any]], as_frame: bool | None, columns: Sequence[str] | None = None) -> Any:
    if as_frame is False:
        return rows
    try:
        import pandas as pd  # type: ignore[import-untyped]
    except ImportError:
        if as_frame:
            raise
        return rows
    if not rows and columns is not None:
        return pd.DataFrame(columns=list(columns))
    return pd.DataFrame(rows)


class SteerboardClient:
    """Read-only access to a Steerboard server's JSON API.

    Args:
        url: the server's base URL.
        token: a bearer token (`steerboard token create NAME --role viewer`), when the server asks for one.
        timeout: seconds per request.
        as_frame: True: tables as pandas DataFrames (pandas must be installed); False: lists of
            dicts; None (default): DataFrames when pandas is installed.
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", token: str | None = None, *, timeout: float = 30.0,
                 as_frame: bool | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.as_frame = as_frame

    # -- HTTP ------------------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return json.loads(self._fetch(path, params, "application/json"))

    def _fetch(self, path: str, params: Mapping[str, Any] | None, accept: str) -> bytes:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        full = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(full, headers={"Accept": accept})
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body: bytes = resp.read()
                return body
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = e.reason
            raise ClientError(f"{e.code} from {path}: {message}", status=e.code) from e
        except (urllib.error.URLError, OSError) as e:
            raise ClientError(f"cannot reach {self.url}: {e}") from e

    @staticmethod
    def _run_path(run: str) -> str:
        return "/api/runs/" + urllib.parse.quote(run, safe="")

    # -- reads -----------------------------------------------------------------------------------
    def runs(self, project: str | None = None, limit: int = 200) -> Any:
        """Runs, newest first: name, project, scheduler, status, stale, started_at, last_step, ..."""
        return _frame(self._get("/api/runs", {"project": project, "limit": limit}), self.as_frame)

    def run(self, run: str) -> dict[str, Any]:
        """One run in full: parameters, config, and each arm's state and probability now."""
        doc: dict[str, Any] = self._get(self._run_path(run))
        return doc

    def series(self, run: str, metric: str = "probability", arms: Sequence[str] | None = None,
               start: int | None = None, end: int | None = None, max_points: int = 100_000) -> Any:
        """Per-arm values of one metric (`probability`, `accuracy`, `mean_abs_adv`, `score`, ...) over
        steps, long format: one row per (arm, step). Long runs come downsampled (each bucket's min and
        max kept) beyond `max_points` per arm."""
        doc = self._get(self._run_path(run) + "/series", {
            "metric": metric, "arms": ",".join(arms) if arms else None, "start": start, "end": end,
            "max_points": max_points,
        })
        rows = [{"arm": s["arm"], "step": step, metric: value}
                for s in doc["series"] for step, value in zip(s["steps"], s["values"], strict=True)]
        return _frame(rows, self.as_frame, ["arm", "step", metric])

    def metrics(self, run: str, start: int | None = None, end: int | None = None, limit: int = 100_000) -> Any:
        """The trainer metrics of each step (loss, KL, ...): one row per step, one column per metric."""
        doc = self._get(self._run_path(run) + "/steps", {"start": start, "end": end, "limit": limit})
        return _frame([{"step": s["step"], "ts": s["ts"], **s["metrics"]} for s in doc], self.as_frame, ["step", "ts"])

    def evals(self, run: str, name: str | None = None) -> Any:
        """Evaluations (`agent.log_eval`): one row per (name, step, arm) with accuracy, correct, total."""
        doc = self._get(self._run_path(run) + "/evals", {"name": name})
        return _frame(doc["evals"], self.as_frame, _EVAL_COLUMNS)

    def warm_start(self, run: str, steps: int = 20) -> WarmStart:
        """The run's per-arm statistics (completions so far; completions, accuracy and mean |A| over its
        last `steps` steps), for a new run's `CurriculumAgent(..., warm_start=...)`."""
        doc = self._get(self._run_path(run) + "/warm-start", {"steps": steps})
        arms = doc["arms"]

        def by_arm(key: str) -> dict[str, Any]:
            return {a["arm"]: a[key] for a in arms}

        return WarmStart(doc["run"], by_arm("n_total"), by_arm("n_recent"), by_arm("accuracy"),
                         by_arm("mean_abs_adv"))

    def replay_schedule(self, run: str, every: int = 1) -> dict[str, Any]:
        """The run's probabilities step by step (its arms CSV export), as the `schedule` of a `replay`
        scheduler: `CurriculumAgent(..., scheduler="replay", scheduler_params={"schedule": ...})`; `every`:
        keep every k-th step (and the last)."""
        text = self._fetch(self._run_path(run) + "/export.csv", {"what": "arms"}, "text/csv").decode("utf-8")
        return schedule_from_export(text.splitlines(), f"run {run!r}", every)

    def commands(self, run: str, limit: int = 10_000) -> Any:
        """The audit log: every command with its actor, reason, status and applied step, newest first."""
        return _frame(self._get(self._run_path(run) + "/commands", {"limit": limit}), self.as_frame, _COMMAND_COLUMNS)
