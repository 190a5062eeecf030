"""`agent.log_eval`: evaluations per arm, validated, sent as an `eval` message."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import redis

from tests.conftest import REDIS_URL
from trainer_agent import ConfigError, CurriculumAgent


def test_results_in_every_form_become_accuracies() -> None:
    agent = CurriculumAgent("ev", ["a", "b", "c"], redis_url=None)
    got = agent.log_eval({"a": 0.75, "b": (3, 4), "c": {"correct": 1, "total": 8}, "ood": np.float32(0.5)})
    assert got == {"a": 0.75, "b": 0.75, "c": 0.125, "ood": 0.5}


@pytest.mark.parametrize(
    ("results", "kw", "message"),
    [
        ({"a": 1.5}, {}, r"evaluation of 'a': accuracy must be a number in \[0, 1\], got 1.5"),
        ({"a": float("nan")}, {}, "accuracy must be a number"),
        ({"a": "0.5"}, {}, "accuracy must be a number"),
        ({"a": (5, 4)}, {}, r"correct must be a number in \[0, total\], got 5"),
        ({"a": (1, 0)}, {}, "total: expected an integer >= 1, got 0"),
        ({"a": (1, 2, 3)}, {}, r"expected \(correct, total\)"),
        ({"a": 0.5}, {"n": 0}, "n: expected an integer >= 1, got 0"),
        ({}, {}, "non-empty mapping"),
        ({"a\nb": 0.5}, {}, "arm name 'a\\\\nb' contains the control"),
        ({"a": 0.5}, {"name": ""}, "evaluation name must not be empty"),
        ({"a": 0.5}, {"name": "x" * 65}, "at most 64 characters"),
        ({"a": 0.5}, {"step": -1}, r"step must be an integer in \[0, "),
    ],
)
def test_bad_results_are_config_errors(results: dict[str, object], kw: dict[str, object], message: str) -> None:
    agent = CurriculumAgent("ev", ["a"], redis_url=None)
    with pytest.raises(ConfigError, match=message):
        agent.log_eval(results, **kw)  # type: ignore[arg-type]


def test_an_eval_is_streamed_at_the_steps_completed(key_prefix: str, tmp_path) -> None:
    with CurriculumAgent("ev-stream", ["a", "b"], redis_url=REDIS_URL, key_prefix=key_prefix,
                         spool_dir=tmp_path) as agent:
        agent.log_eval({"a": 0.2, "b": 0.1}, n=50, name="heldout")  # the baseline, before training
        for _ in range(3):
            agent.observe(["a", "b"], [1.0, 0.0], groups=[0, 1])
            agent.end_step()
        agent.log_eval({"a": (40, 50), "b": (5, 50)}, name="heldout")
        agent.log_eval({"a": 0.5}, name="ood", step=2)
    r = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + 5
    evals: list[dict[str, object]] = []
    while time.monotonic() < deadline and len(evals) < 3:
        evals = [d for _, f in r.xrange(f"{key_prefix}ingest") if (d := json.loads(f[b"m"]))["type"] == "eval"]
        time.sleep(0.05)
    r.close()
    assert [(e["name"], e["step"], e["arms"]) for e in evals] == [
        ("heldout", 0, [{"arm": "a", "accuracy": 0.2, "correct": 10.0, "total": 50},
                        {"arm": "b", "accuracy": 0.1, "correct": 5.0, "total": 50}]),
        ("heldout", 3, [{"arm": "a", "accuracy": 0.8, "correct": 40.0, "total": 50},
                        {"arm": "b", "accuracy": 0.1, "correct": 5.0, "total": 50}]),
        ("ood", 2, [{"arm": "a", "accuracy": 0.5, "correct": None, "total": None}]),
    ]
