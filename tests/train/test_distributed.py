"""The process context in one process: sharding arithmetic, torchrun detection, helpers."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from pyinstance.train.distributed import (
    DistributedContext,
    LocalContext,
    launched_by_torchrun,
    parallel_map,
    process_context,
    shard_bounds,
)

TORCHRUN_ENV = {
    "RANK": "1",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "localhost",
    "MASTER_PORT": "29500",
}


@given(count=st.integers(0, 200), world_size=st.integers(1, 9))
def test_shards_cover_the_items_in_order_and_differ_by_at_most_one(
    count: int, world_size: int
) -> None:
    bounds = [shard_bounds(count, rank, world_size) for rank in range(world_size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:], strict=False))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the first ranks hold the extra items


def test_local_context_keeps_everything_and_exchanges_nothing() -> None:
    context = LocalContext()
    rows = torch.randn(3, 2, requires_grad=True)
    assert context.is_main and (context.rank, context.world_size) == (0, 1)
    assert context.shard(range(4)) == [0, 1, 2, 3]
    assert context.gather(rows) is rows
    assert context.broadcast({"epoch": 3}) == {"epoch": 3}
    assert torch.equal(context.all_sum(torch.tensor([1.5])), torch.tensor([1.5]))
    model = nn.Linear(2, 2)
    model(rows).sum().backward()
    before = model.weight.grad.clone()
    with context as entered:
        entered.sum_gradients(model.parameters())
        entered.broadcast_buffers(model)
    assert torch.equal(model.weight.grad, before)


def test_process_context_is_local_outside_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert isinstance(process_context("cpu"), LocalContext)


def test_torchrun_detection() -> None:
    assert not launched_by_torchrun({})
    assert launched_by_torchrun(TORCHRUN_ENV)
    assert not launched_by_torchrun({**TORCHRUN_ENV, "WORLD_SIZE": "1", "RANK": "0"})
    with pytest.raises(RuntimeError, match="MASTER_PORT not set"):
        launched_by_torchrun({k: v for k, v in TORCHRUN_ENV.items() if k != "MASTER_PORT"})


@pytest.mark.parametrize("device", ["meta", "gpu", "AUTO", "cuda:x", 3.5, None])
def test_process_context_rejects_an_unknown_device(device: object) -> None:
    """Known non-CPU/CUDA types, names torch does not know and non-device values alike."""
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu' or 'cuda', got "):
        process_context(device)  # type: ignore[arg-type]


def test_distributed_context_needs_a_process_group() -> None:
    with pytest.raises(RuntimeError, match="no initialised process group"):
        DistributedContext(torch.device("cpu"))


def test_parallel_map_in_one_process_computes_every_row_in_order() -> None:
    table = torch.arange(10.0)[:, None] * 2
    assert torch.equal(parallel_map(LocalContext(), 10, lambda indices: table[indices]), table)


def test_parallel_map_rejects_bad_counts_and_results() -> None:
    with pytest.raises(ValueError, match="count: expected at least one item"):
        parallel_map(LocalContext(), 0, lambda indices: torch.zeros(len(indices), 2))
    with pytest.raises(ValueError, match="compute: expected a tensor of 3 rows"):
        parallel_map(LocalContext(), 3, lambda indices: torch.zeros(2, 2))
