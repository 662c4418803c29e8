"""The small triplet network of the image-search-engine paper, for 32×32 inputs.

Four valid convolutions (kernels 5, 3, 3, 2; channels 3→64→128→256→128) with ReLU, a 2×2
max-pool after each of the first three and dropout 0.5 between the convolutions; the last
convolution's sigmoid output is the embedding: 128×1×1 at 32×32 (32→28→14→12→6→4→2→1),
a 128-channel map for larger inputs (stride 8). Randomly initialised: it is trained from
scratch with a triplet loss.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from pyinstance.models.backbone import Backbone
from pyinstance.models.weights import load_weights


class TripletNetSmall(Backbone):
    """Feature map 128×(H-24)/8×(W-24)/8 in (0, 1); a 1×1 conv classifier with ``num_classes``.

    Args:
        weights: path of a state dict saved from this module.
        num_classes: classes of the (randomly initialised) FCN classifier, default 10.
        dropout: dropout probability between the convolutions.
        trainable_from: freeze every block below this one (``conv1`` ... ``conv4``,
            ``classifier``).
    """

    out_channels = 128
    out_stride = 8
    min_input_size = 32
    input_mean = (0.5, 0.5, 0.5)
    input_std = (0.5, 0.5, 0.5)

    def __init__(
        self,
        *,
        weights: str | os.PathLike[str] | None = None,
        num_classes: int = 10,
        dropout: float = 0.5,
        trainable_from: str | None = None,
    ):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 5)
        self.conv2 = nn.Conv2d(64, 128, 3)
        self.conv3 = nn.Conv2d(128, 256, 3)
        self.conv4 = nn.Conv2d(256, 128, 2)
        self.pool = nn.MaxPool2d(2, 2)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Conv2d(128, num_classes, 1)
        if weights is not None:
            load_weights(self, weights)
        self.set_trainable_from(trainable_from)

    @property
    def classifier(self) -> nn.Module:
        return self.fc

    def blocks(self) -> OrderedDict[str, nn.Module]:
        return OrderedDict(
            [
                ("conv1", self.conv1),
                ("conv2", self.conv2),
                ("conv3", self.conv3),
                ("conv4", self.conv4),
                ("classifier", self.fc),
            ]
        )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.pool(torch.relu(self.conv1(images))))
        x = self.dropout(self.pool(torch.relu(self.conv2(x))))
        x = self.dropout(self.pool(torch.relu(self.conv3(x))))
        return torch.sigmoid(self.conv4(x))
