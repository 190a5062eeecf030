"""Two gloo ranks: identical probabilities and indices, reduced statistics equal to one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
import torch.multiprocessing as mp

from tests.agent import dist_worker
from tests.conftest import REDIS_URL, free_port


def _spawned(rank: int, out_dir: str, prefix: str, port: int) -> None:
    dist_worker.run(rank, 2, out_dir, REDIS_URL, prefix, port)


@pytest.mark.timeout(180)
def test_two_ranks_agree_and_match_a_single_process(tmp_path: Path, key_prefix: str) -> None:
    mp.spawn(_spawned, args=(str(tmp_path), key_prefix, free_port()), nprocs=2, join=True)
    dist_worker.run(0, 1, str(tmp_path), None, key_prefix, 0)
    r0 = json.loads((tmp_path / "rank0-of-2.json").read_text())
    r1 = json.loads((tmp_path / "rank1-of-2.json").read_text())
    ref = json.loads((tmp_path / "rank0-of-1.json").read_text())
    for s0, s1, sr in zip(r0["trace"], r1["trace"], ref["trace"], strict=True):
        # every rank sees the same decision and draws the same arms and dataset indices
        assert s0["p"] == s1["p"]
        assert s0["arms"] == s1["arms"] and s0["indices"] == s1["indices"]
        assert s0["probabilities"] == s1["probabilities"]
        # the reduced statistics equal those of one process that saw all the data
        assert s0["arms"] == sr["arms"]
        assert s0["n_step"] == s1["n_step"] == sr["n_step"]
        assert s0["n_total"] == sr["n_total"]
        for key in ("mean_abs_adv", "accuracy"):
            for arm, v in sr[key].items():
                if v is None:
                    assert s0[key][arm] is None
                else:
                    assert s0[key][arm] == pytest.approx(v, abs=1e-12)
        assert max(abs(a - b) for a, b in zip(s0["p"], sr["p"], strict=True)) < 1e-12
        assert s0["indices"] == sr["indices"]
    # a pin issued at step 3 on every rank is applied once (by rank 0), at the same step everywhere
    assert [len(s["acks"]) for s in r0["trace"]] == [0, 0, 0, 1, 0, 0, 0, 0]
    assert r0["trace"][3]["probabilities"]["c"] == r1["trace"][3]["probabilities"]["c"] == 0.5
    # only rank 0 streamed
    r = redis.Redis.from_url(REDIS_URL)
    msgs = [json.loads(f[b"m"]) for _i, f in r.xrange(f"{key_prefix}ingest")]
    r.close()
    starts = [m for m in msgs if m["type"] == "run_start"]
    assert len(starts) == 1 and starts[0]["pid"] == r0["pid"]
    assert [m["step"] for m in msgs if m["type"] == "step"] == list(range(dist_worker.STEPS))


def _spawned_resume(rank: int, out_dir: str, prefix: str, port: int) -> None:
    dist_worker.run_resume(rank, 2, out_dir, REDIS_URL, prefix, port)


@pytest.mark.timeout(180)
def test_state_saved_by_one_process_resumes_on_two_ranks(tmp_path: Path, key_prefix: str) -> None:
    from trainer_agent import CurriculumAgent

    saver = CurriculumAgent("dist-saver", dist_worker.ARMS, scheduler="dump", seed=7, redis_url=None)
    for step in range(dist_worker.RESUME_AT):
        comp, rewards, groups = dist_worker.step_data(step, saver.sample(dist_worker.PROMPTS))
        saver.observe(comp, rewards, groups=groups)
        saver.end_step()
    (tmp_path / "state.json").write_text(json.dumps(saver.state_dict()))
    mp.spawn(_spawned_resume, args=(str(tmp_path), key_prefix, free_port()), nprocs=2, join=True)
    dist_worker.run_resume(0, 1, str(tmp_path), None, key_prefix, 0)
    r0 = json.loads((tmp_path / "resume-rank0-of-2.json").read_text())
    r1 = json.loads((tmp_path / "resume-rank1-of-2.json").read_text())
    ref = json.loads((tmp_path / "resume-rank0-of-1.json").read_text())
    steps = list(range(dist_worker.RESUME_AT, dist_worker.RESUME_AT + dist_worker.RESUME_STEPS))
    for s0, s1, sr in zip(r0["trace"], r1["trace"], ref["trace"], strict=True):
        # both ranks resumed from the same state: same draws, same decisions, same numbering
        assert s0["arms"] == s1["arms"] == sr["arms"]
        assert s0["p"] == s1["p"]
        assert max(abs(a - b) for a, b in zip(s0["p"], sr["p"], strict=True)) < 1e-12
        assert s0["n_total"] == s1["n_total"] == sr["n_total"]
    assert [s["step"] for s in r0["trace"]] == [s["step"] for s in r1["trace"]] == steps
    assert r0["follow"] == r1["follow"] == [10, 11, 12]
    r = redis.Redis.from_url(REDIS_URL)
    msgs = [json.loads(f[b"m"]) for _i, f in r.xrange(f"{key_prefix}ingest")]
    r.close()
    assert [m["step"] for m in msgs if m["type"] == "step"] == steps
    assert [m["step"] for m in msgs if m["type"] == "run_end"] == [steps[-1]]
