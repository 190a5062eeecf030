"""A torch Sampler that follows the live curriculum and keeps the GRPO group layout.

Imported only by `CurriculumAgent.sampler()`, so `import trainer_agent` never imports torch. It
knows nothing of the agent: it takes the arm list and a callable returning the probabilities in
force (an array indexed like the arms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from .errors import ConfigError
from .pass_rates import PassRateDraw
from .stats import FloatArray, IntArray, index_arms, to_numpy


class ArmSampler(Sampler[int]):
    """Yields dataset indices, each `group_size` times in a row, arm by the curriculum.

    The arm of each new chunk is drawn from `probabilities()` at the moment the chunk is drawn, so
    an override or a scheduler update between steps takes effect at the next chunk. With a
    DataLoader of `num_workers=0` that is the next batch; worker processes prefetch
    `prefetch_factor` batches ahead, which delays a change by that much.
    Arms without any dataset item are never drawn (their probability is shared by the others).

    Args:
        arms: the arm names, in the order `probabilities()` follows.
        probabilities: returns the probability of each arm now in force.
        dataset_arms: the arm of each dataset item, indexed like the dataset.
        group_size: completions per prompt (G).
        prompts_per_chunk: prompts drawn per look at the probabilities.
        num_samples: indices per epoch (default: len(dataset_arms) * group_size).
        seed: seed of the index draws.
        within: how a prompt of the drawn arm is chosen; None: a seeded permutation of the arm's items,
            reshuffled when exhausted (uniform, without replacement); a `PassRateDraw`: by pass rate.
    """

    def __init__(self, arms: Sequence[str], probabilities: Callable[[], FloatArray],
                 dataset_arms: Sequence[str] | Any, group_size: int, *, prompts_per_chunk: int = 1,
                 num_samples: int | None = None, seed: int = 0, within: PassRateDraw | None = None) -> None:
        if int(group_size) < 1:
            raise ConfigError(f"group_size must be >= 1, got {group_size!r}")
        if int(prompts_per_chunk) < 1:
            raise ConfigError(f"prompts_per_chunk must be >= 1, got {prompts_per_chunk!r}")
        if not isinstance(dataset_arms, np.ndarray):
            dataset_arms = list(dataset_arms) if not hasattr(dataset_arms, "detach") else to_numpy(dataset_arms)
        arm_of: IntArray = index_arms(dataset_arms, {a: i for i, a in enumerate(arms)})
        if arm_of.size == 0:
            raise ConfigError("the dataset is empty")
        self.probabilities = probabilities
        self.group_size = int(group_size)
        self.prompts_per_chunk = int(prompts_per_chunk)
        self.num_samples = int(num_samples) if num_samples is not None else arm_of.size * self.group_size
        if self.num_samples < 0:
            raise ConfigError(f"num_samples must be >= 0, got {num_samples!r}")
        self.seed = int(seed)
        self.within = within
        self.epoch = 0
        self._items: list[IntArray] = [np.flatnonzero(arm_of == j) for j in range(len(arms))]
        self._has_items = np.array([it.size > 0 for it in self._items])

    def set_epoch(self, epoch: int) -> None:
        """Reseed for `epoch` (as DistributedSampler does), so each epoch draws a new sequence."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _draw_arm(self, rng: np.random.Generator) -> int:
        p = np.where(self._has_items, self.probabilities(), 0.0)
        total = p.sum()
        if total <= 0:
            # Every arm in force has no data: fall back to the arms that do, rather than stall.
            p = self._has_items.astype(np.float64)
            total = p.sum()
        cdf = np.cumsum(p)
        return int(np.searchsorted(cdf, rng.random() * total, side="right"))

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        perms: list[IntArray] = [rng.permutation(it) for it in self._items]
        pos = [0] * len(perms)
        emitted = 0
        while emitted < self.num_samples:
            for _ in range(self.prompts_per_chunk):
                j = self._draw_arm(rng)
                if self.within is not None:
                    idx = self.within.pick(j, self._items[j], rng)
                else:
                    if pos[j] >= perms[j].size:
                        perms[j] = rng.permutation(self._items[j])
                        pos[j] = 0
                    idx = int(perms[j][pos[j]])
                    pos[j] += 1
                for _ in range(self.group_size):
                    if emitted >= self.num_samples:
                        return
                    yield idx
                    emitted += 1
