"""ResNet-18/34/50/101/152 (He et al.) in torchvision's parameter layout.

Weights are never downloaded: pass ``weights=`` the path of a torchvision-format state
dict (e.g. ``resnet50-0676ba61.pth``) or get random initialisation. The fully connected
classifier ``fc`` is held as a 1×1 convolution (torchvision's Linear weights are reshaped
on load), so ``class_map`` scores every location of the stride-32 feature map.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from pyinstance.models.backbone import Backbone
from pyinstance.models.weights import linear_to_conv, load_weights


def _conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)


def _conv1x1(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projected) shortcut."""

    expansion = 1

    def __init__(self, inp: int, width: int, stride: int = 1):
        super().__init__()
        out = width * self.expansion
        self.conv1 = _conv3x3(inp, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, out)
        self.bn2 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inp, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride here, as torchvision's v1.5), 1×1 expand ×4, plus shortcut."""

    expansion = 4

    def __init__(self, inp: int, width: int, stride: int = 1):
        super().__init__()
        out = width * self.expansion
        self.conv1 = _conv1x1(inp, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inp, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


def _shortcut(inp: int, out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inp == out:
        return None
    return nn.Sequential(_conv1x1(inp, out, stride), nn.BatchNorm2d(out))


#: depth -> (block type, blocks per stage)
ARCHITECTURES: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(Backbone):
    """ResNet feature extractor (stride 32) with its classifier as a 1×1 convolution.

    Args:
        depth: 18, 34, 50, 101 or 152.
        weights: path of a torchvision-format state dict; None: random initialisation.
        num_classes: classes of the class map; other than 1000, the file's ``fc`` is
            skipped and a fresh classifier initialised.
        trainable_from: freeze every block below this one (``stem``, ``layer1`` ...
            ``layer4``, ``classifier``).
    """

    out_stride = 32
    min_input_size = 32

    def __init__(
        self,
        depth: int = 50,
        *,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int = 1000,
        trainable_from: str | None = None,
    ):
        super().__init__()
        if depth not in ARCHITECTURES:
            raise ValueError(f"depth: expected one of {sorted(ARCHITECTURES)}, got {depth!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        block, counts = ARCHITECTURES[depth]
        self.depth = depth
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inp = 64
        for index, (count, width) in enumerate(
            zip(counts, (64, 128, 256, 512), strict=True), start=1
        ):
            layers = []
            for position in range(count):
                stride = 2 if index > 1 and position == 0 else 1
                layers.append(block(inp, width, stride))
                inp = width * block.expansion
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.out_channels = inp
        self.fc = nn.Conv2d(inp, num_classes, 1)
        self._initialise()
        if weights is not None:
            load_weights(
                self,
                weights,
                convert=lambda state: linear_to_conv(state, ["fc"]),
                skip_prefixes=("fc.",) if num_classes != 1000 else (),
            )
        self.set_trainable_from(trainable_from)

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.fc:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # Zero-initialised residual branches (Goyal et al.): every block starts as its
        # shortcut, so a random deep ResNet stays numerically tame in eval mode.
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.zeros_(module.bn3.weight)
            elif isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def blocks(self) -> OrderedDict[str, nn.Module]:
        named: OrderedDict[str, nn.Module] = OrderedDict()
        named["stem"] = nn.ModuleList([self.conv1, self.bn1])
        for index in range(1, 5):
            named[f"layer{index}"] = getattr(self, f"layer{index}")
        named["classifier"] = self.fc
        return named

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
