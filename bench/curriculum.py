"""Curriculum benchmark: the same GRPO budget under each scheduler, over several seeds.

Every run trains the demo policy (``trainer_agent.demo``) on the default task mixture (easy arms
solved by the warm-up, learnable arms, arms too hard for the budget) for the same number of steps and
completions, from the same fixed training set (``--pool`` prompts per arm, drawn through
``agent.sampler``); only the curriculum differs. Warm-ups are shared per seed (cached), so all rows of a
seed start from the very same policy.

Rows: a scheduler by name (its defaults; ``staged`` is told the mixture's easy -> learnable -> hard
order), ``dump+pass_rate`` (dump between arms, ``within_arm="pass_rate"`` inside them: prompts near a
0.5 pass rate), and ``dump+warm`` (dump warm-started from the previous seed's dump run's per-arm
statistics, ``CurriculumAgent(warm_start=...)``; run after the dump rows).

Reported per scheduler, over seeds: steps until the mean greedy accuracy over the learnable arms
first reaches ``--target`` (median, spread, how many seeds got there), final accuracy per arm, and
the share of prompts that went to learnable arms. The target is in the direction of the DUMP paper
(Wang et al. 2025, "DUMP: Automated Distribution-Level Curriculum Learning for RL-based LLM
Post-training"): dump should reach it in fewer steps than uniform.

    python bench/curriculum.py                       # defaults: 9 rows x 5 seeds
    python bench/curriculum.py --seeds 2 --steps 60  # a quick look

Writes bench/out/curriculum.png (mean learnable accuracy over steps) and bench/out/curriculum.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trainer_agent.demo.grpo import DemoConfig, build_agent, build_policy, train
from trainer_agent.demo.tasks import DEFAULT_ROLES

SCHEDULERS = ("uniform", "dump", "sec", "learning_progress", "balanced", "staged", "cyclical", "dump+pass_rate",
              "dump+warm")


def row_config(row: str, base: DemoConfig, seed: int, warm: dict[int, Any],
               stages: list[list[str]] | None = None) -> DemoConfig:
    """The run of `row` for `seed`; `warm`: seed -> that seed's dump run's warm-start summary."""
    scheduler, _, variant = row.partition("+")
    cfg = replace(base, scheduler=scheduler, scheduler_params=scheduler_params(scheduler, base, stages),
                  seed=seed, run=f"bench-{row}-{seed}")
    if variant == "pass_rate":
        return replace(cfg, within_arm="pass_rate")
    if variant == "warm":
        return replace(cfg, warm_start=warm[(seed - 1) % len(warm)])
    if variant:
        raise SystemExit(f"unknown row {row!r}: a scheduler, or dump+pass_rate, dump+warm")
    return cfg


# Mixtures: arm -> role (easy: solved by the warm-up; learnable; hard: out of reach in the budget), and for
# a prerequisite chain the stages a staged curriculum is told (one level each). `default` is the demo's.
MIXTURES: dict[str, tuple[dict[str, str], list[list[str]] | None]] = {
    "default": (dict(DEFAULT_ROLES), None),
    # many solved arms: four the warm-up already solves, two learnable
    "solved": ({"copy2": "easy", "rev3": "easy", "sort3": "easy", "add1": "easy", "rev4": "learnable",
                "sort4": "learnable"}, None),
    # many hopeless arms: two learnable among seven out of reach
    "hopeless": ({"rev4": "learnable", "sort4": "learnable", "add2": "hard", "rev5": "hard", "add3": "hard",
                  "rev10": "hard", "rev6": "hard", "sort6": "hard", "add4": "hard"}, None),
    # a prerequisite chain: reversal by length, each level the next one's stepping stone
    "chain": ({"rev3": "easy", "rev4": "learnable", "rev5": "learnable", "rev6": "hard"},
              [["rev3"], ["rev4"], ["rev5"], ["rev6"]]),
}


def scheduler_params(name: str, cfg: DemoConfig, stages: list[list[str]] | None = None) -> dict[str, Any]:
    """The parameters of a row: `staged` is given the mixture's order (`stages`, else easy -> learnable -> hard
    arms: what a staged curriculum is told), and moves on when a stage passes 0.8 accuracy; the others their
    defaults (`cyclical`: dump and uniform, 50 steps each)."""
    if name == "staged":
        if stages is None:
            stages = [[a for a in cfg.arms if cfg.role(a) == role] for role in ("easy", "learnable", "hard")]
        return {"stages": [s for s in stages if s], "gate": 0.8, "gate_steps": 5}
    return {}


def _warmup(cfg: DemoConfig) -> float:
    """Fill the warm-up cache for one seed (so parallel runs of that seed do not all redo it)."""
    import torch

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads or 1)
    build_policy(cfg, torch.device("cpu"))
    return time.perf_counter() - t0


def _run(job: tuple[str, DemoConfig]) -> dict[str, Any]:
    """One training run; returns what the table and plot need (plain data, picklable)."""
    row, cfg = job
    agent = build_agent(cfg)
    res = train(cfg, agent)
    counts = np.array([[c[a] for a in res.arms] for c in res.counts], dtype=float)
    learnable = [i for i, a in enumerate(res.arms) if res.roles[a] == "learnable"]
    return {
        "scheduler": row,
        "warm_start": agent.warm_start_summary() if row == "dump" else None,  # type: ignore[attr-defined]
        "seed": cfg.seed,
        "arms": res.arms,
        "roles": res.roles,
        "eval_steps": res.eval_steps,
        "eval_accuracy": res.eval_accuracy,
        "learnable_mean": res.eval_mean("learnable"),
        "learnable_share": float(counts[:, learnable].sum() / max(1.0, counts.sum())),
        "prompts_per_arm": dict(zip(res.arms, counts.sum(axis=0).tolist(), strict=True)),
        "wall_s": res.wall_s,
    }


def steps_to_target(run: dict[str, Any], target: float) -> float:
    """First evaluated step at which the learnable mean reaches ``target`` (inf if never)."""
    for step, acc in zip(run["eval_steps"], run["learnable_mean"], strict=True):
        if acc >= target:
            return float(step)
    return float("inf")


def _fmt_steps(x: float, steps: int) -> str:
    return f">{steps}" if np.isinf(x) else f"{x:.0f}"


def table(runs: list[dict[str, Any]], schedulers: list[str], target: float, steps: int) -> str:
    """The benchmark's text table."""
    arms: list[str] = runs[0]["arms"]
    roles: dict[str, str] = runs[0]["roles"]
    learnable = [a for a in arms if roles[a] == "learnable"]
    head = (
        f"{'scheduler':<18} {'steps→' + format(target, '.2f'):>10} {'[min, max]':>12} {'reached':>8} "
        f"{'final lrn':>11} {'lrn share':>9} " + " ".join(f"{a:>6}" for a in arms)
    )
    lines = [
        f"target: mean greedy accuracy over learnable arms {learnable} >= {target}; "
        f"{steps} steps; median over seeds (final: mean ± std)",
        "roles: " + ", ".join(f"{a}={roles[a]}" for a in arms),
        head,
        "-" * len(head),
    ]
    medians: dict[str, float] = {}
    for s in schedulers:
        rs = [r for r in runs if r["scheduler"] == s]
        if not rs:
            continue
        st = sorted(steps_to_target(r, target) for r in rs)
        med = float(np.median(st)) if not np.isinf(st[len(st) // 2]) else float("inf")
        medians[s] = med
        final = [r["learnable_mean"][-1] for r in rs]
        per_arm = " ".join(f"{np.mean([r['eval_accuracy'][-1][a] for r in rs]):>6.2f}" for a in arms)
        share = np.mean([r["learnable_share"] for r in rs])
        reached = sum(not np.isinf(x) for x in st)
        spread = f"[{_fmt_steps(st[0], steps)}, {_fmt_steps(st[-1], steps)}]"
        lines.append(
            f"{s:<18} {_fmt_steps(med, steps):>10} {spread:>12} {reached:>4}/{len(rs):<3} "
            f"{np.mean(final):>5.2f}±{np.std(final):<5.2f} {share:>9.2f} {per_arm}"
        )
    start = np.mean([r["learnable_mean"][0] for r in runs])
    lines.append(f"learnable mean after warm-up (step 0): {start:.2f}")
    for new, old in (("dump", "uniform"), ("dump+pass_rate", "dump"), ("dump+warm", "dump")):
        if new not in medians or old not in medians:
            continue
        d, u = medians[new], medians[old]
        if np.isinf(u) and np.isinf(d):
            lines.append(f"{new}/{old} steps ratio: n/a (neither median reached the target)")
        elif np.isinf(d):
            lines.append(f"{new}/{old} steps ratio: > {steps / u:.2f} ({new} median did not reach it; {old}: {u:.0f})")
        elif np.isinf(u):
            lines.append(f"{new}/{old} steps ratio: < {d / steps:.2f} ({old} median did not reach it)")
        else:
            lines.append(f"{new}/{old} steps ratio (medians): {d / u:.2f}")
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], schedulers: list[str], target: float, path: Path) -> None:
    """Mean (± std over seeds) learnable accuracy over steps, one line per scheduler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for s in schedulers:
        rs = [r for r in runs if r["scheduler"] == s]
        if not rs:
            continue
        x = np.array(rs[0]["eval_steps"])
        y = np.array([r["learnable_mean"] for r in rs])
        m, sd = y.mean(axis=0), y.std(axis=0)
        ax.plot(x, m, label=f"{s} (n={len(rs)})")
        ax.fill_between(x, m - sd, m + sd, alpha=0.15)
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("greedy accuracy, mean over learnable arms")
    ax.set_title("Curriculum schedulers on the demo task mixture (mean ± std over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    """Run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--schedulers", default=",".join(SCHEDULERS))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=DemoConfig.steps)
    p.add_argument("--target", type=float, default=0.7)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-per-arm", type=int, default=100)
    p.add_argument("--workers", type=int, default=2, help="parallel runs, one torch thread each")
    p.add_argument("--mixture", choices=sorted(MIXTURES), default="default",
                   help="the task mixture: default (3 solved, 2 learnable, 4 hard), solved (4 solved, 2 "
                        "learnable), hopeless (2 learnable, 7 hard), chain (rev3 -> rev4 -> rev5 -> rev6)")
    p.add_argument("--pool", type=int, default=200, help="training prompts per arm (a fixed set per seed)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    schedulers = [s.strip() for s in args.schedulers.split(",") if s.strip()]
    roles, stages = MIXTURES[args.mixture]
    base = DemoConfig(
        arms=tuple(roles),
        roles=roles,
        steps=args.steps,
        eval_every=args.eval_every,
        eval_per_arm=args.eval_per_arm,
        threads=1,
        warmup_cache=str(args.out / "warmup-cache"),
        pool_per_arm=args.pool,
    )
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")  # fresh interpreters: no torch thread pools inherited from a fork
    with ctx.Pool(args.workers) as pool:
        seeds = range(args.seeds)
        warmup_s = pool.map(_warmup, [replace(base, seed=s) for s in seeds])
        print(f"warm-ups: {len(warmup_s)} seeds, {statistics.mean(warmup_s):.0f}s each", flush=True)
        runs: list[dict[str, Any]] = []
        first = [r for r in schedulers if r != "dump+warm"]
        if "dump+warm" in schedulers and "dump" not in first:
            first.append("dump")  # the runs dump+warm starts from
        warm: dict[int, Any] = {}
        for phase in (first, [r for r in schedulers if r == "dump+warm"]):
            jobs = [(r, row_config(r, base, seed, warm, stages)) for seed in seeds for r in phase]
            for r in pool.imap_unordered(_run, jobs):
                runs.append(r)
                if r["warm_start"] is not None:
                    warm[r["seed"]] = r["warm_start"]
                print(
                    f"[{len(runs)}] {r['scheduler']:<18} seed {r['seed']} "
                    f"final learnable {r['learnable_mean'][-1]:.2f} ({r['wall_s']:.0f}s)",
                    flush=True,
                )
    wall = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        r.pop("warm_start")
    (args.out / "curriculum.json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": runs}, default=str)
    )
    plot(runs, schedulers, args.target, args.out / "curriculum.png")
    print()
    print(table(runs, schedulers, args.target, args.steps))
    print(f"\n{len(runs)} runs in {wall / 60:.1f} min with {args.workers} workers; plot: {args.out / 'curriculum.png'}")


if __name__ == "__main__":
    main()
