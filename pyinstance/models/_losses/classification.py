"""Classification losses: each instance is a class, ``labels`` are class indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.models._losses.inputs import (
    Triplets,
    check_batch,
    check_image_logits,
    check_map_logits,
)


def _as_float(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision scores in float32 for a stable log-softmax; float32/64 unchanged."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy of the image class scores ``logits`` (B×K) against ``labels``.

    The embeddings are not used (their gradient comes through the network that computed
    the scores); ``labels`` must be class indices in [0, K).
    """

    needs_triplets: ClassVar[bool] = False
    logits: ClassVar[str | None] = "image"

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_batch(embeddings, labels)
        scores = check_image_logits(logits, labels)
        return F.cross_entropy(_as_float(scores), labels)


class FCNMultiscaleCrossEntropyLoss(nn.Module):
    """Kohl's FCN fine-tuning loss (eq. 3.5): cross-entropy over every location and scale.

    ``logits`` is the class map of the fully convolutional classifier: one B×K×H×W
    tensor or a sequence of them, one per scale of the same B images (sizes may differ).
    Every location of an image's map is scored against that image's label; the loss
    averages over the locations of each map, the images and the scales (each scale
    weighs the same, whatever its size). The embeddings are not used.
    """

    needs_triplets: ClassVar[bool] = False
    logits: ClassVar[str | None] = "map"

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        check_batch(embeddings, labels)
        per_scale = [
            F.cross_entropy(
                _as_float(class_map),
                labels[:, None, None].expand(-1, class_map.shape[2], class_map.shape[3]),
            )
            for class_map in check_map_logits(logits, labels)
        ]
        return torch.stack(per_scale).mean()
