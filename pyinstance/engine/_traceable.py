"""Traceable forwards for built-in layers whose eager forward computes shapes in Python.

The TorchScript-based ONNX exporter records tensor operations; shape arithmetic done in
Python (``math.ceil(size / stride)``) is frozen at the traced size, which would make an
exported graph silently wrong at other input sizes. While :func:`traceable` is active,
such layers run an equivalent forward written with traced operations, so the exported
graph keeps dynamic height and width. The export check (several probe sizes) catches any
layer that still freezes a shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models.efficientnet import SameConv2d


def _same_padding(size: torch.Tensor | int, kernel: int, stride: int) -> torch.Tensor | int:
    """TensorFlow "same" total padding ``max((ceil(size/stride) - 1)·stride + kernel - size, 0)``."""
    total = ((size + stride - 1) // stride - 1) * stride + kernel - size
    return total.clamp(min=0) if isinstance(total, torch.Tensor) else max(total, 0)


def _same_conv_forward(conv: SameConv2d, x: torch.Tensor) -> torch.Tensor:
    if conv._dynamic:
        pads: list[torch.Tensor | int] = []
        for axis, kernel, stride in (
            (3, conv.kernel_size[1], conv.stride[1]),
            (2, conv.kernel_size[0], conv.stride[0]),
        ):
            total = _same_padding(x.size(axis), kernel, stride)
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
    return nn.Conv2d.forward(conv, x)


@contextmanager
def traceable(module: nn.Module) -> Iterator[nn.Module]:
    """Give the known shape-computing layers of ``module`` traceable forwards, then restore."""
    patched = []
    for layer in module.modules():
        if isinstance(layer, SameConv2d) and "forward" not in vars(layer):
            layer.forward = _same_conv_forward.__get__(layer)  # type: ignore[method-assign]
            patched.append(layer)
    try:
        yield module
    finally:
        for layer in patched:
            del layer.forward
