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
    freeze_batchnorm,
    gradient_sync,
    parallel_map,
    process_context,
    unwrap,
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
    """One step on the global ``batch``: single-image micro-batches on this rank's shard,
    mining and loss on the gathered global batch, one optimiser step."""
    data = images()
    model.train()
    freeze_batchnorm(model)
    local = context.shard(batch)
    optimizer.zero_grad()
    embeddings = []
    for position, index in enumerate(local):
        with gradient_sync(model, synchronise=position == len(local) - 1):
            embeddings.append(model(data[index : index + 1]))
    gathered = context.gather(torch.cat(embeddings))
    labels = context.gather(LABELS[local])
    triplets = SemiHardMiner()(gathered, labels)
    loss = TripletMarginLoss(margin=0.3)(gathered, labels, triplets)
    loss.backward()
    optimizer.step()
    return {
        "triplets": torch.stack(triplets),
        "loss": context.all_mean(loss.detach()),
        "labels": labels,
        "parameters": torch.cat([p.detach().flatten() for p in unwrap(model).parameters()]),
    }


def extract_all(context: ProcessContext, model: nn.Module) -> torch.Tensor:
    """Descriptors of the whole data set (offline mining), computed in parts across ranks."""
    data = images()
    network = unwrap(model).eval()
    with torch.no_grad():
        return parallel_map(context, len(data), lambda indices: network(data[indices]))


def checkpoint(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict()}


def _gather_scenario(context: ProcessContext) -> dict[str, torch.Tensor]:
    """Rank r holds r + 2 rows; the loss weights every gathered row differently."""
    rows = context.rank + 2
    local = torch.full((rows, 3), float(context.rank)) + torch.arange(rows)[:, None]
    local.requires_grad_(True)
    gathered = context.gather(local)
    weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
    (gathered * weights).sum().backward()
    return {"gathered": gathered.detach(), "grad": local.grad, "weights": weights}


def main(out: Path, scenarios: list[str]) -> None:
    with process_context("cpu") as context:
        results: dict[str, object] = {"world_size": context.world_size}
        wrapped = context.wrap(new_model())
        optimizer = new_optimizer(wrapped)
        for scenario in scenarios:
            if scenario == "gather":
                results["gather"] = _gather_scenario(context)
            elif scenario == "shard":
                results["shard"] = [context.shard(range(n)) for n in (2, 5, 8)]
            elif scenario == "broadcast":
                results["broadcast"] = context.broadcast({"rank": context.rank})
            elif scenario == "step":
                results["step"] = train_step(context, wrapped, optimizer, BATCHES[0])
            elif scenario == "extract":
                results["extract"] = extract_all(context, wrapped)
            elif scenario == "save":
                if context.is_main:
                    torch.save(checkpoint(wrapped, optimizer), out / "checkpoint.pt")
                context.barrier()
            elif scenario == "resume":
                state = torch.load(out / "checkpoint.pt", weights_only=True)
                unwrap(wrapped).load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                results["resume"] = train_step(context, wrapped, optimizer, BATCHES[1])
            else:
                raise ValueError(f"scenario: unknown {scenario!r}")
        torch.save(results, out / f"rank{context.rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
