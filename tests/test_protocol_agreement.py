"""The agent and the server agree: on names (one table per kind of name, both sides) and on commands (a property test).

The server decides a command by replaying the run's reported overrides and its pending commands onto
the agent's own `Overrides` (server.steering.decide). Here a real agent runs beside that decision:
every command posted is also delivered to the agent, in order, and the server's answer (202 vs
409/422) must be the agent's (applied vs rejected) whatever the sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from server.errors import CommandConflict, InvalidCommand
from server.schemas import CommandIn
from server.steering import decide
from server.store.commands import ArmView, PendingCommand, SteeringView
from server.store.scheduler import SchedulerHead
from server.wire import INGEST_ADAPTER
from trainer_agent import CurriculumAgent, StepStats
from trainer_agent.errors import ConfigError
from trainer_agent.overrides import Command
from trainer_agent.protocol import (
    EVAL_NAME_MAX_CHARS,
    NAME_MAX_CHARS,
    arm_name_problem,
    eval_name_problem,
    run_name_problem,
)

# (name, valid as a run name, valid as an arm name)
NAMES: list[tuple[str, bool, bool]] = [
    ("kk-dump-0", True, True),
    ("qwen2.5-7b/kk-dump seed=3", True, True),  # slashes, spaces, '=' are fine
    ("ünïcødé-名前-🚀", True, True),
    ("x" * NAME_MAX_CHARS, True, True),
    ("x" * (NAME_MAX_CHARS + 1), False, False),
    ("", False, False),
    ("   ", False, False),
    ("a{b", False, True),  # braces would cut a run's Redis hash tag short; an arm is no key
    ("a}b", False, True),
    ("{run}", False, True),
    ("nul\x00byte", False, False),
    ("new\nline", False, False),
    ("tab\there", False, False),
    ("esc\x1b[31m", False, False),
    ("zero\u200bwidth", False, False),
    ("del\x7f", False, False),
]


def _server_accepts_run(name: str) -> bool:
    try:
        INGEST_ADAPTER.validate_python({"v": 1, "type": "heartbeat", "run": name, "seq": 1, "ts": 0.0, "step": 0})
    except ValidationError:
        return False
    return True


def _server_accepts_arm(name: str) -> bool:
    record = {"arm": name, "p": 1.0, "n_step": 0, "n_total": 0}
    try:
        INGEST_ADAPTER.validate_python(
            {"v": 1, "type": "step", "run": "r", "seq": 1, "ts": 0.0, "step": 0, "arms": [record]}
        )
    except ValidationError:
        return False
    return True


def _agent_accepts(run: str, arms: list[str]) -> bool:
    try:
        CurriculumAgent(run, arms, redis_url=None).close()
    except ConfigError:
        return False
    return True


@pytest.mark.parametrize(("name", "run_ok", "arm_ok"), NAMES, ids=[repr(n[0])[:30] for n in NAMES])
def test_names_are_accepted_or_refused_alike_on_both_sides(name: str, run_ok: bool, arm_ok: bool) -> None:
    assert (run_name_problem(name) is None) is run_ok
    assert (arm_name_problem(name) is None) is arm_ok
    assert _agent_accepts(name, ["a"]) is run_ok
    assert _server_accepts_run(name) is run_ok
    assert _agent_accepts("r", [name]) is arm_ok
    assert _server_accepts_arm(name) is arm_ok


# (name, valid as an evaluation name): the arm-name rules, at most EVAL_NAME_MAX_CHARS characters.
EVAL_NAMES: list[tuple[str, bool]] = [
    ("greedy", True),
    ("aime24 / pass@1", True),
    ("a{b}", True),
    ("x" * EVAL_NAME_MAX_CHARS, True),
    ("x" * (EVAL_NAME_MAX_CHARS + 1), False),
    ("", False),
    ("  ", False),
    ("new\nline", False),
    ("zero\u200bwidth", False),
]


def _agent_accepts_eval(name: str) -> bool:
    agent = CurriculumAgent("r", ["a"], redis_url=None)
    try:
        agent.log_eval({"a": 0.5}, name=name)
    except ConfigError:
        return False
    finally:
        agent.close()
    return True


def _server_accepts_eval(name: str) -> bool:
    doc = {"v": 1, "type": "eval", "run": "r", "seq": 1, "ts": 0.0, "name": name, "step": 0,
           "arms": [{"arm": "a", "accuracy": 0.5, "correct": None, "total": None}]}
    try:
        INGEST_ADAPTER.validate_python(doc)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("name", "ok"), EVAL_NAMES, ids=[repr(n[0])[:30] for n in EVAL_NAMES])
def test_eval_names_are_accepted_or_refused_alike_on_both_sides(name: str, ok: bool) -> None:
    assert (eval_name_problem(name) is None) is ok
    assert _agent_accepts_eval(name) is ok
    assert _server_accepts_eval(name) is ok


ARMS = ["a", "b", "c"]
KINDS = ["pin", "boost", "retire", "restore", "release"]
INVALID_VALUES = [1.5, -1.0, math.inf, math.nan]
# Mostly well-formed commands (so that sequences reach interesting states), now and then a malformed one.
VALUES = {
    "pin": st.sampled_from([0.0, 0.2, 0.5, 0.5, 1.0]) | st.sampled_from([None, *INVALID_VALUES]),
    "boost": st.sampled_from([0.5, 2.0, 3.0]) | st.sampled_from([None, 0.0, *INVALID_VALUES]),
}
STEPS = {"boost": st.sampled_from([None, 1, 3]) | st.just(0)}


@st.composite
def post(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(KINDS))
    arm = draw(st.sampled_from(ARMS) | st.just("zz"))
    value = draw(VALUES.get(kind, st.none() | st.just(0.5)))
    steps = draw(STEPS.get(kind, st.none() | st.just(2)))
    return ("post", kind, arm, value, steps)


actions = st.lists(st.one_of(post(), post(), st.just(("step",))), min_size=1, max_size=40)


class Server:
    """What the server knows of a run: the overrides the agent last reported, and pending commands."""

    def __init__(self) -> None:
        self.arms = [ArmView(a, "active", None, None) for a in ARMS]
        self.pending: list[PendingCommand] = []
        self.n = 0
        # As run_start reports it, before the agent's first scheduler snapshot.
        self.scheduler = SchedulerHead("dump", {"window": 300, "c": 1.0, "temperature": 0.1}, False, -1)

    def post(self, kind: str, arm: str | None, value: float | None, steps: int | None,
             scheduler: str | None = None, params: dict[str, Any] | None = None) -> tuple[int, str]:
        self.n += 1
        cid = f"c{self.n}"
        try:
            cmd = CommandIn(kind=kind, arm=arm, value=value, steps=steps,  # type: ignore[arg-type]
                            scheduler=scheduler, params=params)
            decide(SteeringView(1, "prop", "running", self.arms, self.pending, self.scheduler), cmd)
        except ValidationError:
            return 422, cid
        except InvalidCommand:
            return 422, cid
        except CommandConflict:
            return 409, cid
        self.pending.append(PendingCommand(cid, kind, arm or "", value, steps, scheduler, params))
        return 202, cid

    def reported(self, records: list[dict[str, Any]], head: dict[str, Any] | None = None) -> None:
        self.arms = [ArmView(r["arm"], r["state"], r["pin"], r["boost"]) for r in records]
        self.pending = []
        if head is not None:  # the agent's scheduler snapshot (name, params, frozen)
            self.scheduler = SchedulerHead(head["name"], head["params"], head["frozen"], 0)


def check_step(stats: StepStats, server: Server, answers: dict[str, int], what: dict[str, tuple[Any, ...]],
               seq: list[tuple[Any, ...]], head: dict[str, Any] | None = None) -> None:
    """A step the agent ended agrees with the server: one ack per command posted since the last step,
    applied where the server answered 202 and rejected where it refused; then the server takes the step's
    records (and the agent's scheduler `head`) as reported, and `answers` starts over."""
    for ack in stats.acks:
        expected = "applied" if answers[ack.id] == 202 else "rejected"
        assert ack.status == expected, (what[ack.id], answers[ack.id], ack.message, seq)
    assert len(stats.acks) == len(answers)
    answers.clear()
    server.reported(stats.records(), head)
    # The invariants the rules exist for.
    p = stats.p
    assert abs(float(p.sum()) - 1.0) < 1e-9 and (p >= 0).all()


def replay(seq: list[tuple[Any, ...]], observe: Callable[[CurriculumAgent], None] | None = None) -> None:
    """Plays `seq` on the server and on a DUMP agent: each command posted to the server is also delivered to
    the agent; each "step", and the end, is checked by check_step. With `observe`, the agent observes
    through it before each step, and the server takes the agent's scheduler head with the records."""
    server = Server()
    agent = CurriculumAgent("prop", ARMS, scheduler="dump", redis_url=None)
    answers: dict[str, int] = {}
    what: dict[str, tuple[Any, ...]] = {}

    def step() -> None:
        if observe is None:
            check_step(agent.end_step(), server, answers, what, seq)
        else:
            observe(agent)
            check_step(agent.end_step(), server, answers, what, seq, agent._control.head())

    for action in seq:
        if action[0] == "step":
            step()
            continue
        if action[0] == "sched":
            _, kind, arm, scheduler, params = action
            status, cid = server.post(kind, arm, None, None, scheduler, params)
            cmd = Command(kind, arm or "", None, None, id=cid, scheduler=scheduler, params=params)
        else:
            _, kind, arm, value, steps = action
            status, cid = server.post(kind, arm, value, steps)
            cmd = Command(kind, arm, value, steps, id=cid)
        answers[cid], what[cid] = status, action
        # The transport delivers what the server sent; here every command is delivered, accepted or
        # not, so a command the server refused must be one the agent refuses too.
        agent._local_commands.append(cmd)
    step()
    agent.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_server_answers_what_the_agent_does(seq: list[tuple[Any, ...]]) -> None:
    replay(seq)


def test_every_active_arm_pinned_to_zero_is_refused_on_both_sides() -> None:
    server = Server()
    assert server.post("pin", "a", 0.0, None)[0] == 202
    assert server.post("pin", "b", 0.0, None)[0] == 202
    status, _ = server.post("pin", "c", 0.0, None)
    assert status == 409
    agent = CurriculumAgent("zero", ARMS, redis_url=None)
    for arm in ARMS:
        agent.pin(arm, 0.0)
    acks = agent.end_step().acks
    assert [a.status for a in acks] == ["applied", "applied", "rejected"]
    assert "every active arm would be pinned to 0" in acks[2].message
    # Retiring the one arm left unpinned-at-0 is refused alike.
    server = Server()
    server.post("pin", "a", 0.0, None)
    server.post("pin", "b", 0.0, None)
    assert server.post("retire", "c", None, None)[0] == 409


def test_no_op_commands_get_one_answer_everywhere() -> None:
    server = Server()
    agent = CurriculumAgent("noop", ARMS, redis_url=None)
    assert server.post("restore", "a", None, None)[0] == 409
    agent.restore("a")
    assert server.post("retire", "a", None, None)[0] == 202
    agent.retire("a")
    assert server.post("retire", "a", None, None)[0] == 409  # pending retire counts
    agent.retire("a")
    acks = agent.end_step().acks
    assert [(a.status, a.message) for a in acks] == [
        ("rejected", "arm 'a' is not retired; there is nothing to restore"),
        ("applied", "retired a"),
        ("rejected", "arm 'a' is already retired"),
    ]


def test_the_per_arm_record_has_one_spelling() -> None:
    from server.wire import ArmRecord
    from trainer_agent.protocol import ARM_RECORD_FIELDS

    assert tuple(ArmRecord.__annotations__) == ARM_RECORD_FIELDS
    agent = CurriculumAgent("fields", ARMS, scheduler="dump", redis_url=None)
    agent.observe(["a", "a"], [1.0, 0.0], groups=[0, 0])
    records = agent.end_step().records()
    assert [tuple(r) for r in records] == [ARM_RECORD_FIELDS] * len(ARMS)
    # What the agent sends, the server accepts as it is.
    INGEST_ADAPTER.validate_python(
        {"v": 1, "type": "step", "run": "fields", "seq": 1, "ts": 0.0, "step": 0, "arms": records}
    )


# Scheduler commands, mixed with arm commands: mostly valid ones, now and then an unknown parameter, a
# value out of range or of the wrong type, an unknown scheduler, a freeze twice, a no-op set_params.
SCHED_PARAMS = st.sampled_from([
    {"temperature": 0.5}, {"temperature": 0.1}, {"c": 2.0}, {"window": 5}, {"alpha": 0.3}, {"beta": 0.2},
    {"temperature": 0.0}, {"temperature": -1.0}, {"window": 0}, {"window": 2.5}, {"tau": 1.0}, {"eps": 0.5},
    {"decay_absent": True}, {"c": "x"}, {},
])


@st.composite
def scheduler_post(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["set_params", "switch", "freeze", "unfreeze"]))
    target = draw(st.sampled_from(["dump", "sec", "balanced", "learning_progress", "uniform", "dmup"]))
    params = draw(SCHED_PARAMS | st.none())
    arm = draw(st.just(None) | st.just(None) | st.just("a"))
    return ("sched", kind, arm, target if kind == "switch" else draw(st.none() | st.just("sec")), params)


sched_actions = st.lists(st.one_of(scheduler_post(), scheduler_post(), post(), st.just(("step",))),
                         min_size=1, max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sched_actions)
def test_server_answers_scheduler_commands_as_the_agent_does(seq: list[tuple[Any, ...]]) -> None:
    rng = __import__("numpy").random.default_rng(0)

    def observe(agent: CurriculumAgent) -> None:
        arms = [a for a in ARMS for _ in range(4)]
        agent.observe(arms, (rng.random(len(arms)) < 0.5).astype(float), groups=[i // 2 for i in range(len(arms))])

    replay(seq, observe)
