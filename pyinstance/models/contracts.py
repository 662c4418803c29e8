"""The contracts of pluggable components, as ``typing.Protocol``s, in one place.

A plugin's factories return objects of these shapes (see :mod:`pyinstance.hookspecs`);
:mod:`pyinstance.testing` checks the behaviour behind them. Protocols are structural:
a component needs the attributes and call signature, not a pyinstance base class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pyinstance._validate import check_int

if TYPE_CHECKING:
    import torch

#: (anchors, positives, negatives): equal-length 1-D int64 index tensors.
Triplets = tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]


@runtime_checkable
class BackboneContract(Protocol):
    """Maps an image batch B×3×H×W to a feature map B×C×h×w (a ``torch.nn.Module``).

    Attributes:
        out_channels: C.
        out_stride: input pixels per feature-map cell (``h ≈ H / out_stride``).

    Optional attributes: ``min_input_size`` (smallest input side giving a 1×1 map;
    read it with :func:`min_input_size`), ``input_mean``/``input_std`` (RGB
    normalisation after scaling pixels to [0, 1]; default ImageNet's).
    """

    out_channels: int
    out_stride: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HeadContract(Protocol):
    """Maps a feature map B×C×h×w (any h, w) to L2-normalised descriptors B×``out_dim``.

    Built as ``factory(in_channels, **options)``; a ``torch.nn.Module``.
    """

    out_dim: int

    def __call__(self, features: torch.Tensor) -> torch.Tensor: ...


#: What a loss's ``logits`` attribute may name (see :class:`LossContract`).
LOSS_LOGITS_KINDS = (None, "image", "map", "regions")


@runtime_checkable
class LossContract(Protocol):
    """A scalar loss, called as ``loss(embeddings, labels, triplets=None, *, logits=None)``.

    ``embeddings``: B×D descriptors; ``labels``: B int64 instance codes (class indices
    ``0..K-1`` for losses with logits); ``triplets``: a miner's (anchors, positives,
    negatives) into the batch, or None. Returns a finite scalar tensor that stays in the
    graph (a zero gradient, not a constant, when nothing contributes, e.g. no triplets).

    Attributes (read by the trainer, class attributes):
        needs_triplets: whether the loss uses a miner's triplets; such a loss raises an
            error naming ``triplets`` when they are None.
        logits: what it needs in ``logits`` (an error naming ``logits`` and the expected
            shape when it is missing or ill-shaped), one of :data:`LOSS_LOGITS_KINDS`:
            None (nothing); ``"image"``: B×K class scores; ``"map"``: FCN class maps, one
            B×K×H×W tensor or a sequence of them, one per scale of the same B images (sizes
            may differ); ``"regions"``: B×k×K class scores of k regions per image
            (:attr:`pyinstance.models.region_head.RegionPooling.region_logits`).
    """

    needs_triplets: bool
    logits: str | None

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        triplets: Triplets | None = None,
        *,
        logits: torch.Tensor | Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor: ...


@runtime_checkable
class MinerContract(Protocol):
    """Index triplets with ``labels[a] == ref_labels[p]`` and ``labels[a] != ref_labels[n]``.

    ``ref_*`` default to the batch itself, and then ``a != p``.
    """

    def __call__(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_embeddings: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> Triplets: ...


def min_input_size(backbone: Any) -> int:
    """The smallest input side (pixels) the backbone accepts: the one default for everyone.

    A backbone's declared ``min_input_size`` (unpadded convolutions lose a border), else its
    ``out_stride``: a smaller image would not fill one feature-map cell.
    """
    declared = getattr(backbone, "min_input_size", None)
    if declared is not None:
        return check_int(declared, "backbone.min_input_size", minimum=1)
    return check_int(getattr(backbone, "out_stride", None), "backbone.out_stride", minimum=1)
