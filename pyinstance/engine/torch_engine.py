"""The eager PyTorch engine: the modules themselves, under ``torch.inference_mode``."""

from __future__ import annotations

import copy

import torch
from torch import nn

from pyinstance.engine.base import Engine, Output, inference_network, torch_threads


class TorchEngine(Engine):
    """Runs ``backbone`` (then ``head``) eagerly; follows later changes to their weights.

    Args:
        backbone: the backbone module (any ``nn.Module`` mapping B×3×H×W to B×C×h×w).
        head: the pooling head (``output="descriptors"``); ignored for ``"features"``.
        output: ``"descriptors"`` or ``"features"``.
        threads: torch intra-op threads while the engine runs (restored afterwards);
            None leaves torch's setting alone.
        channels_last: run a channels-last copy of the network (a snapshot of the weights).
    """

    name = "torch"

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None = None,
        *,
        output: Output = "descriptors",
        threads: int | None = None,
        channels_last: bool = False,
    ):
        network = inference_network(backbone, head, output)
        parameter = next(network.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        super().__init__(backbone, output, threads, device)
        self.channels_last = bool(channels_last)
        if self.channels_last:
            network = copy.deepcopy(network).to(memory_format=torch.channels_last)
        self.network = network

    def run(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        modes = [module.training for module in self.network.modules()]
        try:
            self.network.eval()
            with torch_threads(self.threads), torch.inference_mode():
                out = self.network(images)
        finally:
            for module, mode in zip(self.network.modules(), modes, strict=True):
                module.training = mode
        return out.contiguous() if self.output == "features" else out

    def __repr__(self) -> str:
        return (
            f"TorchEngine(output={self.output!r}, threads={self.threads}, "
            f"channels_last={self.channels_last})"
        )
