"""The contract checks' limits: sizes they probe with, bounds that are inclusive, tolerances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyinstance import testing
from pyinstance.testing import ContractError


class ConvBackbone(nn.Module):
    """One convolution: stride 4, 8 channels; kernel and padding set the map's size."""

    out_channels = 8
    out_stride = 4

    def __init__(self, kernel: int = 3, padding: int = 1, stride: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel, stride=stride, padding=padding)

    def forward(self, x):
        return self.conv(x)


def test_a_backbone_losing_exactly_one_cell_passes():
    # 32 px, stride 4, 5×5 valid kernel: (32 - 5) // 4 + 1 = 7 cells, one fewer than 32 / 4.
    backbone = ConvBackbone(kernel=5, padding=0)
    assert backbone(torch.zeros(1, 3, 32, 32)).shape[-1] == 7
    testing.check_backbone(backbone)


def test_a_backbone_with_exactly_one_extra_cell_passes():
    # 1×1 kernel padded by 2: (32 + 4 - 1) // 4 + 1 = 9 cells, one more than 32 / 4.
    backbone = ConvBackbone(kernel=1, padding=2)
    assert backbone(torch.zeros(1, 3, 32, 32)).shape[-1] == 9
    testing.check_backbone(backbone)


def test_a_backbone_losing_two_cells_fails():
    # 9×9 valid kernel: (32 - 9) // 4 + 1 = 6 cells, below (32 - 4) // 4 = 7.
    with pytest.raises(ContractError, match="out_stride=4 predicts h≈8 for 32px inputs, got 6"):
        testing.check_backbone(ConvBackbone(kernel=9, padding=0))


class Narrow(ConvBackbone):
    """Returns 4 of its 8 declared channels: the message then shows the probed size."""

    def forward(self, x):
        return self.conv(x)[:, :4]


@pytest.mark.parametrize(
    ("stride", "min_input_size", "kwargs", "probed"),
    [
        (4, None, {}, "2×8×h×w for 32×32"),  # at least 32 px
        (32, None, {}, "2×8×h×w for 64×64"),  # two cells of the stride
        (4, 50, {}, "2×8×h×w for 50×50"),  # the declared minimum
        (4, None, {"image_size": 40, "batch": 3}, "3×8×h×w for 40×40"),
    ],
)
def test_check_backbone_probes_the_documented_size_and_batch(
    stride, min_input_size, kwargs, probed
):
    backbone = Narrow(kernel=stride, padding=0, stride=stride)
    backbone.out_stride = stride
    if min_input_size is not None:
        backbone.min_input_size = min_input_size
    with pytest.raises(ContractError, match=f"backbone output must be {probed} inputs"):
        testing.check_backbone(backbone, **kwargs)


def test_a_backbone_answering_alone_far_from_in_a_batch_fails():
    class LoudAlone(ConvBackbone):
        def forward(self, x):
            # tiny values in a batch, 10 for an image alone: off by far more than the value
            return self.conv(x) * 1e-3 + 10.0 * (x.shape[0] == 1)

    with pytest.raises(ContractError, match="depends on the rest of the batch"):
        testing.check_backbone(LoudAlone())


class OneHotHead(nn.Module):
    """Unit rows along the first axis, signed by the pooled input (differentiable)."""

    out_dim = 8

    def __init__(self, sign_alone: float = 1.0):
        super().__init__()
        self.sign_alone = sign_alone

    def forward(self, x):
        pooled = x.mean(dim=(2, 3))
        rows = nn.functional.normalize(pooled[:, :1], dim=1)  # +1, with a gradient path
        sign = self.sign_alone if x.shape[0] == 1 else 1.0
        return nn.functional.pad(rows * sign, (0, self.out_dim - 1)) + 0 * pooled.sum()


def test_a_head_answering_alone_the_opposite_fails():
    testing.check_head(OneHotHead(), 8)
    # alone: -e1, in a batch: +e1, every entry within 2 of the other
    with pytest.raises(ContractError, match="head output for one image depends on the rest"):
        testing.check_head(OneHotHead(sign_alone=-1.0), 8)


def test_a_head_with_norms_of_1_01_fails():
    class Long(OneHotHead):
        def forward(self, x):
            return super().forward(x) * 1.01

    with pytest.raises(ContractError, match="rows must be L2-normalised, got norms"):
        testing.check_head(Long(), 8)


def _hinge(embeddings, labels, triplets=None, *, logits=None):
    """A triplet hinge scaled down to about 1e-3: the tolerances are what matters."""
    if triplets is None:
        raise ValueError("triplets: needed")
    a, p, n = triplets
    terms = ((embeddings[a] * (embeddings[n] - embeddings[p])).sum(dim=1) + 0.5).relu()
    return 1e-3 * (terms.mean() if terms.numel() else embeddings.sum() * 0)


def _as_loss(function, needs_triplets=True):
    function.needs_triplets = needs_triplets
    function.logits = None
    return function


def test_a_loss_far_larger_without_triplets_fails():
    def larger_without(embeddings, labels, triplets=None, *, logits=None):
        if triplets is None:
            return 10.0 + embeddings.sum() * 0
        return _hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="needs_triplets=False but its value depends"):
        testing.check_loss(_as_loss(larger_without, needs_triplets=False))


def test_a_loss_far_larger_on_a_reordered_batch_fails():
    def order_aware(embeddings, labels, triplets=None, *, logits=None):
        unsorted = bool((labels[1:] < labels[:-1]).any())  # the check's batch comes sorted
        return _hinge(embeddings, labels, triplets) + 10.0 * unsorted

    with pytest.raises(ContractError, match="loss changes when the batch is reordered"):
        testing.check_loss(_as_loss(order_aware))


def test_a_loss_far_larger_with_the_classes_renamed_fails():
    def name_aware(embeddings, labels, triplets=None, *, logits=None):
        renamed = int(labels.sum()) != 4 * (0 + 1 + 2 + 3)  # 4 classes × 4 images: 0..3
        return _hinge(embeddings, labels, triplets) + 10.0 * renamed

    with pytest.raises(ContractError, match="loss changes when the classes are renamed"):
        testing.check_loss(_as_loss(name_aware))
