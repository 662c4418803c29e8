"""How the trainer sees its processes: one (:class:`LocalContext`) or a torch.distributed group.

The trainer is written against :class:`ProcessContext` only, so that the same loop runs in
one process and under ``torchrun`` (data-parallel ranks that mine on the global batch).

Gradient scaling. Each rank back-propagates only its own rows of the global batch, so its
parameter gradients hold that share of the global loss's gradient, and
:meth:`DistributedContext.sum_gradients` adds the shares of every rank: the update equals
the one-process update on the same global batch, also when the ranks hold different
numbers of rows. A loss back-propagated through :meth:`DistributedContext.gather` instead
(every rank computing the same global loss) gets ``world_size`` times its rows' gradient
from the gather's backward (a sum over the ranks); averaging the parameter gradients over
the ranks then gives the one-process update (DistributedDataParallel's convention).

Why not DistributedDataParallel: the trainer's exact micro-batch accumulation describes
every micro-batch twice (without, then with gradients) and reaches the head and the FCN
classifier outside one ``forward``; DDP's reducer sees only what passes through its
``forward`` and would silently skip the rest. One all-reduce of the accumulated gradients
per optimiser step is what DDP with ``no_sync`` on all but the last micro-batch amounts to.
"""

from __future__ import annotations

import datetime
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
C = TypeVar("C", bound="_Closing")

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

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``values`` over the ranks (a new tensor, no gradient)."""
        ...

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (a picklable object, e.g. the resume state)."""
        ...

    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over the ranks (before the step)."""
        ...

    def broadcast_buffers(self, *modules: nn.Module) -> None:
        """Rank 0's buffers (e.g. BatchNorm running statistics) on every rank."""
        ...


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of ``rank``'s contiguous part of ``count`` items.

    Parts differ by at most one item, the first ``count % world_size`` ranks holding the
    larger ones; concatenated in rank order they give the items in their original order.
    """
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _Closing(ABC):
    """``with context:`` closes the context on the way out, after success or an error."""

    @abstractmethod
    def close(self) -> None:
        """Release what the context holds."""

    def __enter__(self: C) -> C:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class LocalContext(_Closing):
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

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.detach().clone()

    def broadcast(self, value: T) -> T:
        return value

    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        return None

    def broadcast_buffers(self, *modules: nn.Module) -> None:
        return None

    def close(self) -> None:
        return None


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


class DistributedContext(_Closing):
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
        """Every rank's rows in rank order, on ``local``'s device; backward sums the gradient
        over the ranks into this rank's rows."""
        if not isinstance(local, torch.Tensor) or local.dim() == 0:
            raise ValueError(
                f"local: expected a tensor with a leading row dimension, got {type(local).__name__}"
                + (" of 0 dimensions" if isinstance(local, torch.Tensor) else "")
            )
        sizes = self._sizes(local.shape[0])
        # The exchange runs on this rank's device (NCCL: its GPU); the rows come back on the
        # caller's device (descriptors extracted to the CPU, say), differentiably.
        exchanged = local.to(self.device)
        if torch.is_grad_enabled() and local.requires_grad:
            return _GatherRows.apply(exchanged, sizes, self.rank).to(local.device)
        with torch.no_grad():
            return _gather_rows(exchanged, sizes).to(local.device)

    def barrier(self) -> None:
        dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``values`` over the ranks (a new tensor, no gradient)."""
        if not isinstance(values, torch.Tensor):
            raise ValueError(f"values: expected a tensor, got {type(values).__name__}")
        total = values.detach().to(self.device, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(values.device)

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        holder = [value]
        dist.broadcast_object_list(holder, src=0, device=self.device)
        return holder[0]

    def sum_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Each gradient summed over the ranks, in one all-reduce per dtype.

        A parameter without a gradient on this rank counts as zero (a rank may leave one
        unused), so every rank takes part in the same collectives and ends with the same
        gradients; parameters that no rank touched keep ``grad=None``.
        """
        parameters = [p for p in parameters if p.requires_grad]
        used = torch.tensor(
            [int(p.grad is not None) for p in parameters], dtype=torch.int64, device=self.device
        )
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
        for parameter, anywhere in zip(parameters, used.tolist(), strict=True):
            if anywhere and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for parameter in parameters:
            if parameter.grad is not None:
                by_dtype.setdefault(parameter.grad.dtype, []).append(parameter.grad)
        for dtype in sorted(by_dtype, key=str):
            grads = by_dtype[dtype]
            flat = torch.cat([grad.reshape(-1) for grad in grads])
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            for grad, summed in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                grad.copy_(summed.view_as(grad))

    def broadcast_buffers(self, *modules: nn.Module) -> None:
        """Rank 0's buffers on every rank (DistributedDataParallel's ``broadcast_buffers``)."""
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def close(self) -> None:
        """Leave the process group (nothing waits for the other ranks: a failing rank exits)."""
        if dist.is_initialized():
            dist.destroy_process_group()


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
    device: str | torch.device = "auto", *, timeout: datetime.timedelta | None = None
) -> LocalContext | DistributedContext:
    """The context of this process: a rank of torchrun's group, or :class:`LocalContext`.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set, more than
    one process) the process group is started here: NCCL when ``device`` is CUDA (``"auto"``
    means CUDA when torch sees a GPU; each rank then uses GPU ``LOCAL_RANK``, which plain
    ``"cuda"`` also means from here on), gloo otherwise. ``timeout`` bounds how long a
    collective waits for a missing rank.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {device!r}") from error
    if device.type not in {"cpu", "cuda"}:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda', got {str(device)!r}")
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
