"""One training step of a small model the way the trainer takes it, on any ProcessContext.

Run as a script under torchrun (``python -P -m torch.distributed.run --standalone
--nproc_per_node=2 ddp_steps.py OUT SCENARIO...``) it writes what each rank saw to ``OUT``;
imported by the tests it computes the same step in one process, the reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from pyinstance.models.losses import TripletMarginLoss
from pyinstance.models.miners import SemiHardMiner
from pyinstance.train.distributed import (
    ProcessContext,
    parallel_map,
    process_context,
    shard_bounds,
)

#: Eight images of four instances and the global batches of two steps (an order that
#: is not the dataset's, 7 items: uneven shards over 2 ranks).
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
BATCHES = ([5, 2, 7, 0, 3, 1, 6], [1, 4, 6, 3, 0, 7, 2])


def images() -> torch.Tensor:
    """The data set: 8 small RGB images, the same in every process."""
    return torch.rand(8, 3, 12, 10, generator=torch.Generator().manual_seed(7))


class TinyNet(nn.Module):
    """A convolution with BatchNorm, GeM-like pooling and a projection, L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU())
        self.projection = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.features(x).clamp_min(1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3)
        return nn.functional.normalize(self.projection(pooled), dim=1)


def new_model() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # running statistics that differ from a fresh BatchNorm's
        model.features[1].running_mean.uniform_(-0.1, 0.1)
        model.features[1].running_var.uniform_(0.5, 1.5)
    return model


def new_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)


def train_step(
    context: ProcessContext, model: nn.Module, optimizer: torch.optim.Optimizer, batch: list[int]
) -> dict[str, torch.Tensor]:
    """One step on the global ``batch`` the trainer's way: single-image micro-batches of this
    rank's shard described without gradients, mining and loss on the gathered global batch,
    each micro-batch again with its rows of the descriptor gradient, gradients summed."""
    data = images()
    model.train()
    model.features[1].eval()  # frozen BatchNorm: micro-batches of one image
    local = context.shard(batch)
    optimizer.zero_grad()
    with torch.no_grad():
        described = torch.cat([model(data[i : i + 1]) for i in local])
    gathered = context.gather(described).detach().requires_grad_(True)
    labels = context.gather(LABELS[local])
    triplets = SemiHardMiner()(gathered, labels)
    loss = TripletMarginLoss(margin=0.3)(gathered, labels, triplets)
    (gradient,) = torch.autograd.grad(loss, [gathered])
    offset = shard_bounds(len(batch), context.rank, context.world_size)[0]
    for row, index in enumerate(local):
        model(data[index : index + 1]).backward(gradient[offset + row : offset + row + 1])
    context.sum_gradients(model.parameters())
    optimizer.step()
    return {
        "triplets": torch.stack(triplets),
        "loss": loss.detach(),
        "labels": labels,
        "parameters": torch.cat([p.detach().flatten() for p in model.parameters()]),
    }


def extract_all(context: ProcessContext, model: nn.Module) -> torch.Tensor:
    """Descriptors of the whole data set (offline mining), computed in parts across ranks."""
    data = images()
    model.eval()
    with torch.no_grad():
        return parallel_map(context, len(data), lambda indices: model(data[indices]))


def checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def _gather_scenario(context: ProcessContext) -> dict[str, torch.Tensor]:
    """Rank r holds r + 2 rows; the loss weights every gathered row differently."""
    rows = context.rank + 2
    local = torch.full((rows, 3), float(context.rank)) + torch.arange(rows)[:, None]
    local.requires_grad_(True)
    gathered = context.gather(local)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    return {"gathered": gathered.detach(), "grad": local.grad, "weights": weights}


def _refusals(context: ProcessContext) -> list[str]:
    """The messages of the calls every rank refuses before exchanging anything."""
    calls = [
        lambda: context.shard([7]),
        lambda: context.gather(torch.tensor(1.0)),
        lambda: parallel_map(context, 1, lambda indices: torch.zeros(len(indices), 2)),
    ]
    messages = []
    for call in calls:
        try:
            call()
        except ValueError as error:
            messages.append(str(error))
    return messages


def _gradient_sum_scenario(context: ProcessContext) -> list[torch.Tensor | None]:
    """A layer every rank uses, a parameter only rank 1 uses, one no rank uses."""
    layer, only_rank_1, unused = (
        nn.Linear(2, 1),
        nn.Parameter(torch.zeros(1)),
        nn.Parameter(torch.zeros(1)),
    )
    output = layer(torch.full((1, 2), context.rank + 1.0)).sum()
    if context.rank == 1:
        output = output + 3 * only_rank_1.sum()
    output.backward()
    context.sum_gradients([*layer.parameters(), only_rank_1, unused])
    return [layer.weight.grad, layer.bias.grad, only_rank_1.grad, unused.grad]


def main(out: Path, scenarios: list[str]) -> None:
    with process_context("cpu") as context:
        results: dict[str, object] = {"world_size": context.world_size}
        model = new_model()
        optimizer = new_optimizer(model)
        for scenario in scenarios:
            if scenario == "gather":
                results["gather"] = _gather_scenario(context)
            elif scenario == "shard":
                results["shard"] = [context.shard(range(n)) for n in (2, 5, 8)]
                results["refused"] = _refusals(context)
            elif scenario == "collectives":
                results["broadcast"] = context.broadcast({"rank": context.rank})
                results["sum"] = context.all_sum(torch.tensor([context.rank + 1.0, 2.0]))
                results["gradients"] = _gradient_sum_scenario(context)
                buffers = nn.BatchNorm1d(2)
                buffers.running_mean.fill_(context.rank + 1.0)
                context.broadcast_buffers(buffers)
                results["buffers"] = buffers.running_mean
            elif scenario == "step":
                results["step"] = train_step(context, model, optimizer, BATCHES[0])
            elif scenario == "extract":
                results["extract"] = extract_all(context, model)
            elif scenario == "save":
                if context.is_main:
                    torch.save(checkpoint(model, optimizer), out / "checkpoint.pt")
                context.barrier()
            elif scenario == "resume":
                state = torch.load(out / "checkpoint.pt", weights_only=True)
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                results["resume"] = train_step(context, model, optimizer, BATCHES[1])
            else:
                raise ValueError(f"scenario: unknown {scenario!r}")
        torch.save(results, out / f"rank{context.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
