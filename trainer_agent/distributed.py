"""Multi-rank support over `torch.distributed`: rank 0 decides, every rank follows.

Each rank observes its own completions. At `end_step()` the per-completion arrays are gathered to
rank 0 (in rank order), which updates the scheduler, applies commands and computes the
probabilities; the result is broadcast so that every rank returns the same statistics and, with
the same seed, draws the same arms and dataset indices. Only rank 0 talks to Redis.
torch is imported only when a process group is in use.
"""

from __future__ import annotations

import sys
from typing import Any

from .errors import ConfigError


class DistContext:
    """The default process group, as the agent uses it."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.rank = int(dist.get_rank())
        self.world_size = int(dist.get_world_size())

    @classmethod
    def detect(cls, flag: bool | None) -> DistContext | None:
        """`flag` None: use torch.distributed when torch is already imported and a group is up."""
        if flag is False:
            return None
        if flag is None and "torch" not in sys.modules:
            return None
        try:
            import torch.distributed as dist
        except ImportError as e:
            if flag:
                raise ConfigError("distributed=True needs torch") from e
            return None
        up = dist.is_available() and dist.is_initialized()
        if flag and not up:
            raise ConfigError("distributed=True but torch.distributed is not initialised "
                              "(call torch.distributed.init_process_group first)")
        if not up or dist.get_world_size() < 2:
            return None
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def gather_to_main(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj`, in rank order, on rank 0; None elsewhere."""
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        self.dist.gather_object(obj, out, dst=0)
        return out

    def broadcast_from_main(self, obj: Any) -> Any:
        box = [obj if self.is_main else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]
