"""`CurriculumAgent`: the one object a GRPO loop talks to."""

from __future__ import annotations

import collections
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import check_arms, generator_from_state, int_array, int_value, list_of, mapping, require
from .distributed import DistContext
from .errors import CommandError, ConfigError, ObservationError
from .inputs import arms_with_metadata, clean_metrics, eval_value
from .overrides import Ack, Command, Overrides
from .pass_rates import PassRateDraw, PromptPassRates, check_within_arm
from .protocol import (
    MAX_STEP,
    RunEndStatus,
    eval_message,
    eval_name_problem,
    run_name_problem,
    run_start_message,
)
from .recent import WarmStart
from .run_status import current_status, status_of
from .scheduler_control import SchedulerControl, apply_command, check_command
from .schedulers import Scheduler, make_scheduler
from .signals import GroupRecords, prompt_keys
from .stats import FloatArray, ObservationBuffer, StepObservations, grpo_groups, index_arms, to_numpy
from .step_stats import StepStats

if TYPE_CHECKING:
    from .sampler import ArmSampler
    from .transport import Transport

log = logging.getLogger("trainer_agent")

# Version of the dict `CurriculumAgent.state_dict()` returns; `load_state_dict` refuses others.
STATE_VERSION = 1


class CurriculumAgent:
    """Decides which arm each prompt comes from, learns from rewards, streams and takes overrides.

    Args:
        run: run name, unique per project.
        arms: arm names, or a mapping name -> metadata (shown in the UI).
        scheduler: a registered scheduler name (`available_schedulers()`) or a `Scheduler` instance.
        scheduler_params: keyword parameters of the named scheduler.
        redis_url: where to stream; None keeps everything local (nothing is sent, nothing is read).
        seed: seed of `sample()` and of `sampler()`.
        config: free-form run metadata shown in the UI.
        project: project the run belongs to.
        threshold: a completion counts as correct when its reward is above this.
        key_prefix: prefix of every Redis key.
        spool_dir: where messages wait while Redis is unreachable (default: a temp dir per run).
        spool_max_bytes: the most the spool holds (default: STEERBOARD_SPOOL_MAX_BYTES or 256 MiB); past it
            its oldest steps are thinned (older stretches sparser, the newest steps, run_start, run_end,
            acks and evaluations all kept) and counted in the steps' `dropped`.
        heartbeat_s: seconds between heartbeats while streaming.
        close_timeout: seconds `close()` waits to flush before giving up (never hangs).
        distributed: reduce over `torch.distributed` (rank 0 decides and broadcasts; only rank 0
            streams). None: when a process group with more than one rank is initialised. Every rank
            must call `end_step()` the same number of times; overrides are applied from rank 0.
        start_step: the number of the first step this agent reports. A job resuming a run passes
            the step it resumes at, so that its steps do not reuse numbers the server already holds
            (it keeps the first write of each step). `load_state_dict` sets the step too, and wins.
        prompt_window: steps over which the pass-rate profile of prompts is kept (`observe(prompts=)`).
        scheduler_snapshot_s: while streaming, the scheduler's state is sent at the first step, at every
            step a scheduler command changed it, and otherwise at most this often (the server previews
            scheduler commands from the latest one; 0: every step).
        warm_start: an earlier run's per-arm statistics to start the scheduler from (`recent.WarmStart`:
            `SteerboardClient.warm_start(run)` or another agent's `warm_start_summary()`); the run's config
            records it as `warm_start_from`.

    Example:
        >>> agent = CurriculumAgent(run="doc", arms=["easy", "hard"], scheduler="dump", redis_url=None)
        >>> arms = agent.sample(4)
        >>> agent.observe(arms, rewards=[1, 0, 1, 1], groups=[0, 0, 1, 1])
        >>> stats = agent.end_step(metrics={"loss": 0.3})
        >>> round(sum(agent.probabilities().values()), 9)
        1.0
        >>> agent.close()

    Resuming a run (e.g. from a training checkpoint):
        >>> state = agent.state_dict()  # plain JSON-able Python: torch.save it or json.dump it
        >>> again = CurriculumAgent(run="doc", arms=["easy", "hard"], scheduler="dump", redis_url=None)
        >>> again.load_state_dict(state)
        >>> again.step, again.probabilities() == agent.probabilities()
        (1, True)
    """

    def __init__(
        self,
        run: str,
        arms: Sequence[str] | Mapping[str, Mapping[str, Any]],
        scheduler: str | Scheduler = "uniform",
        scheduler_params: Mapping[str, Any] | None = None,
        redis_url: str | None = None,
        seed: int = 0,
        config: Mapping[str, Any] | None = None,
        *,
        project: str = "default",
        threshold: float = 0.5,
        key_prefix: str = "steerboard:",
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int | None = None,
        heartbeat_s: float = 5.0,
        close_timeout: float = 5.0,
        distributed: bool | None = None,
        start_step: int = 0,
        prompt_window: int = 50,
        scheduler_snapshot_s: float = 1.0,
        warm_start: WarmStart | None = None,
    ) -> None:
        problem = run_name_problem(run)
        if problem is not None:
            raise ConfigError(problem)
        self.arm_metadata: dict[str, dict[str, Any]] = arms_with_metadata(arms)
        names = list(self.arm_metadata)
        if not _is_step(start_step):
            raise ConfigError(f"start_step must be an integer in [0, {MAX_STEP}] (the first step this agent "
                              f"reports), got {start_step!r}")
        self.run = run
        self.project = project
        self.arms: tuple[str, ...] = tuple(names)
        self._index = {a: i for i, a in enumerate(self.arms)}
        if isinstance(scheduler, Scheduler):
            if scheduler_params:
                raise ConfigError("scheduler_params apply to a scheduler given by name only")
            scheduler.bind(self.arms)
        else:
            scheduler = make_scheduler(scheduler, self.arms, scheduler_params)
        self.config = dict(config or {})
        if warm_start is not None:  # an earlier run's per-arm statistics (recent.WarmStart)
            scheduler.warm_start(warm_start.summary_for(self.arms))
            self.config["warm_start_from"] = warm_start.run  # the run page says which run it started from
        self._control = SchedulerControl(scheduler)
        self._snapshot_s = float(scheduler_snapshot_s)
        self._snapshot_at, self._snapshot_version = -math.inf, -1
        self.seed = int(seed)
        self.step = int(start_step)
        self.threshold = float(threshold)
        self._rng = np.random.default_rng(self.seed)
        if not isinstance(prompt_window, int) or prompt_window < 1:
            raise ConfigError(f"prompt_window must be an integer >= 1, got {prompt_window!r}")
        self._buffer = ObservationBuffer(len(self.arms), self.threshold, prompt_window)
        self._pass_rates: PromptPassRates | None = None  # per prompt, once a sampler draws by pass rate
        self._overrides = Overrides(self.arms)
        self._local_commands: collections.deque[Command] = collections.deque()
        self._set_p(self._overrides.resolve(self._control.probabilities(self._overrides.active)))
        self._t0 = time.time()
        self._closed = False
        self._dist = DistContext.detect(distributed)
        self.rank = 0 if self._dist is None else self._dist.rank
        self._transport: Transport | None = None
        if redis_url is not None and self.rank == 0:
            from .transport import Transport

            self._transport = Transport(
                redis_url=redis_url, run=run, key_prefix=key_prefix, spool_dir=spool_dir,
                heartbeat_s=heartbeat_s, close_timeout=close_timeout, last_step=self.step - 1,
                spool_max_bytes=spool_max_bytes,
            )
            self._transport.start(self._run_start_message())

    def warm_start_summary(self) -> WarmStart:
        """This run's per-arm statistics (recent steps), for another run's `warm_start=`."""
        return WarmStart.from_summary(self.run, self.arms, self._control.recent.summary())

    # -- the training loop ---------------------------------------------------------------------
    def sample(self, n: int) -> list[str]:
        """Draw `n` arm names for the next prompts from the probabilities in force (seeded).

        Args:
            n: number of prompts.
        """
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        u = self._rng.random(n) * self._cdf[-1]
        idx = self._cdf.searchsorted(u, side="right")
        arms = self.arms
        return [arms[i] for i in idx.tolist()]

    def observe(self, arms: Any, rewards: Any, advantages: Any = None, groups: Any = None,
                prompts: Any = None) -> None:
        """Record completions of this step: one arm, reward (and advantage or group id) each.

        Args:
            arms: arm name of each completion (list, numpy array).
            rewards: reward of each completion (list, numpy array or torch tensor).
            advantages: advantage of each completion; when None, GRPO advantages are computed from
                `rewards` and `groups`.
            groups: group (prompt) id of each completion: the GRPO advantages when `advantages` is
                None, and each arm's share of zero-variance groups (all rewards equal) either way.
            prompts: the prompt (dataset item) id of each completion, ints or strings: each arm's
                pass-rate profile of the prompts seen in the last `prompt_window` steps. Without
                `groups`, the completions of one prompt in this call are its group.
        """
        idx = index_arms(arms, self._index)
        r = to_numpy(rewards, np.float64)
        if r.size != idx.size:
            raise ObservationError(f"{idx.size} arms but {r.size} rewards")
        keys = g = summary = None
        if prompts is not None:
            pr = to_numpy(prompts)
            if pr.size != idx.size:
                raise ObservationError(f"{idx.size} arms but {pr.size} prompt ids")
            keys = prompt_keys(pr)
            if self._pass_rates is not None:
                self._pass_rates.observe_completions(pr, r, self.threshold)
        if groups is not None or keys is not None:
            g = to_numpy(groups) if groups is not None else keys
            assert g is not None
            if g.size != idx.size:
                raise ObservationError(f"{idx.size} arms but {g.size} group ids")
        if advantages is not None:
            adv = to_numpy(advantages, np.float64)
            if adv.size != idx.size:
                raise ObservationError(f"{idx.size} arms but {adv.size} advantages")
        elif g is not None:
            adv, summary = grpo_groups(r, g)
        else:
            raise ObservationError("give advantages, or group ids to compute GRPO advantages from")
        self._buffer.add(idx, r, adv, g, summary, keys)

    def end_step(self, metrics: Mapping[str, Any] | None = None) -> StepStats:
        """Close the step: update the scheduler, apply pending commands, stream, return the stats.

        Args:
            metrics: trainer metrics of this step (name -> number), streamed with the step.
        """
        if self._dist is not None:
            return self._end_step_distributed(metrics)
        obs = self._buffer.reduce()
        n_invalid, self._buffer.n_invalid = self._buffer.n_invalid, 0
        stats = self._decide(obs, n_invalid, metrics)
        if self._transport is not None:
            self._stream(stats)
        self.step += 1
        return stats

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler in force (a `switch` command replaces it)."""
        return self._control.scheduler

    def _stream(self, stats: StepStats) -> None:
        """Send the step, and the scheduler's snapshot when it is due (docs/wire.md, `scheduler`)."""
        assert self._transport is not None
        self._transport.send_step(stats)
        control = self._control
        if control.version != self._snapshot_version or time.monotonic() - self._snapshot_at >= self._snapshot_s:
            self._snapshot_at, self._snapshot_version = time.monotonic(), control.version
            self._transport.send(control.snapshot(stats.step))

    def _end_step_distributed(self, metrics: Mapping[str, Any] | None) -> StepStats:
        assert self._dist is not None
        local = (*self._buffer.take(), self._buffer.n_invalid, self._buffer.take_groups())
        self._buffer.n_invalid = 0
        gathered = self._dist.gather_to_main(local)
        stats: StepStats | None = None
        if gathered is not None:  # rank 0 decides
            arms = np.concatenate([g[0] for g in gathered])
            rewards = np.concatenate([g[1] for g in gathered])
            abs_adv = np.concatenate([g[2] for g in gathered])
            groups = GroupRecords.concat([g[4] for g in gathered if g[4] is not None])
            obs = self._buffer.reduce_arrays(arms, rewards, abs_adv, groups)
            stats = self._decide(obs, sum(int(g[3]) for g in gathered), metrics)
            if self._transport is not None:
                self._stream(stats)
        stats = self._dist.broadcast_from_main(stats)
        assert stats is not None
        if self.rank != 0:
            # Rank 0 applied the overrides: these are the probabilities in force, as they are.
            self._buffer.n_total[:] = stats.obs.n_total
            self._set_p(stats.p)
        # Rank 0 numbers the steps: every rank follows it, whatever start_step each was given.
        self.step = stats.step + 1
        return stats

    def _decide(self, obs: StepObservations, n_invalid: int, metrics: Mapping[str, Any] | None) -> StepStats:
        """Update the scheduler, apply commands, set the probabilities in force; the step's stats."""
        if n_invalid:
            log.warning("step %d: dropped %d completions with non-finite reward/advantage", self.step, n_invalid)
        self._control.update(obs)
        expired = self._overrides.tick()
        acks = self._apply_commands()
        self._set_p(self._overrides.resolve(self._control.probabilities(self._overrides.active)))
        scheduler = self._control.scheduler
        score = scheduler.scores()
        ov = self._overrides
        stats = StepStats(
            step=self.step, ts=time.time(), arms=self.arms, p=self._p,
            score=None if score is None else np.array(score, dtype=np.float64),
            parts=scheduler.parts(), obs=obs,
            overrides=ov.snapshot(),
            acks=acks, metrics=clean_metrics(metrics), n_invalid=n_invalid, expired=expired,
        )
        return stats

    def log_eval(self, results: Mapping[str, Any], *, n: int | Mapping[str, int] | None = None,
                 name: str = "eval", step: int | None = None) -> dict[str, float]:
        """Report an evaluation, per arm: the outcome to judge a curriculum by, shown live on the run
        page and used by the compare page. Only rank 0 sends it.

        Args:
            results: arm -> accuracy in [0, 1], or `(correct, total)`, or `{"correct": c, "total": t}`.
                Arms need not be training arms (a held-out domain is fine).
            n: examples per arm behind accuracies given as fractions (one count, or arm -> count).
            name: the evaluation set ("heldout", "aime24"); several sets may be logged at one step.
            step: the step it belongs to; default: the steps completed so far (0 before training,
                as a baseline), as TRL's `global_step` counts.

        Returns:
            arm -> accuracy, as sent. A ConfigError names an invalid arm name or value.

        Example:
            >>> agent = CurriculumAgent("doc-eval", ["easy", "hard"], redis_url=None)
            >>> agent.log_eval({"easy": 0.9, "hard": (3, 10)}, n=100, name="heldout")
            {'easy': 0.9, 'hard': 0.3}
        """
        if (problem := eval_name_problem(name)) is not None:
            raise ConfigError(problem)
        step = self.step if step is None else step
        if not _is_step(step):
            raise ConfigError(f"step must be an integer in [0, {MAX_STEP}], got {step!r}")
        if not isinstance(results, Mapping) or not results:
            raise ConfigError("results must be a non-empty mapping arm -> accuracy or (correct, total)")
        records, out = [], {}
        for arm, value in results.items():
            count = n.get(arm) if isinstance(n, Mapping) else n
            accuracy, correct, total = eval_value(arm, value, count)
            out[arm] = accuracy
            records.append({"arm": arm, "accuracy": accuracy, "correct": correct, "total": total})
        if self._transport is not None:
            self._transport.send(eval_message(name, int(step), records))
        return out

    def probabilities(self) -> dict[str, float]:
        """The probability of each arm now in force (overrides included)."""
        return dict(zip(self.arms, self._p.tolist(), strict=True))

    # -- overrides -----------------------------------------------------------------------------
    def pin(self, arm: str, p: float, *, reason: str = "") -> str:
        """Give `arm` exactly probability `p` from the next step on. Returns the command id."""
        return self._command(Command("pin", arm, float(p), reason=reason))

    def boost(self, arm: str, factor: float, steps: int | None = None, *, reason: str = "") -> str:
        """Multiply `arm`'s scheduler probability by `factor` (for `steps` steps when given)."""
        return self._command(Command("boost", arm, float(factor), steps, reason=reason))

    def retire(self, arm: str, *, reason: str = "") -> str:
        """Stop sampling `arm` (probability exactly 0) until `restore`."""
        return self._command(Command("retire", arm, reason=reason))

    def restore(self, arm: str, *, reason: str = "") -> str:
        """Undo `retire`."""
        return self._command(Command("restore", arm, reason=reason))

    def release(self, arm: str, *, reason: str = "") -> str:
        """Clear the pin and boost of `arm`."""
        return self._command(Command("release", arm, reason=reason))

    # -- the scheduler ---------------------------------------------------------------------------
    def set_scheduler_params(self, *, reason: str = "", **params: Any) -> str:
        """Change parameters of the scheduler in force from the next step on (e.g. `temperature=0.2`)."""
        return self._command(Command("set_params", "", params=params, reason=reason))

    def switch_scheduler(self, name: str, *, reason: str = "", **params: Any) -> str:
        """Switch to the scheduler registered as `name` from the next step on (docs/formulas.md, "switch")."""
        return self._command(Command("switch", "", scheduler=name, params=params, reason=reason))

    def freeze(self, *, reason: str = "") -> str:
        """Hold the scheduler's probabilities as they are at the next step (overrides still apply)."""
        return self._command(Command("freeze", "", reason=reason))

    def unfreeze(self, *, reason: str = "") -> str:
        """Let the scheduler's probabilities move again."""
        return self._command(Command("unfreeze", "", reason=reason))

    def _command(self, cmd: Command) -> str:
        check_command(cmd, self.arms)
        self._local_commands.append(cmd)
        return cmd.id

    def _apply_commands(self) -> list[Ack]:
        cmds: list[Command] = []
        while self._local_commands:
            cmds.append(self._local_commands.popleft())
        if self._transport is not None:
            cmds.extend(self._transport.take_commands())
        acks = []
        for cmd in cmds:
            ack = apply_command(self._overrides, self._control, cmd, self.step)
            if cmd.replay:
                continue
            acks.append(ack)
            if ack.status == "rejected":
                log.warning("command %s (%s %s) rejected: %s", cmd.id, cmd.kind, cmd.arm or "-", ack.message)
            else:
                log.info("command %s applied at step %d: %s", cmd.id, self.step, ack.message)
        if self._transport is not None and acks:
            self._transport.send_acks(acks)
        return acks

    def _set_p(self, p: FloatArray) -> None:
        """Put `p` (overrides already applied) in force for `sample()` and the sampler."""
        self._p = p
        self._cdf = p.cumsum()

    def _probabilities_array(self) -> FloatArray:
        return self._p

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly, as plain JSON-able Python.

        The next step number, what the scheduler has learned, each arm's all-time completions, the
        state of `sample()`'s random generator, the overrides in force (with each boost's steps
        left) and the commands already answered or still queued. Lists, floats, ints and strings
        only, so it fits any checkpoint (`torch.save`, `json.dump`). In a multi-rank run, save the
        state of rank 0 (the rank that decides) and load it on every rank. Completions observed
        since the last `end_step()` are not part of it: save between steps.
        """
        if self._buffer.pending:
            log.warning("state_dict() called between observe() and end_step(): the completions observed "
                        "since the last end_step are not saved")
        bitgen = self._rng.bit_generator.state
        return {
            "version": STATE_VERSION,
            "run": self.run,
            "step": self.step,
            "arms": list(self.arms),
            "scheduler": self.scheduler.state_dict(),
            # Held probabilities, recent statistics, whether a command changed the scheduler.
            "scheduler_control": {k: v for k, v in self._control.state_dict().items() if k != "scheduler"},
            "n_total": self._buffer.n_total.tolist(),
            # 128-bit integers as strings: some JSON libraries stop at 64 bits.
            "rng": {
                "bit_generator": bitgen["bit_generator"],
                "state": {k: str(v) for k, v in bitgen["state"].items()},
                "has_uint32": int(bitgen["has_uint32"]),
                "uinteger": str(bitgen["uinteger"]),
            },
            "overrides": self._overrides.state_dict(),
            "pending_commands": [c.as_message() for c in self._local_commands],
            **({} if self._pass_rates is None else {"pass_rates": self._pass_rates.state_dict()}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from `state`, a `state_dict()` of an agent with the same arms and scheduler.

        Steps continue from the saved one (the state's step wins over `start_step`), and the
        probabilities in force are those in force when the state was saved. Call it before the
        first `end_step()`; commands an earlier process received from the server are still
        restored from Redis, and those the state has already answered are not applied twice.

        Args:
            state: what `state_dict()` returned (after a round trip through torch.save or JSON).

        Raises:
            ConfigError: the state was saved for other arms or another scheduler, or is malformed;
                the agent is then left as it was.
        """
        where = "agent state"
        state = mapping(state, where)
        version = state.get("version")
        if version != STATE_VERSION:
            raise ConfigError(f"{where}: unknown version {version!r} (this library reads version {STATE_VERSION})")
        check_arms(require(state, "arms", where), self.arms, "the agent state")
        sched_state = mapping(require(state, "scheduler", where), f"{where}: scheduler")
        saved_name = sched_state.get("name")
        # States saved before scheduler commands have no control state: nothing held, not commanded.
        control_state = mapping(state.get("scheduler_control", {"held": None, "recent": {"n_total": state.get(
            "n_total"), "steps": []}, "commanded": False}), f"{where}: scheduler_control")
        if saved_name != self.scheduler.name and control_state.get("commanded") is not True:
            raise ConfigError(f"the agent state was saved with scheduler {saved_name!r}; this agent runs "
                              f"{self.scheduler.name!r}")
        step = int_value(require(state, "step", where), f"{where}: step", 0, MAX_STEP)
        n_total = int_array(require(state, "n_total", where), f"{where}: n_total", len(self.arms))
        rng = generator_from_state(require(state, "rng", where), type(self._rng.bit_generator))
        overrides = Overrides(self.arms)
        overrides.load_state_dict(require(state, "overrides", where))
        pending: list[Command] = []
        for doc in list_of(require(state, "pending_commands", where), f"{where}: pending_commands"):
            try:
                cmd = Command.from_message(mapping(doc, f"{where}: pending command"))
                check_command(cmd, self.arms)
            except CommandError as e:
                raise ConfigError(f"{where}: pending command {doc!r}: {e}") from e
            pending.append(cmd)
        rates = None if state.get("pass_rates") is None else PromptPassRates.from_state(state["pass_rates"])
        # Last of the checks; it changes the scheduler only when the whole state fits.
        self._control.load_state_dict(control_state, sched_state)
        self._snapshot_version = -1
        self.step = step
        self._buffer.n_total[:] = n_total
        self._rng = rng
        self._overrides = overrides
        self._local_commands = collections.deque(pending)
        if rates is not None:
            self._pass_rates = rates
        self._set_p(self._overrides.resolve(self._control.probabilities(self._overrides.active)))
        if self._transport is not None:
            self._transport.note_step(step - 1)

    # -- sampler -------------------------------------------------------------------------------
    def sampler(self, dataset_arms: Sequence[str] | Any, group_size: int, *, prompts_per_chunk: int = 1,
                num_samples: int | None = None, seed: int | None = None, within_arm: str = "uniform",
                pass_rate_target: float = 0.5, pass_rate_width: float = 0.15, explore: float = 0.1,
                pass_rate_ema: float = 0.5) -> ArmSampler:
        """A `torch.utils.data.Sampler` over dataset indices that follows the live curriculum.

        Each chunk of `prompts_per_chunk` prompts is drawn from the probabilities in force at the
        moment it is drawn; every prompt index is yielded `group_size` times in a row (the GRPO
        layout). Within an arm, `within_arm="uniform"` takes prompts from a seeded permutation,
        reshuffled when exhausted; `"pass_rate"` prefers prompts whose pass rate is near
        `pass_rate_target`, learnt from `observe(..., prompts=dataset_indices)` (docs/formulas.md).

        Args:
            dataset_arms: the arm of each dataset item, indexed like the dataset.
            group_size: completions per prompt (G).
            prompts_per_chunk: prompts drawn per look at the probabilities.
            num_samples: indices per epoch (default: len(dataset_arms) * group_size).
            seed: seed of the index draws (default: the agent's seed).
            within_arm: "uniform" or "pass_rate"; then `pass_rate_target` (0.5: balanced difficulty
                filtering), `pass_rate_width` (the kernel's sigma), `explore` (share of draws that
                re-measure the arm's least recently seen prompts) and `pass_rate_ema` (`pass_rates.py`).

        Example:
            >>> agent = CurriculumAgent("doc-s", ["a", "b"], redis_url=None)
            >>> s = agent.sampler(["a", "b", "a"], group_size=2, num_samples=4)
            >>> idx = list(s); idx[0] == idx[1] and idx[2] == idx[3]
            True
        """
        from .sampler import ArmSampler

        check_within_arm(within_arm, pass_rate_target, pass_rate_width, explore, pass_rate_ema)
        within = None
        if within_arm == "pass_rate":
            if self._pass_rates is None:
                self._pass_rates = PromptPassRates(len(dataset_arms), pass_rate_ema)
            within = PassRateDraw(self._pass_rates, len(dataset_arms), pass_rate_target, pass_rate_width, explore)
        return ArmSampler(self.arms, self._probabilities_array, dataset_arms, group_size,
                          prompts_per_chunk=prompts_per_chunk, num_samples=num_samples,
                          seed=self.seed if seed is None else seed, within=within)

    @property
    def pass_rates(self) -> PromptPassRates | None:
        """Each prompt's moving-average pass rate, once a sampler draws by pass rate."""
        return self._pass_rates

    # -- lifecycle -----------------------------------------------------------------------------
    def _run_start_message(self) -> dict[str, Any]:
        return run_start_message(
            project=self.project, scheduler=self.scheduler.name, params=self.scheduler.params(),
            config=self.config, arms=[{"name": a, "metadata": self.arm_metadata[a]} for a in self.arms],
            host=socket.gethostname(), pid=os.getpid(),
        )

    def close(self, status: RunEndStatus | None = None) -> None:
        """Send `run_end` and flush what is queued, waiting at most `close_timeout` seconds.

        Args:
            status: how the run ended. None: from the exception in flight, if any (so a `close()`
                in a `finally` block is honest): none, `finished`; Ctrl-C or SIGTERM,
                `interrupted`; anything else, `failed`.
        """
        if self._closed:
            return
        if status is None:
            status = current_status()
        self._closed = True
        if self._transport is not None:
            self._transport.close(status=status, step=self.step - 1)

    def __enter__(self) -> CurriculumAgent:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(status_of(exc_type, exc))

    def __repr__(self) -> str:
        return (f"CurriculumAgent(run={self.run!r}, arms={len(self.arms)}, "
                f"scheduler={self.scheduler.name!r}, step={self.step})")


def _is_step(x: object) -> bool:
    # numpy integers are ints here too; bools are not, though Python counts them as ints.
    return isinstance(x, int | np.integer) and not isinstance(x, bool) and 0 <= int(x) <= MAX_STEP
