"""The agent's transport against real Redis: streaming, commands, spool and replay, faults."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import redis

from tests.conftest import REDIS_URL, RedisProcess
from trainer_agent import CurriculumAgent

ARMS = [f"arm{i:02d}" for i in range(8)]


def messages(r: redis.Redis, prefix: str) -> list[dict]:
    return [json.loads(f[b"m"]) for _id, f in r.xrange(f"{prefix}ingest")]


def step_once(agent: CurriculumAgent, rng: np.random.Generator, prompts: int = 16, g: int = 4) -> float:
    """One training step's agent calls; returns the seconds they took on the training thread."""
    t0 = time.perf_counter()
    arms = agent.sample(prompts)
    comp = [a for a in arms for _ in range(g)]
    agent.observe(comp, rng.random(len(comp)) < 0.5, groups=np.repeat(np.arange(prompts), g))
    agent.end_step(metrics={"loss": 1.0})
    return time.perf_counter() - t0


def post_command(r: redis.Redis, prefix: str, run: str, **cmd: object) -> str:
    cid = str(uuid.uuid4())
    doc = {"v": 1, "id": cid, "actor": "test", "reason": "", "ts": time.time(), **cmd}
    r.xadd(f"{prefix}{{{run}}}:control", {"m": json.dumps(doc)})
    return cid


def wait_for(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_stream_carries_run_start_steps_acks_and_run_end(key_prefix, tmp_path):
    r = redis.Redis.from_url(REDIS_URL)
    rng = np.random.default_rng(0)
    with CurriculumAgent("t-stream", {"a": {"level": 1}, "b": {}}, scheduler="dump", redis_url=REDIS_URL,
                         key_prefix=key_prefix, spool_dir=tmp_path, config={"lr": 1e-5}) as agent:
        for _ in range(3):
            step_once(agent, rng)
        cid = post_command(r, key_prefix, "t-stream", kind="pin", arm="a", value=0.8)
        wait_for(lambda: len(agent._transport._commands) == 1)
        stats = agent.end_step()
        assert [(a.id, a.status, a.applied_step) for a in stats.acks] == [(cid, "applied", 3)]
        assert agent.probabilities()["a"] == 0.8
    msgs = messages(r, key_prefix)
    # Scheduler snapshots (for the preview) go with the first step and then on a clock: not counted here.
    types = [m["type"] for m in msgs if m["type"] not in ("heartbeat", "scheduler")]
    assert types == ["run_start", "step", "step", "step", "command_ack", "step", "run_end"]
    sent = [m for m in msgs if m["type"] != "heartbeat"]
    assert [m["type"] for m in sent[:3]] == ["run_start", "step", "scheduler"] and sent[2]["name"] == "dump"
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    start = msgs[0]
    assert start["arms"] == [{"name": "a", "metadata": {"level": 1}}, {"name": "b", "metadata": {}}]
    assert start["scheduler"] == "dump" and start["params"]["temperature"] == 0.1 and start["config"] == {"lr": 1e-5}
    steps = [m for m in msgs if m["type"] == "step"]
    assert [m["step"] for m in steps] == [0, 1, 2, 3]
    last = {rec["arm"]: rec for rec in steps[-1]["arms"]}
    assert last["a"]["p"] == 0.8 and last["a"]["pin"] == 0.8 and steps[-1]["metrics"] == {}
    assert steps[0]["metrics"] == {"loss": 1.0} and steps[0]["dropped"] == 0
    ack = next(m for m in msgs if m["type"] == "command_ack")
    assert ack == {**ack, "id": cid, "status": "applied", "applied_step": 3}
    assert msgs[-1]["status"] == "finished" and msgs[-1]["step"] == 3
    r.close()


def test_rejected_command_is_acked_with_reason(key_prefix, tmp_path):
    r = redis.Redis.from_url(REDIS_URL)
    with CurriculumAgent("t-reject", ["a"], redis_url=REDIS_URL, key_prefix=key_prefix, spool_dir=tmp_path) as agent:
        cid = post_command(r, key_prefix, "t-reject", kind="retire", arm="a")
        bad = post_command(r, key_prefix, "t-reject", kind="pin", arm="zzz", value=0.5)
        wait_for(lambda: len(agent._transport._commands) == 2)
        agent.end_step()
    acks = {m["id"]: m for m in messages(r, key_prefix) if m["type"] == "command_ack"}
    assert acks[cid]["status"] == "rejected" and "last active arm" in acks[cid]["message"]
    assert acks[bad]["status"] == "rejected" and "this run has no arm 'zzz'; its arms are: a" in acks[bad]["message"]
    assert acks[cid]["applied_step"] is None
    r.close()


def test_command_posted_while_agent_away_is_applied_exactly_once(key_prefix, tmp_path):
    r = redis.Redis.from_url(REDIS_URL)
    run = "t-away"
    rng = np.random.default_rng(1)
    kw = dict(redis_url=REDIS_URL, key_prefix=key_prefix, spool_dir=tmp_path, scheduler="uniform")
    with CurriculumAgent(run, ARMS, **kw) as first:
        step_once(first, rng)
        c1 = post_command(r, key_prefix, run, kind="boost", arm="arm01", value=2.0)
        wait_for(lambda: len(first._transport._commands) == 1)
        step_once(first, rng)
    # The trainer is gone; an operator posts a command meanwhile.
    c2 = post_command(r, key_prefix, run, kind="retire", arm="arm03")
    for _ in range(2):  # comes back, twice (a second restart must not re-apply anything)
        with CurriculumAgent(run, ARMS, **kw) as again:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and again.probabilities()["arm03"] != 0.0:
                step_once(again, rng)
                time.sleep(0.02)
            assert again.probabilities()["arm03"] == 0.0
            for _ in range(3):
                step_once(again, rng)
                time.sleep(0.05)
    acks = [m for m in messages(r, key_prefix) if m["type"] == "command_ack"]
    assert sorted(a["id"] for a in acks) == sorted([c1, c2])
    r.close()


def test_redis_down_for_10s_training_never_blocks_and_every_step_arrives_in_order(private_redis: RedisProcess,
                                                                                   tmp_path):
    prefix = "fault:"
    rng = np.random.default_rng(2)
    agent = CurriculumAgent("t-down", [f"arm{i:02d}" for i in range(64)], scheduler="dump",
                            redis_url=private_redis.url, key_prefix=prefix, spool_dir=tmp_path / "spool",
                            heartbeat_s=0.5)
    durations = {"before": [], "down": [], "after": []}
    period = 0.02  # a 50 Hz training loop

    def train(phase: str, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            durations[phase].append(step_once(agent, rng, prompts=64, g=8))
            time.sleep(period)

    train("before", 1.0)
    private_redis.stop()
    train("down", 10.0)
    assert agent._transport.connected is False and len(agent._transport.spool) > 0
    private_redis.start()
    train("after", 2.0)
    agent.close()
    n_steps = agent.step
    # Never blocks: any call the training thread made to the unreachable Redis would cost the transport's
    # 1 s connect timeout, so no step comes near 100 ms; and steps stay fast through the outage (p99 under
    # 10 ms in every phase). The worst step alone measures this shared machine too: once, in CI, a step
    # took 25 ms in the phase *before* Redis was stopped.
    ms = {k: 1000 * np.asarray(v) for k, v in durations.items()}
    figures = {k: (round(float(np.median(v)), 2), round(float(np.percentile(v, 99)), 2), round(float(v.max()), 2))
               for k, v in ms.items()}  # (median, p99, worst)
    logging.getLogger(__name__).info("training-thread ms per step (median, p99, worst): %s", figures)
    assert all(p99 < 10.0 and worst < 100.0 for _, p99, worst in figures.values()), figures
    r = redis.Redis.from_url(private_redis.url)
    msgs = messages(r, prefix)
    steps = [m["step"] for m in msgs if m["type"] == "step"]
    assert steps == list(range(n_steps))
    seqs = [m["seq"] for m in msgs]
    assert seqs == sorted(seqs)
    assert all(m["dropped"] == 0 for m in msgs if m["type"] == "step")
    assert msgs[-1]["type"] == "run_end"
    assert len(agent._transport.spool) == 0
    r.close()


def test_close_never_hangs_when_redis_hangs(private_redis: RedisProcess, tmp_path):
    agent = CurriculumAgent("t-hang", ["a", "b"], redis_url=private_redis.url, key_prefix="hang:",
                            spool_dir=tmp_path, close_timeout=1.0)
    rng = np.random.default_rng(3)
    step_once(agent, rng)
    time.sleep(0.2)
    private_redis.pause()
    t0 = time.monotonic()
    for _ in range(20):
        assert step_once(agent, rng) < 0.01
    agent.close()
    assert time.monotonic() - t0 < 2.0


def test_spool_left_at_exit_is_replayed_by_the_next_process(private_redis: RedisProcess, tmp_path):
    spool = tmp_path / "spool"
    script = textwrap.dedent(f"""
        import numpy as np
        from trainer_agent import CurriculumAgent
        a = CurriculumAgent("t-replay", ["a", "b"], redis_url={private_redis.url!r}, key_prefix="rp:",
                            spool_dir={str(spool)!r}, close_timeout=2.0)
        for _ in range(5):
            a.observe(a.sample(4), [1, 0, 1, 0], groups=[0, 0, 1, 1])
            a.end_step()
        # no close(): the exit hook must flush (here: to the spool, Redis is down)
    """)
    private_redis.stop()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    pending = [json.loads(line) for line in (spool / "pending.jsonl").read_text().splitlines()]
    assert [m["type"] for m in pending if m["type"] not in ("heartbeat", "scheduler")] == (
        ["run_start"] + ["step"] * 5 + ["run_end"])
    private_redis.start()
    with CurriculumAgent("t-replay", ["a", "b"], redis_url=private_redis.url, key_prefix="rp:", spool_dir=spool):
        pass
    r = redis.Redis.from_url(private_redis.url)
    msgs = messages(r, "rp:")
    assert [m["step"] for m in msgs if m["type"] == "step"] == [0, 1, 2, 3, 4]
    assert [m["type"] for m in msgs].count("run_start") == 2
    assert not (spool / "pending.jsonl").exists()
    r.close()
