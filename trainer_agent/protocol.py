"""Wire protocol v1: the one owner of what the agent and the server must agree on (docs/wire.md).

Pure: no network, no numpy, no pydantic. The transport encodes with it, the server's validation
(`server.wire`), settings and live relay import it, so a rule written here holds on both sides:

- the version and the message types of the ingest stream;
- the command kinds of the control stream (on arms, and on the scheduler);
- the Redis key layout, with the run name as a Redis Cluster hash tag (`{run}`);
- the run-, arm- and evaluation-name rules;
- the fields of the per-arm record of a `step` message;
- the encoders of every message the agent sends and of the commands the server sends.
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

WIRE_VERSION: Final = 1

MessageType = Literal["run_start", "step", "command_ack", "heartbeat", "run_end", "eval", "scheduler"]
MESSAGE_TYPES: Final[tuple[str, ...]] = get_args(MessageType)

ArmCommandKind = Literal["pin", "boost", "retire", "restore", "release"]
ARM_COMMAND_KINDS: Final[tuple[str, ...]] = get_args(ArmCommandKind)
# Commands on the scheduler itself (docs/formulas.md, "Scheduler commands"): no arm, no value.
SchedulerCommandKind = Literal["set_params", "switch", "freeze", "unfreeze"]
SCHEDULER_COMMAND_KINDS: Final[tuple[str, ...]] = get_args(SchedulerCommandKind)
CommandKind = Literal[ArmCommandKind, SchedulerCommandKind]
COMMAND_KINDS: Final[tuple[str, ...]] = ARM_COMMAND_KINDS + SCHEDULER_COMMAND_KINDS

RunEndStatus = Literal["finished", "failed", "interrupted"]
RUN_END_STATUSES: Final[tuple[str, ...]] = get_args(RunEndStatus)

AckStatus = Literal["applied", "rejected"]

# The per-arm record of a `step` message, in wire order. `arm`, `p`, `n_step`, `n_total` are always
# present; the statistics are null for arms not observed during the step. `n_groups` and `zero_var`
# are null unless the trainer gave group (or prompt) ids; `pass_hist` is null unless it gave prompt ids.
ARM_RECORD_FIELDS: Final[tuple[str, ...]] = (
    "arm", "p", "n_step", "n_total", "score", "parts", "mean_abs_adv", "mean_reward", "accuracy",
    "state", "pin", "boost", "n_groups", "zero_var", "pass_hist",
)
# `pass_hist`: the arm's distinct prompts seen in the agent's prompt window, counted by pass rate in
# these bins (never solved, (0, 1/3), [1/3, 2/3), [2/3, 1), always solved).
PASS_HIST_BINS: Final[tuple[str, ...]] = ("never", "low", "mid", "high", "always")
ArmState = Literal["active", "retired"]

# Names: a run name is part of every per-run Redis key and of URLs; an arm name is shown everywhere.
NAME_MAX_CHARS: Final = 200
# The step number is a 32-bit SQL integer on the server.
MAX_STEP: Final = 2**31 - 1


def _name_problem(name: object, what: str) -> str | None:
    if not isinstance(name, str):
        return f"{what} name must be a string, got {type(name).__name__}"
    return _str_name_problem(name, what)


# Names repeat (every step names every arm): the checks are cached, so checking a record is a lookup.
@functools.lru_cache(maxsize=8192)
def _str_name_problem(name: str, what: str) -> str | None:
    if not name.strip():
        return f"{what} name must not be empty or blank"
    if len(name) > NAME_MAX_CHARS:
        return f"{what} name is {len(name)} characters long; at most {NAME_MAX_CHARS} are allowed"
    # Control characters (NUL, newline, escape...): PostgreSQL text cannot hold NUL, and a newline
    # in a name forges log lines and breaks CSV rows.
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if bad is not None:
        return f"{what} name {name!r} contains the control or unassigned character U+{ord(bad):04X}"
    if what == "run" and ("{" in name or "}" in name):
        return f"run name {name!r} may not contain '{{' or '}}' (it is the Redis hash tag of the run's keys)"
    return None


def run_name_problem(name: object) -> str | None:
    """Why `name` cannot be a run name, or None when it can.

    1 to 200 characters, not blank, no control characters, no `{` or `}` (a run name is the Redis
    Cluster hash tag of the run's keys: a brace would cut the tag short).
    """
    return _name_problem(name, "run")


def arm_name_problem(name: object) -> str | None:
    """Why `name` cannot be an arm name, or None: 1 to 200 characters, not blank, no control characters."""
    return _name_problem(name, "arm")


# Redis Cluster: a URL of one of these schemes names any node of a cluster (redis-py's RedisCluster finds the
# others). Every run's keys share a slot through their hash tag (Keys), so one run's commands never span nodes.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def redis_cluster_url(url: str) -> str | None:
    """For a Redis Cluster URL (`redis+cluster://host:port/0`), the same URL with the plain scheme redis-py
    reads; None for a single Redis (`redis://`, `rediss://`, `unix://`)."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return f"{plain}://{rest}" if plain else None


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis key layout under one prefix (default `steerboard:`).

    Per-run keys carry the run name as a hash tag, `{prefix}{<run>}:...`, so that every key of a run
    lands on one Redis Cluster slot.
    """

    prefix: str = "steerboard:"

    @property
    def ingest(self) -> str:
        """The ingest stream every agent appends to."""
        return f"{self.prefix}ingest"

    @property
    def dead(self) -> str:
        """The dead-letter stream of entries the ingest workers refused."""
        return f"{self.prefix}ingest:dead"

    @property
    def dead_count(self) -> str:
        """A counter of every entry ever dead-lettered."""
        return f"{self.prefix}ingest:dead:count"

    def control(self, run: str) -> str:
        """The run's control stream: commands from the server."""
        return f"{self.prefix}{{{run}}}:control"

    def control_applied(self, run: str) -> str:
        """The control-stream id of the last command the run's agent acknowledged."""
        return f"{self.prefix}{{{run}}}:control:applied"

    def live(self, run: str) -> str:
        """The run's pub/sub channel of committed changes."""
        return f"{self.prefix}{{{run}}}:live"

    @property
    def live_pattern(self) -> str:
        """A PSUBSCRIBE pattern matching every run's live channel."""
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in self.prefix)
        return escaped + "{*}:live"

    def run_of_live(self, channel: str) -> str | None:
        """The run a live channel belongs to, or None when it is not one."""
        head, tail = f"{self.prefix}{{", "}:live"
        if channel.startswith(head) and channel.endswith(tail) and len(channel) > len(head) + len(tail):
            return channel[len(head) : -len(tail)]
        return None


# -- encoders ---------------------------------------------------------------------------------------
def encode(doc: Mapping[str, Any]) -> str:
    """A wire document as compact JSON; NaN and infinities are refused (they are not JSON)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def envelope(msg: Mapping[str, Any], run: str, seq: int, ts: float) -> dict[str, Any]:
    """`msg` with the fields every ingest message carries: `v`, `run`, `seq`, `ts`."""
    return {**msg, "v": WIRE_VERSION, "run": run, "seq": seq, "ts": ts}


def run_start_message(*, project: str, scheduler: str, params: Mapping[str, Any], config: Mapping[str, Any],
                      arms: list[dict[str, Any]], host: str, pid: int) -> dict[str, Any]:
    return {"type": "run_start", "project": project, "scheduler": scheduler, "params": dict(params),
            "config": dict(config), "arms": arms, "host": host, "pid": pid}


def step_message(step: int, metrics: Mapping[str, float], dropped: int, arms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "step", "step": step, "metrics": dict(metrics), "dropped": dropped, "arms": arms}


def command_ack_message(command_id: str, status: AckStatus, applied_step: int | None, message: str) -> dict[str, Any]:
    return {"type": "command_ack", "id": command_id, "status": status, "applied_step": applied_step,
            "message": message}


# An evaluation's name ("heldout", "aime24"...) follows the arm-name rules, shorter.
EVAL_NAME_MAX_CHARS: Final = 64


def eval_name_problem(name: object) -> str | None:
    """Why `name` cannot name an evaluation set, or None: the arm-name rules, at most 64 characters."""
    if isinstance(name, str) and len(name) > EVAL_NAME_MAX_CHARS:
        return f"an evaluation name has at most {EVAL_NAME_MAX_CHARS} characters, got {len(name)}"
    problem = arm_name_problem(name)
    return None if problem is None else problem.replace("arm name", "evaluation name")


def eval_message(name: str, step: int, arms: list[dict[str, Any]]) -> dict[str, Any]:
    """One evaluation: per arm `{"arm", "accuracy", "correct", "total"}` (counts null when unknown)."""
    return {"type": "eval", "name": name, "step": step, "arms": arms}


def scheduler_message(step: int, name: str, params: Mapping[str, Any], frozen: bool,
                      state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The scheduler in force after `step` (`SchedulerControl.snapshot`): its name, parameters, whether
    it is frozen, and its whole state (`SchedulerControl.state_dict()`, null when too large to send),
    from which the server previews scheduler commands."""
    return {"type": "scheduler", "step": step, "name": name, "params": dict(params), "frozen": frozen,
            "state": None if state is None else dict(state)}


def heartbeat_message(step: int) -> dict[str, Any]:
    return {"type": "heartbeat", "step": step}


def run_end_message(status: RunEndStatus, step: int) -> dict[str, Any]:
    return {"type": "run_end", "status": status, "step": step}


def command_document(*, id: str, kind: CommandKind, arm: str, value: float | None, steps: int | None,
                     actor: str, reason: str, ts: float, scheduler: str | None = None,
                     params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A command on a run's control stream (field `m`), as the server sends it. A scheduler command has
    `arm` "" and, for `switch`, the `scheduler` to switch to; `params` for `set_params` and `switch`."""
    return {"v": WIRE_VERSION, "id": id, "kind": kind, "arm": arm, "value": value, "steps": steps,
            "scheduler": scheduler, "params": None if params is None else dict(params),
            "actor": actor, "reason": reason, "ts": ts}
