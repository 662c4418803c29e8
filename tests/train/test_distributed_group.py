"""DistributedContext in a process group of one rank (gloo over an in-process store): what
each collective hands back, the gradient through a gather, the refusals, and closing."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from pyinstance.train.distributed import DistributedContext, _gather_rows, _GatherRows


@pytest.fixture
def group():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        yield DistributedContext(torch.device("cpu"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_one_rank_is_the_main_one_and_holds_the_whole_batch(group):
    assert (group.rank, group.world_size, group.is_main) == (0, 1, True)
    assert group.device == torch.device("cpu")
    assert group.shard(range(5)) == [0, 1, 2, 3, 4]
    assert group.shard((7,)) == [7]
    with pytest.raises(ValueError, match="^items: a global batch of 0 cannot be split over 1"):
        group.shard([])


def test_a_gather_of_one_rank_is_its_rows_with_their_gradient(group):
    rows = torch.arange(6.0).reshape(3, 2).requires_grad_(True)
    gathered = group.gather(rows)
    assert torch.equal(gathered, rows.detach()) and gathered.requires_grad
    (gathered * torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])).sum().backward()
    assert torch.equal(rows.grad, torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    plain = group.gather(torch.tensor([[1, 2]]))
    assert torch.equal(plain, torch.tensor([[1, 2]])) and not plain.requires_grad
    with torch.no_grad():
        assert not group.gather(rows).requires_grad
    assert group._sizes(4) == [4]
    for bad in (torch.tensor(3.0), [1, 2]):
        with pytest.raises(ValueError, match="^local: expected a tensor with a leading row"):
            group.gather(bad)


def test_padding_keeps_each_ranks_own_rows():
    # _gather_rows with one rank of 2 rows among sizes [2]; the padded buffer is cut back
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        rows = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        assert torch.equal(_gather_rows(rows, [2]), rows)
        grad = torch.tensor([[0.5, 1.0], [2.0, 4.0]])
        local = rows.clone().requires_grad_(True)
        _GatherRows.apply(local, [2], 0).backward(grad)
        assert torch.equal(local.grad, grad)
    finally:
        dist.destroy_process_group()


def test_sums_and_broadcasts_of_one_rank(group):
    values = torch.tensor([1.5, -2.0], requires_grad=True)
    total = group.all_sum(values)
    assert torch.equal(total, torch.tensor([1.5, -2.0])) and not total.requires_grad
    total += 1  # a new tensor: the input is untouched
    assert torch.equal(values.detach(), torch.tensor([1.5, -2.0]))
    with pytest.raises(ValueError, match="^values: expected a tensor, got list"):
        group.all_sum([1.0])
    assert group.broadcast({"step": 3}) == {"step": 3}
    norm = nn.BatchNorm1d(2)
    norm.running_mean.fill_(0.25)
    group.broadcast_buffers(norm)
    assert torch.equal(norm.running_mean, torch.full((2,), 0.25))


def test_summed_gradients_keep_unused_parameters_without_one(group):
    used, unused = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    frozen = nn.Parameter(torch.ones(1), requires_grad=False)
    double = nn.Parameter(torch.ones(2, dtype=torch.float64))
    (used * torch.tensor([2.0, 3.0])).sum().backward()
    (double * 4).sum().backward()
    group.sum_gradients([used, unused, frozen, double])
    assert torch.equal(used.grad, torch.tensor([2.0, 3.0]))
    assert torch.equal(double.grad, torch.full((2,), 4.0, dtype=torch.float64))
    assert unused.grad is None and frozen.grad is None


def test_closing_leaves_the_group(group):
    with group as entered:
        assert entered is group and dist.is_initialized()
    assert not dist.is_initialized()
    group.close()  # a second close does nothing


TORCHRUN = {
    "RANK": "0",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "localhost",
    "MASTER_PORT": "29500",
}


@pytest.fixture
def under_torchrun(monkeypatch):
    """torchrun's environment (2 ranks, this one with LOCAL_RANK 1); the group it starts
    recorded, then made a real group of one rank."""
    for name, value in TORCHRUN.items():
        monkeypatch.setenv(name, value)
    started, real = [], dist.init_process_group

    def init_process_group(**options):
        started.append(options)
        real("gloo", rank=0, world_size=1, store=dist.HashStore())

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    yield started
    if dist.is_initialized():
        dist.destroy_process_group()


def test_under_torchrun_a_cpu_rank_starts_a_gloo_group(under_torchrun, monkeypatch):
    import datetime

    from pyinstance.train.distributed import process_context

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    context = process_context("auto")
    assert isinstance(context, DistributedContext) and context.device == torch.device("cpu")
    assert under_torchrun == [{"backend": "gloo"}]
    context.close()
    limit = datetime.timedelta(seconds=7)
    context = process_context(torch.device("cpu"), timeout=limit)
    assert under_torchrun[-1] == {"backend": "gloo", "timeout": limit}
    context.close()


def test_under_torchrun_a_cuda_rank_takes_the_gpu_of_its_local_rank(under_torchrun, monkeypatch):
    from pyinstance.train.distributed import process_context

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    for device in ("auto", "cuda"):
        context = process_context(device)
        assert context.device == torch.device("cuda", 1) and chosen[-1] == 1
        assert under_torchrun[-1] == {"backend": "nccl", "device_id": torch.device("cuda", 1)}
        context.close()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        ValueError, match=r"^device: rank with LOCAL_RANK=1 has no GPU of its own \(1 visible\)"
    ):
        process_context("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^device: 'cuda' requested but torch sees no GPU"):
        process_context("cuda")
    assert len(under_torchrun) == 2  # the refusals start no group


def test_parallel_map_takes_one_item_a_rank_and_rows_of_any_rank_but_zero():
    from pyinstance.train.distributed import LocalContext, parallel_map

    assert parallel_map(LocalContext(), 1, lambda indices: torch.tensor([[5.0]])).tolist() == [
        [5.0]
    ]
    flat = parallel_map(LocalContext(), 3, lambda indices: torch.tensor(indices) * 2)
    assert flat.tolist() == [0, 2, 4]  # one value a row
    for bad in ([1.0, 2.0, 3.0], torch.tensor(1.0)):
        with pytest.raises(
            ValueError, match=r"^compute: expected a tensor of 3 rows for items 0\.\.2"
        ):
            parallel_map(LocalContext(), 3, lambda indices, bad=bad: bad)


def test_the_default_device_is_auto(monkeypatch):
    from pyinstance.train.distributed import LocalContext, process_context

    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    assert isinstance(process_context(), LocalContext)
