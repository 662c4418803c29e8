"""How the trainer sees its processes: one (:class:`LocalContext`) or a torch.distributed group.

The trainer is written against :class:`ProcessContext` only, so that the same loop runs in
one process and under ``torchrun`` (data-parallel ranks that mine on the global batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class ProcessContext(Protocol):
    """The processes taking part in one training run."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, logs and progress bars (rank 0)."""
        ...

    def shard(self, items: Sequence[int]) -> list[int]:
        """This rank's part of a global batch (every rank passes the same ``items``)."""
        ...

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order; the gradient flows back to this rank's rows."""
        ...

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        ...


class LocalContext:
    """A single process: the whole batch is local and nothing is exchanged."""

    rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        return True

    def shard(self, items: Sequence[int]) -> list[int]:
        return list(items)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        return local

    def barrier(self) -> None:
        return None
