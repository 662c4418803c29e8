"""The ``topk_region`` head: Kohl's top-k region descriptor over an FCN class map.

class map (1×1-conv classifier over the features, or scores passed in) -> the k
highest-scoring locations -> per-location L2 normalisation -> learned shift and linear
layer -> sum -> L2 normalisation. The shift and linear layer act on each location before
the sum; since they are affine, ``sum_l W (u_l + s) = W (sum_l u_l + k s)``, so the head
applies them once to the fused op's sum (``pyinstance.ops.topk_region_pool``) — the same
function, one matrix product instead of k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.ops import topk_region_pool


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


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
        return_locations: make ``forward`` return ``(descriptor, locations)``.

    After each forward, ``last_locations`` (B×k flat indices ``y * W + x``, by descending
    score) and ``last_region_logits`` (B×k×K class scores at those locations, with
    gradient to the classifier; None for a saliency map) are kept for the cross-entropy
    regulariser over the k regions (:meth:`region_loss`) and for heat maps
    (:func:`pyinstance.viz.render_region_heatmap`). No gradient flows through the
    selection to the class map; the classifier learns through :meth:`region_loss`.
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_classes: int = 1000,
        k: int = 4,
        out_dim: int | None = None,
        classifier: nn.Module | None = None,
        return_locations: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.k = _positive_int(k, "k")
        self.out_dim = _positive_int(out_dim if out_dim is not None else in_channels, "out_dim")
        if classifier is None:
            classifier = nn.Conv2d(self.in_channels, _positive_int(num_classes, "num_classes"), 1)
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
        self.return_locations = bool(return_locations)
        self.last_locations: torch.Tensor | None = None
        self.last_region_logits: torch.Tensor | None = None

    def forward(
        self,
        features: torch.Tensor,
        scores: torch.Tensor | None = None,
        *,
        valid_hw: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Descriptors B×out_dim (and the B×k locations when ``return_locations``).

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
        self.last_locations = locations
        self.last_region_logits = None
        if class_map.dim() == 4:
            batch, classes = class_map.shape[:2]
            index = locations[:, None, :].expand(batch, classes, k)
            self.last_region_logits = class_map.flatten(2).gather(2, index).transpose(1, 2)
        shifted = pooled + k * self.shift.to(pooled.dtype)
        descriptor = F.normalize(self.linear(shifted.to(self.linear.weight.dtype)), dim=1)
        if self.return_locations:
            return descriptor, locations
        return descriptor

    def region_loss(self, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the last forward's k regions against the image labels."""
        logits = self.last_region_logits
        if logits is None:
            raise RuntimeError("region_loss needs a forward pass with a class map (B×K×H×W) first")
        batch, k, classes = logits.shape
        if labels.shape != (batch,):
            raise ValueError(f"labels: expected shape ({batch},), got {tuple(labels.shape)}")
        if labels.dtype != torch.int64:
            raise TypeError(f"labels: expected int64 class indices, got {labels.dtype}")
        if bool(((labels < 0) | (labels >= classes)).any()):
            raise ValueError(
                f"labels: expected class indices in [0, {classes}), got {labels.tolist()}"
            )
        return F.cross_entropy(
            logits.reshape(batch * k, classes).float(), labels.repeat_interleave(k)
        )


@hookimpl
def pyinstance_register_heads(register: Register) -> None:
    register("topk_region", TopKRegionHead, aliases=("kohl",))
