"""The contract checks accept well-behaved components and catch broken ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyinstance import testing
from pyinstance.models.losses import TripletMarginLoss
from pyinstance.testing import ContractError


class GoodBackbone(nn.Module):
    out_channels = 8
    out_stride = 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        return self.conv(x)


class GoodHead(nn.Module):
    def __init__(self, in_channels: int):
        super().__init__()
        self.out_dim = in_channels

    def forward(self, x):
        return nn.functional.normalize(x.mean(dim=(2, 3)), dim=1)


def good_miner(embeddings, labels, ref_embeddings=None, ref_labels=None):
    same_set = ref_embeddings is None
    refs = embeddings if same_set else ref_embeddings
    ref_labels = labels if same_set else ref_labels
    similarity = embeddings @ refs.T
    same = labels[:, None] == ref_labels[None, :]
    if same_set:
        same.fill_diagonal_(False)
    different = ~(labels[:, None] == ref_labels[None, :])
    valid = same.any(1) & different.any(1)
    positives = similarity.masked_fill(~same, 2).argmin(1)
    negatives = similarity.masked_fill(~different, -2).argmax(1)
    anchors = torch.arange(len(labels))[valid]
    return anchors, positives[valid], negatives[valid]


def test_good_components_pass():
    testing.check_backbone(GoodBackbone())
    testing.check_head(GoodHead(8), 8)
    testing.check_loss(TripletMarginLoss(margin=0.5))
    testing.check_miner(good_miner)


def test_backbone_without_stride_attribute_fails():
    class NoStride(GoodBackbone):
        out_stride = None

    with pytest.raises(ContractError, match="positive int attribute 'out_stride'"):
        testing.check_backbone(NoStride())


def test_backbone_with_wrong_stride_fails():
    class WrongStride(GoodBackbone):
        out_stride = 2

    with pytest.raises(ContractError, match="out_stride=2 predicts"):
        testing.check_backbone(WrongStride())


def test_backbone_mixing_the_batch_fails():
    class BatchNormInEval(GoodBackbone):
        def forward(self, x):
            out = self.conv(x)
            return out - out.mean(dim=0, keepdim=True)

    with pytest.raises(ContractError, match="depends on the rest of the batch"):
        testing.check_backbone(BatchNormInEval())


def test_head_not_normalised_fails():
    class Raw(GoodHead):
        def forward(self, x):
            return x.mean(dim=(2, 3)) * 3

    with pytest.raises(ContractError, match="L2-normalised"):
        testing.check_head(Raw(8), 8)


def test_head_with_wrong_out_dim_fails():
    head = GoodHead(8)
    head.out_dim = 4
    with pytest.raises(ContractError, match="head output must be 3×4"):
        testing.check_head(head, 8)


def test_loss_without_gradient_fails():
    def detached(embeddings, labels, triplets=None):
        return embeddings.detach().sum() * 0 + torch.tensor(1.0, requires_grad=True)

    with pytest.raises(ContractError, match="gradient"):
        testing.check_loss(detached)


def test_miner_with_invalid_negative_fails():
    def swaps(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = good_miner(embeddings, labels, ref_embeddings, ref_labels)
        return a, p, p

    with pytest.raises(ContractError, match="a negative has the label of its anchor"):
        testing.check_miner(swaps)


def test_miner_returning_int32_fails():
    def narrow(*args, **kwargs):
        return tuple(t.int() for t in good_miner(*args, **kwargs))

    with pytest.raises(ContractError, match="1-D int64 tensor"):
        testing.check_miner(narrow)


def test_nondeterministic_miner_fails_unless_declared():
    def shuffled(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = good_miner(embeddings, labels, ref_embeddings, ref_labels)
        order = torch.randperm(len(a))
        return a[order], p[order], n[order]

    with pytest.raises(ContractError, match="not deterministic"):
        testing.check_miner(shuffled)
    testing.check_miner(shuffled, deterministic=False)
