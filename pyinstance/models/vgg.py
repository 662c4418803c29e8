"""VGG-16 and AlexNet in torchvision's parameter layout, with fully convolutional classifiers.

The feature map is the last convolution's ReLU output before the final max-pool (stride
16), as image-retrieval work uses it (Tolias et al., Radenović et al.). The classifier
``fc6 → fc7 → fc8`` becomes a stride-1 pooled, dilated k×k convolution followed by 1×1
convolutions (see :mod:`pyinstance.models.fcn`); torchvision's Linear weights are reshaped
on load. Weights are never downloaded: ``weights=`` takes a local torchvision state dict.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from pyinstance.models.backbone import Backbone
from pyinstance.models.fcn import PooledDilatedConv
from pyinstance.models.weights import linear_to_conv, load_weights

#: VGG-16 convolution widths per block (each block ends with a 2×2 max-pool).
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class _TorchvisionLayout(Backbone):
    """Shared loading / freezing of the two torchvision-layout plain CNNs."""

    _fc_names: tuple[str, str, str]  # classifier indices of fc6, fc7, fc8
    _fc6_kernel: int  # fc6 covers a k×k grid of pooled cells
    _block_ends: tuple[int, ...]  # end index in ``features`` of each conv block

    def _finish(self, weights: str | os.PathLike[str] | None, trainable_from: str | None) -> None:
        for module in self.features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        if weights is not None:
            fc6, fc7, fc8 = (f"classifier.{index}" for index in self._fc_names)
            load_weights(
                self,
                weights,
                convert=lambda state: linear_to_conv(
                    state, [fc6, fc7, fc8], {fc6: self._fc6_kernel}
                ),
                skip_prefixes=(f"{fc8}.",) if self.num_classes != 1000 else (),
            )
        self.set_trainable_from(trainable_from)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def blocks(self) -> OrderedDict[str, nn.Module]:
        named: OrderedDict[str, nn.Module] = OrderedDict()
        start = 0
        for number, end in enumerate(self._block_ends, start=1):
            named[f"conv{number}"] = nn.ModuleList(list(self.features)[start:end])
            start = end
        named["classifier"] = self.classifier
        return named


class VGG16(_TorchvisionLayout):
    """VGG-16: feature map 512×H/16×W/16 (conv5_3 after ReLU); blocks ``conv1`` ... ``conv5``."""

    out_channels = 512
    out_stride = 16
    min_input_size = 16
    _fc_names = ("0", "3", "6")
    _fc6_kernel = 7

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int = 1000,
        trainable_from: str | None = None,
    ):
        super().__init__()
        _check_classes(num_classes)
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        ends = []
        inp = 3
        for number, widths in enumerate(VGG16_BLOCKS):
            if number:
                layers.append(nn.MaxPool2d(2, 2))
            for width in widths:
                layers += [nn.Conv2d(inp, width, 3, padding=1), nn.ReLU(inplace=True)]
                inp = width
            ends.append(len(layers))
        self._block_ends = tuple(ends)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            PooledDilatedConv(512, 4096, 7, pool=2),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Conv2d(4096, 4096, 1),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Conv2d(4096, num_classes, 1),
        )
        self._finish(weights, trainable_from)


class AlexNet(_TorchvisionLayout):
    """AlexNet: feature map 256×~H/16×~W/16 (conv5 after ReLU); blocks ``conv1`` ... ``conv5``."""

    out_channels = 256
    out_stride = 16
    min_input_size = 31
    _fc_names = ("1", "4", "6")
    _fc6_kernel = 6

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int = 1000,
        trainable_from: str | None = None,
    ):
        super().__init__()
        _check_classes(num_classes)
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self._block_ends = (2, 5, 8, 10, 12)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            PooledDilatedConv(256, 4096, 6, pool=3),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Conv2d(4096, 4096, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(4096, num_classes, 1),
        )
        self._finish(weights, trainable_from)


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
