"""How the trainer sees its processes: one (:class:`LocalContext`) or a torch.distributed group.

The trainer is written against :class:`ProcessContext` only, so that the same loop runs in
one process and under ``torchrun`` (data-parallel ranks that mine on the global batch).

Gradient scaling under :class:`DistributedContext`: every rank computes the *same* global
loss from the gathered descriptors. :meth:`DistributedContext.gather`'s backward sums the
gradient of this rank's rows over the ranks (``world_size`` times the one-process
gradient), and DistributedDataParallel averages the parameter gradients over the ranks
(divides by ``world_size``): the update equals the one-process update on the same global
batch, also when the ranks hold different numbers of rows.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")

#: The torchrun variables that mark a process as one rank of a group.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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

    def all_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``values`` over the ranks (for logged metrics)."""
        ...

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a picklable object, e.g. the resume state)."""
        ...

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` ready for data-parallel training (unchanged in one process)."""
        ...


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous part of ``count`` items.

    Parts differ by at most one item, the first ``count % world_size`` ranks holding the
    larger ones; concatenated in rank order they give the items in their original order.
    """
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


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

    def all_mean(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def broadcast(self, value: T) -> T:
        return value

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def close(self) -> None:
        return None

    def __enter__(self) -> LocalContext:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _gather_rows(local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """All ranks' rows (``sizes[r]`` from rank ``r``) concatenated in rank order."""
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


class _GatherRows(torch.autograd.Function):
    """:func:`_gather_rows` with a gradient: the transpose of the gather.

    Backward sums the gradient of the whole gathered tensor over the ranks and hands each
    rank its own rows.
    """

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, sizes: list[int], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        return _gather_rows(local, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return total[start : start + ctx.sizes[ctx.rank]], None, None


class DistributedContext:
    """One rank of a torch.distributed process group (gloo on CPU, NCCL on CUDA).

    Build it with :func:`process_context`, which reads torchrun's environment; use it as a
    context manager so that the group is destroyed when training ends or fails.
    """

    def __init__(self, device: torch.device):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "DistributedContext: torch.distributed has no initialised process group "
                "(use process_context(), which starts it from torchrun's environment)"
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[int]) -> list[int]:
        """This rank's contiguous part of ``items`` (see :func:`shard_bounds`).

        Every rank must hold at least one item, since every rank runs forward and backward
        passes in each step; a smaller global batch is refused.
        """
        items = list(items)
        if len(items) < self.world_size:
            raise ValueError(
                f"items: a global batch of {len(items)} cannot be split over "
                f"{self.world_size} ranks (every rank needs at least one item; "
                "raise the batch size or use fewer processes)"
            )
        start, stop = shard_bounds(len(items), self.rank, self.world_size)
        return items[start:stop]

    def _sizes(self, rows: int) -> list[int]:
        counts = torch.tensor([rows], dtype=torch.int64, device=self.device)
        parts = [torch.empty_like(counts) for _ in range(self.world_size)]
        dist.all_gather(parts, counts)
        return [int(part.item()) for part in parts]

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows in rank order; backward sums over ranks into this rank's rows."""
        if not isinstance(local, torch.Tensor) or local.dim() == 0:
            raise ValueError(
                f"local: expected a tensor with a leading row dimension, got {type(local).__name__}"
                + (" of 0 dimensions" if isinstance(local, torch.Tensor) else "")
            )
        if local.device != self.device:
            raise ValueError(
                f"local: expected a tensor on {self.device} (this rank's device), "
                f"got one on {local.device}"
            )
        sizes = self._sizes(local.shape[0])
        if torch.is_grad_enabled() and local.requires_grad:
            return _GatherRows.apply(local, sizes, self.rank)
        with torch.no_grad():
            return _gather_rows(local, sizes)

    def barrier(self) -> None:
        dist.barrier()

    def all_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``values`` over the ranks (a new tensor, no gradient)."""
        if not isinstance(values, torch.Tensor) or not values.is_floating_point():
            raise ValueError(f"values: expected a floating-point tensor, got {values!r}")
        total = values.detach().to(self.device, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return (total / self.world_size).to(values.device)

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0, device=self.device)
        return holder[0]

    def wrap(self, model: nn.Module, *, find_unused_parameters: bool = True) -> nn.Module:
        """``model`` in DistributedDataParallel, its parameters and buffers copied from rank 0.

        Buffers are not broadcast at each forward (``forward_sync_buffers=False``): the ranks
        run different numbers of micro-batches, and the trainer freezes BatchNorm when
        micro-batches are tiny, so there are no running statistics to keep in step.
        ``find_unused_parameters`` lets a step leave some trainable parameters without
        gradient (a classifier layer the current loss does not use).
        """
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("model: has no trainable parameter to train data-parallel")
        device_ids = [self.device] if self.device.type == "cuda" else None
        return DistributedDataParallel(
            model,
            device_ids=device_ids,
            forward_sync_buffers=False,
            find_unused_parameters=find_unused_parameters,
        )

    def close(self) -> None:
        """Leave the process group (nothing waits for the other ranks: a failing rank exits)."""
        if dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is one rank of a group of several started by torchrun."""
    environ = dict(os.environ if environ is None else environ)
    missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
    if len(missing) == len(TORCHRUN_VARIABLES):
        return False
    if missing:
        raise RuntimeError(
            f"torchrun environment incomplete: {', '.join(missing)} not set "
            f"(expected all of {', '.join(TORCHRUN_VARIABLES)})"
        )
    return int(environ["WORLD_SIZE"]) > 1


def process_context(
    device: str | torch.device = "cpu", *, timeout: datetime.timedelta | None = None
) -> LocalContext | DistributedContext:
    """The context of this process: a rank of torchrun's group, or :class:`LocalContext`.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set, more than
    one process) the process group is started here: NCCL when ``device`` is CUDA (each rank
    then uses GPU ``LOCAL_RANK``, which plain ``"cuda"`` also means from here on), gloo
    otherwise. ``timeout`` bounds how long a collective waits for a missing rank.
    """
    device = torch.device(device)
    if device.type not in {"cpu", "cuda"}:
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {str(device)!r}")
    if not launched_by_torchrun():
        return LocalContext()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device: 'cuda' requested but torch sees no GPU")
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"device: rank with LOCAL_RANK={local_rank} has no GPU of its own "
                f"({torch.cuda.device_count()} visible); start at most that many processes per node"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    options: dict[str, Any] = {"backend": backend}
    if timeout is not None:
        options["timeout"] = timeout
    if backend == "nccl":
        options["device_id"] = device
    dist.init_process_group(**options)
    return DistributedContext(device)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, synchronise: bool) -> Iterator[None]:
    """Micro-batch accumulation under DDP: ``synchronise=False`` defers the gradient all-reduce.

    Run the forward *and* backward of every micro-batch but the last of a step inside
    ``gradient_sync(model, False)`` and the last inside ``gradient_sync(model, True)``; for a
    model that is not DistributedDataParallel this does nothing.
    """
    if synchronise or not isinstance(model, DistributedDataParallel):
        yield
    else:
        with model.no_sync():
            yield


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (for checkpoints, extraction, evaluation)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every BatchNorm layer in eval mode (running statistics fixed); returns how many.

    Tiny micro-batches (one image) give meaningless batch statistics, so the pretrained
    running statistics are used and kept; the affine weights still train. ``model.train()``
    undoes this: call it after every ``train()``.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            frozen += 1
    return frozen


def parallel_map(
    context: ProcessContext, count: int, compute: Callable[[list[int]], torch.Tensor]
) -> torch.Tensor:
    """``compute(indices)`` of every item ``0..count-1``, split across the ranks, gathered.

    ``compute`` maps a list of item indices to a tensor with one row per index (e.g. the
    descriptors of those training images for offline mining); each rank computes its
    contiguous part and every rank receives all rows in item order.
    """
    if count < context.world_size:
        raise ValueError(
            f"count: expected at least one item per rank ({context.world_size}), got {count}"
        )
    indices = context.shard(range(count))
    local = compute(indices)
    if not isinstance(local, torch.Tensor) or local.dim() == 0 or local.shape[0] != len(indices):
        raise ValueError(
            f"compute: expected a tensor of {len(indices)} rows for items "
            f"{indices[0]}..{indices[-1]}, got {getattr(local, 'shape', type(local).__name__)}"
        )
    with torch.no_grad():
        return context.gather(local.detach())
