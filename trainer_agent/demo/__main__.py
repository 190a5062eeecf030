"""Command line of the demo trainer: ``python -m trainer_agent.demo --scheduler dump --steps 200``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .grpo import DemoConfig, DemoResult, train

log = logging.getLogger("trainer_agent.demo")


def _parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="python -m trainer_agent.demo",
        description="GRPO on a synthetic task mixture; the curriculum agent picks each prompt's arm.",
    )
    p.add_argument("--run", default=None, help="run name (default: demo-<scheduler>-<seed>)")
    p.add_argument("--project", default=d.project)
    p.add_argument("--scheduler", default=d.scheduler, help="uniform, fixed, dump, sec, learning_progress or balanced")
    p.add_argument("--scheduler-params", default="{}", help="JSON object of scheduler parameters")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--redis-url", default="none", help="redis://... to stream to Steerboard, or none")
    p.add_argument("--key-prefix", default="steerboard:", help="prefix of Steerboard's Redis keys")
    p.add_argument("--arms", default=",".join(d.arms), help="comma-separated arms, e.g. rev4,sort4")
    p.add_argument("--n-prompts", type=int, default=d.n_prompts)
    p.add_argument("--group-size", type=int, default=d.group_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--kl-coef", type=float, default=d.kl_coef)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--warmup-cache", default=None, help="directory to reuse identical warm-ups")
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    # One thread by default: the matrices are tiny, and on two shared cores two threads measured
    # 0.30 s median per step against 0.37 s, but with 3-9 s stalls whenever another process ran.
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--json-out", type=Path, default=None, help="write the per-step result here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The `DemoConfig` described by parsed command-line ``args``."""
    params = json.loads(args.scheduler_params)
    if not isinstance(params, dict):
        raise SystemExit("--scheduler-params must be a JSON object")
    return DemoConfig(
        run=args.run or f"demo-{args.scheduler}-{args.seed}",
        project=args.project,
        scheduler=args.scheduler,
        scheduler_params=params,
        redis_url=None if args.redis_url.lower() in ("", "none") else args.redis_url,
        key_prefix=args.key_prefix,
        seed=args.seed,
        arms=tuple(a.strip() for a in args.arms.split(",") if a.strip()),
        steps=args.steps,
        n_prompts=args.n_prompts,
        group_size=args.group_size,
        lr=args.lr,
        kl_coef=args.kl_coef,
        warmup_steps=args.warmup_steps,
        warmup_cache=args.warmup_cache,
        eval_every=args.eval_every,
        threads=args.threads,
        device=args.device,
    )


def summarize(result: DemoResult) -> str:
    """Per-arm greedy accuracy after warm-up and at the end, as a small text table."""
    first, last = result.eval_accuracy[0], result.eval_accuracy[-1]
    lines = [f"{'arm':<8} {'role':<10} {'start':>6} {'end':>6}"]
    for a in result.arms:
        lines.append(f"{a:<8} {result.roles[a]:<10} {first[a]:>6.2f} {last[a]:>6.2f}")
    lines.append(
        f"{result.steps_done} steps in {result.wall_s:.0f}s (warm-up {result.warmup_s:.0f}s)"
        + (", interrupted" if result.interrupted else "")
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo from command-line arguments; returns the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    result = train(cfg, progress=not args.no_progress, handle_sigint=True)
    log.info("greedy accuracy per arm:\n%s", summarize(result))
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result.to_json()))
        log.info("wrote %s", args.json_out)
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
