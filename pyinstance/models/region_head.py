"""Kohl's top-k region descriptor over an FCN class map (registered as the ``topk_region`` head).

class map (1×1-conv classifier over the features, or scores passed in) -> the k
highest-scoring locations -> per-location L2 normalisation -> learned shift and linear
layer -> sum -> L2 normalisation. The shift and linear layer act on each location before
the sum; since they are affine, ``sum_l W (u_l + s) = W (sum_l u_l + k s)``, so the head
applies them once to the fused op's sum (``pyinstance.ops.topk_region_pool``) — the same
function, one matrix product instead of k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance._validate import check_int
from pyinstance.ops import topk_region_pool


@dataclass(frozen=True)
class RegionPooling:
    """What :meth:`TopKRegionHead.forward_regions` computed for one batch.

    Attributes:
        descriptors: B×D L2-normalised descriptors (what ``forward`` returns).
        locations: B×k int64 flat indices ``y * W + x`` of the pooled locations, by
            descending score (for heat maps: :func:`pyinstance.viz.render_region_heatmap`).
        region_logits: B×k×K class scores at those locations, with gradient to the
            classifier; None when a saliency map (B×H×W) chose the locations.
    """

    descriptors: torch.Tensor
    locations: torch.Tensor
    region_logits: torch.Tensor | None

    def region_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the k regions' class scores against the image labels.

        The regulariser that trains the classifier choosing the regions (no gradient flows
        through the selection itself); see :func:`region_cross_entropy`.
        """
        if self.region_logits is None:
            raise RuntimeError(
                "region_loss needs regions chosen by a class map (B×K×H×W), not a saliency map"
            )
        return region_cross_entropy(self.region_logits, labels)


def region_cross_entropy(region_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of B×k×K region class scores, each region scored against its image's label.

    Averaged over the k regions and the B images (Kohl's region regulariser). Half-precision
    scores are computed in float32; float32 and float64 stay as they are.
    """
    batch, k, classes = region_logits.shape
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.shape != (batch,):
        raise ValueError(f"labels: expected shape ({batch},), got {tuple(labels.shape)}")
    if labels.dtype != torch.int64:
        raise TypeError(f"labels: expected int64 class indices, got {labels.dtype}")
    if bool(((labels < 0) | (labels >= classes)).any()):
        raise ValueError(f"labels: expected class indices in [0, {classes}), got {labels.tolist()}")
    scores = region_logits.reshape(batch * k, classes)
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    return F.cross_entropy(scores, labels.repeat_interleave(k))


class TopKRegionHead(nn.Module):
    """Top-k region pooling head (Kohl's descriptor); B×C×H×W -> B×out_dim, L2-normalised.

    Args:
        in_channels: channels C of the feature map.
        num_classes: classes K of the head's own 1×1-conv FCN classifier.
        k: locations pooled per image (fewer when a feature map, or the smallest valid
            window of a padded batch, has fewer locations: all of them are pooled).
        out_dim: descriptor size D (default C; the linear layer then starts as identity).
        classifier: a module mapping B×C×H×W features to a B×K×H×W class map (e.g. a
            backbone's fully convolutional classifier) used instead of the head's own.

    ``forward`` returns the descriptors, like every head; :meth:`forward_regions` returns
    them with the pooled locations and their class scores (:class:`RegionPooling`), whose
    :meth:`RegionPooling.region_loss` is the cross-entropy regulariser over the k regions.
    No gradient flows through the selection to the class map; the classifier learns
    through the region loss. The head keeps no state between calls.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int = 1000,
        k: int = 4,
        out_dim: int | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", minimum=1)
        self.k = check_int(k, "k", minimum=1)
        self.out_dim = check_int(
            out_dim if out_dim is not None else in_channels, "out_dim", minimum=1
        )
        if classifier is None:
            classifier = nn.Conv2d(
                self.in_channels, check_int(num_classes, "num_classes", minimum=1), 1
            )
        elif not isinstance(classifier, nn.Module):
            raise TypeError(
                f"classifier: expected a torch.nn.Module, got {type(classifier).__name__}"
            )
        self.classifier = classifier
        self.shift = nn.Parameter(torch.zeros(self.in_channels))
        self.linear = nn.Linear(self.in_channels, self.out_dim, bias=False)
        if self.out_dim == self.in_channels:
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(self.in_channels))

    def forward(
        self,
        features: torch.Tensor,
        scores: torch.Tensor | None = None,
        *,
        valid_hw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Descriptors B×out_dim, L2-normalised (see :meth:`forward_regions` for the rest)."""
        return self.forward_regions(features, scores, valid_hw=valid_hw).descriptors

    def forward_regions(
        self,
        features: torch.Tensor,
        scores: torch.Tensor | None = None,
        *,
        valid_hw: torch.Tensor | None = None,
    ) -> RegionPooling:
        """Descriptors, pooled locations and their class scores of ``features`` B×C×H×W.

        ``scores``: a B×K×H×W class map or B×H×W saliency map to use instead of the
        classifier's; ``valid_hw``: B×2 valid (height, width) of padded images.
        """
        if not isinstance(features, torch.Tensor) or features.dim() != 4:
            shape = (
                tuple(features.shape)
                if isinstance(features, torch.Tensor)
                else type(features).__name__
            )
            raise ValueError(f"features: expected a B×C×H×W tensor, got {shape}")
        if features.shape[1] != self.in_channels:
            raise ValueError(
                f"features: expected {self.in_channels} channels, got {features.shape[1]}"
            )
        class_map = self.classifier(features) if scores is None else scores
        k = min(self.k, features.shape[2] * features.shape[3])
        areas = None if valid_hw is None else torch.as_tensor(valid_hw).prod(dim=-1)
        if areas is not None and areas.numel():
            k = max(1, min(k, int(areas.min())))
        pooled, locations = topk_region_pool(features, class_map, k, valid_hw=valid_hw)
        region_logits = None
        if class_map.dim() == 4:
            batch, classes = class_map.shape[:2]
            index = locations[:, None, :].expand(batch, classes, k)
            region_logits = class_map.flatten(2).gather(2, index).transpose(1, 2)
        shifted = pooled + k * self.shift.to(pooled.dtype)
        descriptors = F.normalize(self.linear(shifted.to(self.linear.weight.dtype)), dim=1)
        return RegionPooling(descriptors, locations, region_logits)
