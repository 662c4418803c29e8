"""The engine interface: a normalised image batch in, descriptors or feature maps out.

An engine runs one fixed network (a backbone, optionally followed by a pooling head) for
inference. ``output="descriptors"`` gives the head's L2-normalised descriptors B×D;
``output="features"`` gives the backbone's feature map B×C×h×w (for pooling windows of
it, see :func:`pyinstance.models.regions.pool_windows`). Inputs are checked here, once,
whatever runs the network.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

Output = Literal["descriptors", "features"]
OUTPUTS: tuple[str, ...] = ("descriptors", "features")


class EngineUnavailableError(RuntimeError):
    """The requested engine cannot run here (its package is not installed)."""


class Engine(ABC):
    """Maps a normalised float32 batch B×3×H×W to descriptors B×D or a feature map B×C×h×w.

    Attributes:
        name: ``"torch"``, ``"onnxruntime"`` or ``"openvino"``.
        output: ``"descriptors"`` or ``"features"``.
        threads: intra-op threads the engine uses (None: the library's default).
        device: where inputs must be and outputs are.
    """

    name: str
    output: Output
    threads: int | None
    device: torch.device

    def __init__(
        self, backbone: nn.Module, output: Output, threads: int | None, device: torch.device
    ):
        self.output = output
        self.threads = check_threads(threads)
        self.device = device
        self.min_input_size = int(getattr(backbone, "min_input_size", 1))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Descriptors B×D or feature map B×C×h×w (float32, on :attr:`device`) of ``images``."""
        self.check_images(images)
        return self.run(images)

    @abstractmethod
    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The network's output for a checked batch."""

    def check_images(self, images: torch.Tensor) -> None:
        """Raise a clear error unless ``images`` is a finite float32 B×3×H×W batch on the device."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images: expected a torch.Tensor, got {type(images).__name__}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images: expected a B×3×H×W batch (normalised RGB), got shape "
                f"{tuple(images.shape)}"
            )
        if images.dtype != torch.float32:
            raise TypeError(f"images: expected dtype torch.float32, got {images.dtype}")
        if images.device != self.device:
            raise ValueError(
                f"images: the {self.name} engine runs on {self.device}, got a tensor on "
                f"{images.device}"
            )
        if images.shape[0] == 0:
            raise ValueError("images: empty batch (B = 0)")
        height, width = images.shape[2:]
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"images: {height}×{width} is smaller than the backbone's minimum input size "
                f"{self.min_input_size}"
            )
        if not all_finite(images):
            raise ValueError("images: contains NaN or infinite values")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output={self.output!r}, threads={self.threads})"


def all_finite(images: torch.Tensor) -> bool:
    """Whether every value of the float tensor ``images`` is finite.

    The sum is NaN or infinite whenever a value is, and one reduction is far cheaper than
    a mask of the whole batch (a 448-pixel image: 0.1 against 2 ms); only a sum that
    overflowed from finite values (magnitudes near the dtype's maximum) needs the mask.
    """
    return math.isfinite(float(images.sum())) or bool(torch.isfinite(images).all())


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, restored after it
    (None: left alone). The setting is the process's: concurrent callers share it."""
    previous = torch.get_num_threads()
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def check_threads(threads: int | None) -> int | None:
    """``threads`` if it is a positive int or None; else a ValueError naming it."""
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
    return threads


def inference_network(backbone: nn.Module, head: nn.Module | None, output: Output) -> nn.Module:
    """The module an engine runs: ``backbone`` alone, or ``backbone`` then ``head``."""
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {', '.join(OUTPUTS)}, got {output!r}")
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
    if output == "features":
        return backbone
    if not isinstance(head, nn.Module):
        raise TypeError(
            f"head: output='descriptors' needs a head module, got {type(head).__name__}"
        )
    return nn.Sequential(backbone, head)
