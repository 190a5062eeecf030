"""GRPO on the synthetic task mixture, with the curriculum agent choosing the arm of every prompt.

One step (Shao et al. 2024, DeepSeekMath §4.1; clipped surrogate of Schulman et al. 2017):

1. ``agent.sample(n_prompts)`` picks an arm per prompt; a prompt is drawn from each arm.
2. The policy samples ``group_size`` completions per prompt at ``temperature``.
3. Exact-match rewards; group-relative advantages ``A = (r - mean_g) / (std_g + 1e-6)`` (unbiased
   std, a group of one gets 0), the same rule the agent would apply itself.
4. PPO clipped surrogate (optional k3 KL to the post-warm-up policy), one optimizer step per pass.
5. ``agent.observe(arms, rewards, advantages=A)`` per completion, ``agent.end_step(metrics)``.

Before RL an optional supervised warm-up on easy arms teaches the policy the task formats, so RL
starts from a model that can start to learn (a few successes per group) rather than from noise.
Progress is measured by greedy accuracy on a fixed held-out set per arm, independent of which arms
the scheduler happened to sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np
import torch

from .model import ModelConfig, Policy, completion_mask, generate, pad_prompts, token_logprobs
from .tasks import (
    DEFAULT_ARMS,
    DEFAULT_ROLES,
    DEFAULT_WARMUP,
    EOS,
    PAD,
    Example,
    answer_length,
    encode,
    make_examples,
    parse_arm,
    reward,
)

log = logging.getLogger(__name__)


class Agent(Protocol):
    """The part of `trainer_agent.CurriculumAgent` the trainer uses (lets tests pass a stand-in)."""

    def sample(self, n: int) -> list[str]: ...

    def sampler(self, dataset_arms: Any, group_size: int, *, prompts_per_chunk: int = 1,
                num_samples: int | None = None, within_arm: str = "uniform") -> Any: ...

    def observe(self, arms: Any, rewards: Any, advantages: Any = None, groups: Any = None,
                prompts: Any = None) -> None: ...

    def end_step(self, metrics: dict[str, float] | None = None) -> Any: ...

    def probabilities(self) -> dict[str, float]: ...

    def log_eval(self, results: Any, *, n: Any = None, name: str = "eval", step: int | None = None) -> Any: ...

    def close(self, status: Any = None) -> None: ...


# The demo's held-out evaluation: greedy decoding, exact match, fixed examples per arm.
EVAL_NAME = "greedy"


@dataclass
class DemoConfig:
    """Everything that defines a demo run; defaults are the measured 2-CPU-core settings."""

    run: str = "demo"
    project: str = "demo"
    scheduler: str = "dump"
    scheduler_params: dict[str, Any] = field(default_factory=dict)
    redis_url: str | None = None
    key_prefix: str = "steerboard:"
    seed: int = 0
    arms: tuple[str, ...] = DEFAULT_ARMS
    roles: dict[str, str] | None = None  # None: DEFAULT_ROLES, unknown arms count as learnable
    # RL
    steps: int = 250
    n_prompts: int = 64
    group_size: int = 8
    lr: float = 2e-4  # 5e-4 measured noisier and slower on rev4
    temperature: float = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    ppo_epochs: int = 1
    max_grad_norm: float = 1.0
    # supervised warm-up on easy arms
    warmup_arms: tuple[str, ...] = tuple(DEFAULT_WARMUP)
    warmup_weights: tuple[float, ...] | None = tuple(DEFAULT_WARMUP.values())  # None: equal weights
    warmup_steps: int = 400
    warmup_batch: int = 64
    warmup_lr: float = 2e-3
    warmup_cache: str | None = None  # directory: reuse the warm-up of identical settings
    # data: None draws fresh prompts every step; a number: a fixed training set of that many prompts per
    # arm (seeded), drawn through agent.sampler() with `within_arm` ("uniform" or "pass_rate")
    pool_per_arm: int | None = None
    within_arm: str = "uniform"
    # an earlier run's per-arm statistics to start the scheduler from (trainer_agent.recent.WarmStart)
    warm_start: Any = None
    # evaluation: greedy accuracy on a fixed held-out set per arm
    eval_every: int = 10
    eval_per_arm: int = 64
    # model and machine
    d_model: int = 96
    n_layers: int = 3
    n_heads: int = 4
    threads: int | None = None
    device: str = "auto"

    def role(self, arm: str) -> str:
        """Role of ``arm`` in the mixture: easy, learnable or hard."""
        roles = DEFAULT_ROLES if self.roles is None else self.roles
        return str(roles.get(arm, "learnable"))


@dataclass
class DemoResult:
    """What a run measured, step by step (index i = RL step i, 0-based)."""

    config: DemoConfig
    arms: list[str]
    roles: dict[str, str]
    steps_done: int = 0
    train_accuracy: list[dict[str, float | None]] = field(default_factory=list)
    counts: list[dict[str, int]] = field(default_factory=list)  # prompts per arm
    probabilities: list[dict[str, float]] = field(default_factory=list)  # in force when sampled
    mean_abs_adv: list[dict[str, float | None]] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)  # after that many RL steps
    eval_accuracy: list[dict[str, float]] = field(default_factory=list)
    warmup_s: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False

    def arms_with_role(self, role: str) -> list[str]:
        """Arms of the mixture that play ``role``."""
        return [a for a in self.arms if self.roles[a] == role]

    def eval_mean(self, role: str = "learnable") -> list[float]:
        """Mean greedy eval accuracy over the arms of ``role``, at each of `eval_steps`."""
        arms = self.arms_with_role(role)
        return [float(np.mean([e[a] for a in arms])) for e in self.eval_accuracy]

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (for files and subprocess results)."""
        d = asdict(self)
        d["config"] = asdict(self.config)
        return d


def group_advantages(rewards: np.ndarray, group_size: int) -> np.ndarray:
    """GRPO advantages of consecutive groups of ``group_size`` completions (docs/formulas.md)."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1, group_size)
    if group_size == 1:
        return np.zeros(r.size)
    std = r.std(axis=1, ddof=1, keepdims=True)
    adv: np.ndarray = ((r - r.mean(axis=1, keepdims=True)) / (std + 1e-6)).reshape(-1)
    return adv


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _answer_tensor(examples: Sequence[Example], device: torch.device) -> torch.Tensor:
    """Answers + EOS, right-padded: the teacher-forced completions of the warm-up."""
    enc = [[*encode(e.answer), EOS] for e in examples]
    width = max(len(e) for e in enc)
    out = torch.full((len(enc), width), PAD, dtype=torch.long)
    for i, e in enumerate(enc):
        out[i, : len(e)] = torch.tensor(e)
    return out.to(device)


def _masked_seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over each sequence's own tokens (GRPO's 1/|o_i| normalisation)."""
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def supervised_warmup(model: Policy, cfg: DemoConfig, device: torch.device) -> None:
    """Teacher-forced cross-entropy on the warm-up arms (answer tokens and EOS only)."""
    if cfg.warmup_steps <= 0 or not cfg.warmup_arms:
        return
    rng = np.random.default_rng([cfg.seed, 1])
    p = None
    if cfg.warmup_weights is not None:
        w = np.asarray(cfg.warmup_weights, dtype=np.float64)
        p = w / w.sum()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.warmup_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / cfg.warmup_steps))
    )
    model.train()
    for step in range(cfg.warmup_steps):
        arms = [str(a) for a in rng.choice(list(cfg.warmup_arms), size=cfg.warmup_batch, p=p)]
        examples = make_examples(arms, rng)
        p_ids, p_valid = pad_prompts([e.prompt for e in examples], device)
        answers = _answer_tensor(examples, device)
        logp = token_logprobs(model, p_ids, p_valid, answers)
        loss = -_masked_seq_mean(logp, (answers != PAD).float()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.warmup_steps - 1:
            log.info("warm-up step %d/%d loss %.4f", step + 1, cfg.warmup_steps, loss.item())


def _warmup_key(cfg: DemoConfig) -> str:
    keys = (
        "seed",
        "warmup_arms",
        "warmup_weights",
        "warmup_steps",
        "warmup_batch",
        "warmup_lr",
        "d_model",
        "n_layers",
        "n_heads",
    )
    blob = json.dumps({k: getattr(cfg, k) for k in keys}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_policy(cfg: DemoConfig, device: torch.device) -> Policy:
    """A freshly initialised policy, warmed up (or loaded from ``cfg.warmup_cache``)."""
    torch.manual_seed(cfg.seed)
    max_prompt = max(len(make_examples([a], np.random.default_rng(0))[0].prompt) for a in cfg.arms)
    max_ans = max(answer_length(a) for a in (*cfg.arms, *cfg.warmup_arms))
    # The longest add prompt is <marker><level digits>+<level digits>=; the sampled one may be shorter.
    max_len = 2 + max(max_prompt, *(2 * parse_arm(a)[1] + 3 for a in cfg.arms)) + max_ans + 1
    mcfg = ModelConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, n_heads=cfg.n_heads, max_len=max_len)
    model = Policy(mcfg).to(device)
    cache: Path | None = None
    if cfg.warmup_cache is not None:
        cache = Path(cfg.warmup_cache) / f"warmup-{_warmup_key(cfg)}-L{max_len}.pt"
        if cache.exists():
            model.load_state_dict(torch.load(cache, map_location=device, weights_only=True))
            log.info("loaded warm-up from %s", cache)
            return model
    supervised_warmup(model, cfg, device)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        # A temporary name of this process's own: two trainers warming up at once (the demo's dump and
        # uniform runs) each save and rename theirs; with one shared name the second rename found nothing.
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(cache)  # atomic: parallel bench workers never read half a file
    return model


@torch.no_grad()
def evaluate(model: Policy, eval_sets: dict[str, list[Example]], device: torch.device) -> dict[str, float]:
    """Greedy exact-match accuracy per arm on fixed examples."""
    model.eval()
    arms = [a for a, exs in eval_sets.items() for _ in exs]
    examples = [e for exs in eval_sets.values() for e in exs]
    p_ids, p_valid = pad_prompts([e.prompt for e in examples], device)
    max_new = max(answer_length(a) for a in eval_sets) + 1
    comps = generate(model, p_ids, p_valid, max_new, temperature=0.0).cpu().tolist()
    hits: dict[str, list[float]] = {a: [] for a in eval_sets}
    for arm, ex, c in zip(arms, examples, comps, strict=True):
        hits[arm].append(reward(c, ex.answer))
    return {a: float(np.mean(h)) for a, h in hits.items()}


def build_agent(cfg: DemoConfig) -> Agent:
    """The real curriculum agent for ``cfg`` (imported here: the demo is its first user)."""
    from trainer_agent import CurriculumAgent

    meta = {k: v for k, v in asdict(cfg).items()
            if k not in ("run", "project", "redis_url", "key_prefix", "warm_start")}
    agent: Agent = CurriculumAgent(
        run=cfg.run,
        # Metadata shown in the UI next to each arm.
        arms={a: {"family": parse_arm(a)[0], "level": parse_arm(a)[1], "role": cfg.role(a)} for a in cfg.arms},
        scheduler=cfg.scheduler,
        scheduler_params=dict(cfg.scheduler_params),
        redis_url=cfg.redis_url,
        key_prefix=cfg.key_prefix,
        seed=cfg.seed,
        config=meta,
        project=cfg.project,
        warm_start=cfg.warm_start,
    )
    return agent


@contextlib.contextmanager
def _stop_on_sigint(enabled: bool) -> Iterator[list[bool]]:
    """First Ctrl-C asks the loop to stop at the next step boundary; a second one interrupts."""
    flag = [False]
    if not enabled:
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: FrameType | None) -> None:
        flag[0] = True
        signal.signal(signal.SIGINT, previous)
        log.warning("Ctrl-C: stopping after this step (press again to abort now)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _grpo_update(
    model: Policy,
    ref: Policy | None,
    opt: torch.optim.Optimizer,
    cfg: DemoConfig,
    p_ids: torch.Tensor,
    p_valid: torch.Tensor,
    comps: torch.Tensor,
    adv: np.ndarray,
) -> dict[str, float]:
    """Clipped-surrogate GRPO update(s) on one batch; returns loss statistics."""
    n_total = comps.shape[0]
    # Completions with A = 0 contribute exactly zero gradient without KL (ratio terms are multiplied
    # by A), so they are left out of the forward pass; the loss is still normalised by all of them.
    keep = np.flatnonzero(adv != 0.0) if cfg.kl_coef == 0.0 else np.arange(n_total)
    stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0, "n_trained": float(len(keep))}
    if len(keep) == 0:
        return stats
    idx = torch.as_tensor(keep, device=comps.device)
    p_ids, p_valid, comps = p_ids[idx], p_valid[idx], comps[idx]
    # Trim the left padding shared by every kept row, and completion columns after the last EOS.
    first = int((~p_valid).sum(dim=1).min())
    p_ids, p_valid = p_ids[:, first:], p_valid[:, first:]
    mask = completion_mask(comps).float()
    width = int(mask.sum(dim=1).max())
    comps, mask = comps[:, :width], mask[:, :width]
    a = torch.as_tensor(adv[keep], dtype=torch.float32, device=comps.device)[:, None]
    model.train()
    with torch.no_grad():
        # One pass on fresh samples is exactly on-policy (ratio 1): skip the extra forward.
        old = token_logprobs(model, p_ids, p_valid, comps) if cfg.ppo_epochs > 1 else None
        ref_logp = token_logprobs(ref, p_ids, p_valid, comps) if ref is not None else None
    for _ in range(cfg.ppo_epochs):
        logp = token_logprobs(model, p_ids, p_valid, comps)
        ratio = torch.exp(logp - (logp.detach() if old is None else old))
        surr = torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
        per_tok = -surr
        kl = torch.zeros((), device=comps.device)
        if ref_logp is not None:
            d = ref_logp - logp
            k3 = torch.exp(d) - d - 1  # Schulman's unbiased, positive KL estimator
            per_tok = per_tok + cfg.kl_coef * k3
            kl = _masked_seq_mean(k3.detach(), mask).mean()
        loss = _masked_seq_mean(per_tok, mask).sum() / n_total
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        clipped = ((ratio - 1).abs() > cfg.clip_eps).float()
        stats = {
            "loss": float(loss.item()),
            "kl": float(kl.item()),
            "clip_frac": float(_masked_seq_mean(clipped, mask).mean().item()),
            "grad_norm": float(gn.item()),
            "n_trained": float(len(keep)),
        }
    return stats


def train(
    cfg: DemoConfig,
    agent: Agent | None = None,
    progress: bool = False,
    handle_sigint: bool = False,
) -> DemoResult:
    """Warm up a small policy, then run ``cfg.steps`` GRPO steps with the curriculum agent.

    Args:
        cfg: the run's settings.
        agent: a curriculum agent over ``cfg.arms``; None builds `trainer_agent.CurriculumAgent`
            from ``cfg``. The agent is closed when training ends, however it ends.
        progress: show a tqdm progress bar (step accuracy in its postfix).
        handle_sigint: the first Ctrl-C stops at the next step boundary (main thread only).

    Returns:
        Per-step per-arm training accuracy, probabilities and metrics, and greedy eval accuracy
        every ``cfg.eval_every`` steps.

    Example:
        >>> res = train(DemoConfig(steps=20, scheduler="uniform"))  # doctest: +SKIP
        >>> res.eval_accuracy[-1]["copy2"]  # doctest: +SKIP
        1.0
    """
    t0 = time.perf_counter()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = _resolve_device(cfg.device)
    arms = list(cfg.arms)
    result = DemoResult(config=cfg, arms=arms, roles={a: cfg.role(a) for a in arms})

    model = build_policy(cfg, device)
    result.warmup_s = time.perf_counter() - t0
    ref: Policy | None = None
    if cfg.kl_coef > 0:
        ref = build_policy(cfg, device)  # the post-warm-up policy, frozen
        ref.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)

    # Separate streams for RL prompts, sampling and eval, so cached and fresh warm-ups agree.
    rng = np.random.default_rng([cfg.seed, 2])
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + 7)
    eval_rng = np.random.default_rng([cfg.seed, 3])
    eval_sets = {a: make_examples([a] * cfg.eval_per_arm, eval_rng) for a in arms}

    def record_eval(step: int) -> None:
        result.eval_steps.append(step)
        result.eval_accuracy.append(evaluate(model, eval_sets, device))
        if agent is not None:  # to Steerboard: the outcome the curriculum is judged by
            agent.log_eval(result.eval_accuracy[-1], n=cfg.eval_per_arm, name=EVAL_NAME, step=step)

    if agent is None:
        agent = build_agent(cfg)
    pool: list[Example] | None = None
    if cfg.pool_per_arm is not None:  # a fixed training set, its own stream: the same for every scheduler
        pool_arms = [a for a in arms for _ in range(cfg.pool_per_arm)]
        pool = make_examples(pool_arms, np.random.default_rng([cfg.seed, 4]))
        pool_draws = iter(agent.sampler(pool_arms, 1, prompts_per_chunk=cfg.n_prompts, num_samples=2**62,
                                        within_arm=cfg.within_arm))
    record_eval(0)
    log.info("after warm-up (%.1fs): %s", result.warmup_s, result.eval_accuracy[-1])

    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc=cfg.run, unit="step", dynamic_ncols=True)
    g = cfg.group_size
    try:
        with _stop_on_sigint(handle_sigint) as stop:
            for step in range(cfg.steps):
                if stop[0]:
                    result.interrupted = True
                    break
                ts = time.perf_counter()
                probs = agent.probabilities()
                if pool is None:
                    prompt_arms = list(agent.sample(cfg.n_prompts))
                    examples = make_examples(prompt_arms, rng)
                else:
                    rows = list(itertools.islice(pool_draws, cfg.n_prompts))
                    prompt_arms = [pool_arms[i] for i in rows]
                    examples = [pool[i] for i in rows]
                comp_arms = [a for a in prompt_arms for _ in range(g)]
                comp_examples = [e for e in examples for _ in range(g)]
                p_ids, p_valid = pad_prompts([e.prompt for e in comp_examples], device)
                max_new = max(answer_length(a) for a in prompt_arms) + 1
                model.eval()
                comps = generate(model, p_ids, p_valid, max_new, cfg.temperature, gen)
                comp_list = comps.cpu().tolist()
                rewards = np.array([reward(c, e.answer) for c, e in zip(comp_list, comp_examples, strict=True)])
                adv = group_advantages(rewards, g)
                upd = _grpo_update(model, ref, opt, cfg, p_ids, p_valid, comps, adv)

                if pool is None:
                    agent.observe(comp_arms, rewards, advantages=adv)
                else:  # each completion's training-set row: the pass rates inside an arm
                    agent.observe(comp_arms, rewards, advantages=adv, prompts=np.repeat(rows, g))
                acc: dict[str, float | None] = {}
                abs_adv: dict[str, float | None] = {}
                cnt: dict[str, int] = {}
                arr = np.array(comp_arms)
                for a in arms:
                    sel = arr == a
                    cnt[a] = int(sel.sum()) // g
                    acc[a] = float(rewards[sel].mean()) if sel.any() else None
                    abs_adv[a] = float(np.abs(adv[sel]).mean()) if sel.any() else None
                groups = rewards.reshape(-1, g)
                metrics = {
                    **upd,
                    "reward_mean": float(rewards.mean()),
                    "frac_zero_adv_groups": float((groups.std(axis=1) == 0).mean()),
                    "mean_len": float(completion_mask(comps).float().sum(dim=1).mean().item()),
                    "step_s": time.perf_counter() - ts,
                }
                agent.end_step(metrics=metrics)
                result.train_accuracy.append(acc)
                result.counts.append(cnt)
                result.probabilities.append(dict(probs))
                result.mean_abs_adv.append(abs_adv)
                result.metrics.append(metrics)
                result.steps_done = step + 1
                if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
                    record_eval(step + 1)
                if bar is not None:
                    last = result.eval_mean()[-1] if result.eval_accuracy else float("nan")
                    bar.set_postfix(acc=f"{metrics['reward_mean']:.2f}", eval_learnable=f"{last:.2f}")
                    bar.update(1)
    except KeyboardInterrupt:
        result.interrupted = True
        log.warning("interrupted at step %d", result.steps_done)
    finally:
        if bar is not None:
            bar.close()
        try:
            if result.interrupted and (not result.eval_steps or result.eval_steps[-1] != result.steps_done):
                record_eval(result.steps_done)  # where it stopped, sent before run_end
        finally:
            # Flushes whatever the agent still holds, however the loop ended; a stop asked for by
            # Ctrl-C (handled above, or at a step boundary) is an interrupted run, not a finished one.
            agent.close("interrupted" if result.interrupted else None)
            result.wall_s = time.perf_counter() - t0
    return result
