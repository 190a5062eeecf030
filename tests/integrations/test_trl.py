"""TRL's real GRPOTrainer on CPU, steered by a real CurriculumAgent (tiny random model, offline)."""

from __future__ import annotations

import collections
import importlib.util
import json
import os
from typing import Any

import numpy as np
import pytest

# Skip only where TRL is not installed; an installed TRL that fails to import is a failure.
if importlib.util.find_spec("trl") is None:
    pytest.skip("TRL is not installed (the `trl` extra; make install puts it in .venv)", allow_module_level=True)
# TRL 1.16 itself still calls transformers' deprecated gradient_checkpointing names.
pytestmark = pytest.mark.filterwarnings("ignore:.*checkpointing.*:FutureWarning")

from transformers import TrainerCallback  # noqa: E402

from trainer_agent import CurriculumAgent, StepStats  # noqa: E402
from trainer_agent.errors import ConfigError  # noqa: E402
from trainer_agent.integrations.trl import (  # noqa: E402
    AGENT_STATE_NAME,
    CurriculumGRPOTrainer,
    CurriculumRepeatSampler,
)

from .tiny_grpo import ARMS, make_args, make_dataset, make_model, make_tokenizer, target_reward  # noqa: E402

G = 4  # num_generations
PROMPTS = 4  # prompts per generation batch: per_device_train_batch_size 16 / G


class RecordingAgent(CurriculumAgent):
    """The real agent, keeping what the trainer hands it and when the sampler drew its chunks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observed: list[tuple[list[str], np.ndarray, np.ndarray]] = []
        self.steps: list[StepStats] = []
        self.chunks_drawn_at_end_step: list[int] = []
        self.trainer: CurriculumGRPOTrainer | None = None

    def observe(self, arms: Any, rewards: Any, advantages: Any = None, groups: Any = None) -> None:
        self.observed.append((list(arms), rewards.detach().cpu().numpy().copy(),
                              advantages.detach().cpu().numpy().copy()))
        super().observe(arms, rewards, advantages, groups)

    def end_step(self, metrics: Any = None) -> StepStats:
        stats = super().end_step(metrics)
        self.steps.append(stats)
        assert self.trainer is not None and self.trainer.curriculum_sampler is not None
        self.chunks_drawn_at_end_step.append(self.trainer.curriculum_sampler.chunks_drawn)
        return stats


class PinAfterStep(TrainerCallback):  # type: ignore[misc]
    """Pins an arm between two optimizer steps, as an operator would from the UI."""

    def __init__(self, agent: CurriculumAgent, arm: str, after_global_step: int) -> None:
        self.agent, self.arm, self.after = agent, arm, after_global_step
        self.command_id: str | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.after:
            self.command_id = self.agent.pin(self.arm, 1.0, reason="test")


def _rewarder() -> tuple[Any, list[tuple[list[str], list[float]]]]:
    calls: list[tuple[list[str], list[float]]] = []

    def target(completions: list[str], data_source: list[str], **kw: Any) -> list[float]:
        r = target_reward(completions, data_source)
        calls.append((list(data_source), r))
        return r

    return target, calls


def _trl_advantages(rewards: np.ndarray) -> np.ndarray:
    """TRL's default (scale_rewards="group"): (r - mean_g) / (std_g + 1e-4), std unbiased."""
    g = rewards.reshape(-1, G).astype(np.float64)
    adv = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, ddof=1, keepdims=True) + 1e-4)
    return adv.reshape(-1)


@pytest.mark.parametrize(
    ("num_iterations", "max_steps", "rebind", "lag"),
    [
        # TRL defaults: one optimizer step per generation. Re-drawing at generation time makes the
        # next generation batch follow the pin ...
        (1, 6, True, 1),
        # ... which the sampler alone cannot: accelerate's one-batch look-ahead means the chunk
        # drawn after an end_step is consumed two generations later.
        (1, 6, False, 2),
        # Each generation trained on twice: the look-ahead stays inside the generation's repeats.
        (2, 10, True, 1),
        (2, 10, False, 1),
    ],
)
def test_trl_grpo_feeds_agent_and_follows_pin(num_iterations: int, max_steps: int, rebind: bool, lag: int) -> None:
    tok = make_tokenizer()
    agent = RecordingAgent(run=f"trl-test-{num_iterations}", arms=list(ARMS), scheduler="dump", redis_url=None, seed=0)
    reward_fn, calls = _rewarder()
    pin = PinAfterStep(agent, "mul", after_global_step=1)
    trainer = CurriculumGRPOTrainer(
        model=make_model(tok), reward_funcs=reward_fn, processing_class=tok, train_dataset=make_dataset(per_arm=8),
        args=make_args(max_steps=max_steps, num_iterations=num_iterations), callbacks=[pin], agent=agent,
        rebind_prompts=rebind,
    )
    agent.trainer = trainer
    trainer.train()
    n_gen = max_steps // num_iterations

    # One agent step per generation batch, each with every completion of that batch.
    assert len(agent.steps) == len(calls) == len(agent.observed) == n_gen
    assert [s.step for s in agent.steps] == list(range(n_gen))
    for stats, (sources, rewards), (arms, obs_r, obs_a) in zip(agent.steps, calls, agent.observed, strict=True):
        assert sum(stats.n_step.values()) == PROMPTS * G
        assert stats.n_step == {a: sources.count(a) for a in ARMS}
        # Arms, rewards and advantages are per completion and aligned with each other.
        assert arms == sources
        np.testing.assert_array_equal(obs_r, np.array(rewards, dtype=np.float32))
        np.testing.assert_allclose(obs_a, _trl_advantages(np.array(rewards)), rtol=1e-5, atol=1e-5)
        # Groups stay whole: each prompt's G completions are consecutive and share an arm.
        assert all(len(set(arms[i:i + G])) == 1 for i in range(0, len(arms), G))
        assert stats.metrics["reward"] == pytest.approx(float(np.mean(rewards)), abs=1e-6)
        assert stats.n_invalid == 0

    # The pin, queued after optimizer step 1, is applied at the next agent step ...
    applied = [(s.step, a) for s in agent.steps for a in s.acks if a.id == pin.command_id]
    assert len(applied) == 1 and applied[0][1].status == "applied"
    k = applied[0][0]
    assert k == 1  # the generation after optimizer step 1, in both layouts
    # ... and every generation from `lag` generations after the step that applied it draws from
    # the pinned arm only.
    first_pinned = k + lag
    if not rebind:  # the sampler's chunk drawn right after that step is the one consumed then
        assert agent.chunks_drawn_at_end_step[k] == first_pinned
    assert first_pinned < n_gen
    for g, (sources, _) in enumerate(calls):
        if g >= first_pinned:
            assert set(sources) == {"mul"}, (g, collections.Counter(sources))
            assert agent.steps[g].probabilities["mul"] == 1.0
    assert set().union(*(set(s) for s, _ in calls[:first_pinned])) != {"mul"}
    assert trainer.curriculum_time_s > 0.0
    agent.close()


def test_sampler_keeps_trl_repeat_layout() -> None:
    """Same length and shape as TRL's RepeatSampler: G in a row, each chunk repeated R times."""
    from trl.trainer.utils import RepeatSampler

    arms = [ARMS[i % 3] for i in range(14)]
    agent = CurriculumAgent(run="layout", arms=list(ARMS), redis_url=None)
    ours = CurriculumRepeatSampler(agent, arms, mini_repeat_count=2, batch_size=3, repeat_count=4, seed=7)
    theirs = RepeatSampler(arms, mini_repeat_count=2, batch_size=3, repeat_count=4, seed=7)
    idx = list(ours)
    assert len(idx) == len(ours) == len(theirs) == len(list(theirs))
    block = 2 * 3 * 4
    for c in range(0, len(idx), block):
        chunk = idx[c:c + block]
        first = chunk[: 2 * 3]
        assert chunk == first * 4
        assert all(first[i] == first[i + 1] for i in range(0, len(first), 2))
    assert ours.chunks_drawn == len(idx) // block
    # Seeded by a seed all processes share: a second sampler draws the same indices.
    again = CurriculumRepeatSampler(CurriculumAgent(run="layout2", arms=list(ARMS), redis_url=None), arms,
                                    mini_repeat_count=2, batch_size=3, repeat_count=4, seed=7)
    assert list(again) == idx


def test_rejects_dataset_without_arm_column() -> None:
    tok = make_tokenizer()
    agent = CurriculumAgent(run="no-col", arms=list(ARMS), redis_url=None)
    with pytest.raises(ConfigError, match="no 'source' column"):
        CurriculumGRPOTrainer(model=make_model(tok), reward_funcs=target_reward, processing_class=tok,
                              train_dataset=make_dataset(per_arm=2), args=make_args(), agent=agent,
                              arm_column="source")


class AtTrainBegin(TrainerCallback):  # type: ignore[misc]
    """What the agent holds when training (re)starts: after a checkpoint was loaded, before any step."""

    def __init__(self, agent: CurriculumAgent) -> None:
        self.agent = agent
        self.seen: tuple[int, dict[str, float]] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.seen = (self.agent.step, self.agent.probabilities())


def test_checkpoint_keeps_the_agent_state_and_resume_loads_it(tmp_path: Any, caplog: Any) -> None:
    tok = make_tokenizer()
    out = str(tmp_path / "out")
    args = dict(output_dir=out, save_strategy="steps", save_steps=2)
    first = RecordingAgent(run="trl-resume", arms=list(ARMS), scheduler="dump", redis_url=None, seed=0)
    pin = PinAfterStep(first, "cmp", after_global_step=3)
    trainer = CurriculumGRPOTrainer(
        model=make_model(tok), reward_funcs=target_reward, processing_class=tok,
        train_dataset=make_dataset(per_arm=8), args=make_args(max_steps=4, **args), agent=first, callbacks=[pin],
    )
    first.trainer = trainer
    trainer.train()
    first.close()
    assert [s.step for s in first.steps] == [0, 1, 2, 3]
    # Each checkpoint holds the agent as it was when the checkpoint was saved: after 2 and 4 generations.
    with open(f"{out}/checkpoint-2/{AGENT_STATE_NAME}") as f:
        saved = json.load(f)
    assert saved["step"] == 2 and saved["run"] == "trl-resume"
    fresh = CurriculumAgent(run="check", arms=list(ARMS), scheduler="dump", redis_url=None)
    fresh.load_state_dict(saved)
    assert fresh.probabilities() == first.steps[1].probabilities
    with open(f"{out}/checkpoint-4/{AGENT_STATE_NAME}") as f:
        saved4 = json.load(f)
    # ... with the overrides in force: the pin queued after optimizer step 3 was applied at agent step 3
    assert saved4["step"] == 4 and saved4["overrides"]["pin"] == [1.0 if a == "cmp" else None for a in ARMS]

    # A new job resumes from checkpoint-2 with a new agent: the agent continues from that checkpoint.
    second = RecordingAgent(run="trl-resume", arms=list(ARMS), scheduler="dump", redis_url=None, seed=5)
    begin = AtTrainBegin(second)
    trainer = CurriculumGRPOTrainer(
        model=make_model(tok), reward_funcs=target_reward, processing_class=tok,
        train_dataset=make_dataset(per_arm=8), args=make_args(max_steps=5, **args), agent=second,
        callbacks=[begin],
    )
    second.trainer = trainer
    trainer.train(resume_from_checkpoint=f"{out}/checkpoint-2")
    second.close()
    assert begin.seen == (2, first.steps[1].probabilities)
    assert [s.step for s in second.steps] == [2, 3, 4]
    assert second.steps[0].n_total == {a: first.steps[1].n_total[a] + second.steps[0].n_step[a] for a in ARMS}

    # A checkpoint without the agent's state (another trainer's): training resumes, with a warning,
    # and the agent as it was built.
    os.remove(f"{out}/checkpoint-4/{AGENT_STATE_NAME}")
    third = RecordingAgent(run="trl-resume", arms=list(ARMS), scheduler="dump", redis_url=None, start_step=4)
    trainer = CurriculumGRPOTrainer(
        model=make_model(tok), reward_funcs=target_reward, processing_class=tok,
        train_dataset=make_dataset(per_arm=8), args=make_args(max_steps=5, **args), agent=third,
    )
    third.trainer = trainer
    with caplog.at_level("WARNING", logger="trainer_agent.trl"):
        trainer.train(resume_from_checkpoint=f"{out}/checkpoint-4")
    third.close()
    assert f"holds no {AGENT_STATE_NAME}" in caplog.text
    assert [s.step for s in third.steps] == [4]


class EvalRecordingAgent(CurriculumAgent):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.evals: list[tuple[str, int, dict[str, float]]] = []

    def log_eval(self, results: Any, *, n: Any = None, name: str = "eval", step: int | None = None) -> Any:
        out = super().log_eval(results, n=n, name=name, step=step)
        self.evals.append((name, int(step or 0), dict(results)))
        return out


def test_evaluation_reports_per_arm_accuracy(tmp_path: Any) -> None:
    tok = make_tokenizer()
    agent = EvalRecordingAgent(run="trl-eval", arms=list(ARMS), scheduler="dump", redis_url=None, seed=0)
    scored: list[tuple[list[str], list[float]]] = []

    def reward(completions: list[str], data_source: list[str], **kw: Any) -> list[float]:
        r = target_reward(completions, data_source)
        scored.append((list(data_source), r))
        return r

    trainer = CurriculumGRPOTrainer(
        model=make_model(tok), reward_funcs=reward, processing_class=tok, train_dataset=make_dataset(per_arm=8),
        eval_dataset={"heldout": make_dataset(per_arm=4)},
        args=make_args(max_steps=2, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=16),
        agent=agent,
    )
    trainer.train()
    # The evaluation at global step 2 scored every eval row G times (TRL repeats eval prompts too).
    assert [(name, step) for name, step, _ in agent.evals] == [("heldout", 2)]
    eval_calls = scored[-(len(scored) - 2):]  # the two training generations came first
    expected: dict[str, list[int]] = {a: [0, 0] for a in ARMS}
    for sources, rewards in eval_calls:
        for arm, r in zip(sources, rewards, strict=True):
            expected[arm][0] += int(r > 0.5)
            expected[arm][1] += 1
    assert agent.evals[0][2] == {a: (c, t) for a, (c, t) in expected.items()}
    assert all(t == 4 * G for _, t in expected.values())


def test_pass_rate_within_arm_learns_each_rows_pass_rate_from_the_trainers_groups() -> None:
    """within_arm="pass_rate": the trainer passes each completion's dataset row to observe(prompts=...),
    and the agent's per-row pass rates are the moving averages of exactly those rows' groups."""
    tok = make_tokenizer()
    dataset = make_dataset(per_arm=8)
    row_of = {p: i for i, p in enumerate(dataset["prompt"])}
    steps: list[list[tuple[int, float]]] = []

    def reward_fn(prompts: list[str], completions: list[str], data_source: list[str], **kw: Any) -> list[float]:
        r = target_reward(completions, data_source)
        steps.append([(row_of[p], x) for p, x in zip(prompts, r, strict=True)])
        return r

    agent = CurriculumAgent(run="trl-pass-rate", arms=list(ARMS), scheduler="dump", redis_url=None, seed=0)
    trainer = CurriculumGRPOTrainer(model=make_model(tok), reward_funcs=reward_fn, processing_class=tok,
                                    train_dataset=dataset, args=make_args(max_steps=6), agent=agent,
                                    within_arm="pass_rate")
    trainer.train()
    assert len(steps) == 6
    expected = np.full(len(dataset), np.nan)
    for step in steps:
        for row in {r for r, _ in step}:
            rate = np.mean([x > agent.threshold for r, x in step if r == row])
            old = expected[row]
            expected[row] = rate if np.isnan(old) else 0.5 * old + 0.5 * rate
    assert agent.pass_rates is not None
    np.testing.assert_allclose(agent.pass_rates.rate, expected)
    assert stats_profile_seen(trainer)
    agent.close()
    with pytest.raises(ConfigError, match="needs rebind_prompts=True"):
        CurriculumGRPOTrainer(model=make_model(tok), reward_funcs=target_reward, processing_class=tok,
                              train_dataset=dataset, args=make_args(), agent=agent, within_arm="pass_rate",
                              rebind_prompts=False)


def stats_profile_seen(trainer: CurriculumGRPOTrainer) -> bool:
    """The last step carried each arm's pass-rate profile (prompt ids were given)."""
    stats = trainer.curriculum_stats
    return stats is not None and stats.pass_hist is not None and sum(map(sum, stats.pass_hist.values())) > 0
