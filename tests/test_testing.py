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


def test_miner_with_invalid_negative_fails():
    def swaps(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = good_miner(embeddings, labels, ref_embeddings, ref_labels)
        return a, p, p

    with pytest.raises(ContractError, match="^a negative has the label of its anchor"):
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


# --- every failure branch, each with a component broken on purpose -----------------------


def test_backbone_that_is_not_a_module_fails():
    with pytest.raises(ContractError, match="backbone must be a torch.nn.Module, got function"):
        testing.check_backbone(lambda images: images)


@pytest.mark.parametrize("channels", [True, 0, 8.0])
def test_backbone_without_a_positive_int_out_channels_fails(channels):
    class Odd(GoodBackbone):
        out_channels = channels

    with pytest.raises(ContractError, match=f"'out_channels', got {channels!r}"):
        testing.check_backbone(Odd())


def test_backbone_with_an_invalid_min_input_size_fails():
    class NoSize(GoodBackbone):
        min_input_size = 0

    with pytest.raises(ContractError, match="backbone.min_input_size: expected an integer >= 1"):
        testing.check_backbone(NoSize())


def test_backbone_returning_a_tuple_fails():
    class Pair(GoodBackbone):
        def forward(self, x):
            out = self.conv(x)
            return out, out

    with pytest.raises(ContractError, match="backbone must return a tensor, got tuple"):
        testing.check_backbone(Pair())


def test_backbone_with_fewer_channels_than_declared_fails():
    class Narrow(GoodBackbone):
        def forward(self, x):
            return self.conv(x)[:, :4]

    with pytest.raises(
        ContractError,
        match=r"backbone output must be 2×8×h×w for 32×32 inputs, got \(2, 4, 8, 8\)",
    ):
        testing.check_backbone(Narrow())


def test_backbone_with_a_larger_map_than_its_stride_predicts_fails():
    class Understated(GoodBackbone):
        out_stride = 8  # the map is 8×8 for 32 px, not ≈ 4×4

    with pytest.raises(ContractError, match="out_stride=8 predicts h≈4 for 32px inputs, got 8"):
        testing.check_backbone(Understated())


def test_backbone_with_non_finite_output_fails():
    class Overflowing(GoodBackbone):
        def forward(self, x):
            return self.conv(x) / 0.0  # ±inf, and NaN where the convolution gives 0

    with pytest.raises(ContractError, match="backbone output has NaN or infinite values"):
        testing.check_backbone(Overflowing())


def test_backbone_whose_parameters_receive_no_gradient_fails():
    class Ignored(GoodBackbone):
        def forward(self, x):
            return self.conv(x) * 0  # the parameters are trainable but never matter

    with pytest.raises(ContractError, match="no trainable backbone parameter received a gradient"):
        testing.check_backbone(Ignored())


def test_backbone_detaching_its_output_fails():
    class Detached(GoodBackbone):
        def forward(self, x):
            return self.conv(x).detach()

    with pytest.raises(ContractError, match="no trainable backbone parameter received a gradient"):
        testing.check_backbone(Detached())


def test_frozen_backbone_passes():
    backbone = GoodBackbone().requires_grad_(False)
    testing.check_backbone(backbone)


def test_head_that_is_not_a_module_fails():
    with pytest.raises(ContractError, match="head must be a torch.nn.Module, got function"):
        testing.check_head(lambda x: x, 8)


def test_head_with_zero_out_dim_fails():
    head = GoodHead(8)
    head.out_dim = 0
    with pytest.raises(ContractError, match="positive int attribute 'out_dim', got 0"):
        testing.check_head(head, 8)


def test_head_returning_a_list_fails():
    class Listed(GoodHead):
        def forward(self, x):
            return list(super().forward(x))

    with pytest.raises(ContractError, match=r"head output must be 3×8 for 7×7 maps, got \(\)"):
        testing.check_head(Listed(8), 8)


def test_head_failing_on_a_non_square_map_fails():
    class SquareOnly(GoodHead):
        def forward(self, x):
            return super().forward(x[:, :, : x.shape[2], : x.shape[2]]).repeat(1, x.shape[2] // 7)

    with pytest.raises(ContractError, match="head output must be 3×8 for 5×9 maps, got"):
        testing.check_head(SquareOnly(8), 8)


def test_head_with_non_finite_output_fails():
    class NaNHead(GoodHead):
        def forward(self, x):
            return super().forward(x) / (x.mean(dim=(2, 3)) - x.mean(dim=(2, 3)))

    with pytest.raises(ContractError, match="head output has NaN or infinite values"):
        testing.check_head(NaNHead(8), 8)


def test_head_mixing_the_batch_fails():
    class BatchCentred(GoodHead):
        def forward(self, x):
            pooled = x.mean(dim=(2, 3))
            return nn.functional.normalize(pooled - pooled.mean(dim=0, keepdim=True), dim=1)

    with pytest.raises(ContractError, match="head output for one image depends on the rest"):
        testing.check_head(BatchCentred(8), 8)


def test_head_with_parameters_but_blind_to_its_input_gradient_fails():
    class Detaching(GoodHead):
        def __init__(self, in_channels):
            super().__init__(in_channels)
            self.scale = nn.Parameter(torch.ones(in_channels))

        def forward(self, x):
            return nn.functional.normalize(x.detach().mean(dim=(2, 3)) * self.scale, dim=1)

    with pytest.raises(ContractError, match="head output is not differentiable w.r.t. its input"):
        testing.check_head(Detaching(8), 8)


def test_head_computing_without_autograd_fails():
    class NumPyHead(GoodHead):
        def forward(self, x):
            pooled = torch.from_numpy(x.detach().numpy().mean(axis=(2, 3)))
            return nn.functional.normalize(pooled, dim=1)

    with pytest.raises(ContractError, match="head output is not differentiable w.r.t. its input"):
        testing.check_head(NumPyHead(8), 8)


def _altered_miner(change):
    def miner(embeddings, labels, ref_embeddings=None, ref_labels=None):
        return change(*good_miner(embeddings, labels, ref_embeddings, ref_labels))

    return miner


def test_miner_that_is_not_callable_fails():
    with pytest.raises(ContractError, match="miner must be callable, got list"):
        testing.check_miner([])


def test_miner_returning_a_list_fails():
    with pytest.raises(
        ContractError, match="must return a tuple .anchors, positives, negatives., got list"
    ):
        testing.check_miner(_altered_miner(lambda a, p, n: [a, p, n]))


def test_miner_returning_a_2d_index_fails():
    with pytest.raises(ContractError, match="miner positives must be a 1-D int64 tensor"):
        testing.check_miner(_altered_miner(lambda a, p, n: (a, p[:, None], n)))


def test_miner_with_index_tensors_of_different_lengths_fails():
    with pytest.raises(ContractError, match="miner index tensors differ in length: 20, 20, 19"):
        testing.check_miner(_altered_miner(lambda a, p, n: (a, p, n[:-1])))


def test_miner_with_an_anchor_outside_the_batch_fails():
    with pytest.raises(ContractError, match="^miner anchors index outside the batch"):
        testing.check_miner(_altered_miner(lambda a, p, n: (a + 1, p, n)))


def test_miner_indexing_the_batch_instead_of_the_references_fails():
    def batch_indices(embeddings, labels, ref_embeddings=None, ref_labels=None):
        if ref_embeddings is None:
            return good_miner(embeddings, labels)
        a, p, n = good_miner(embeddings, labels, ref_embeddings, ref_labels)
        return a, p, n + ref_labels.numel()  # off the end of the references

    with pytest.raises(ContractError, match="miner negatives index outside the reference set"):
        testing.check_miner(batch_indices)


def test_miner_with_a_negative_index_fails():
    with pytest.raises(ContractError, match="miner positives index outside the reference set"):
        testing.check_miner(_altered_miner(lambda a, p, n: (a, p - p.max() - 1, n)))


def test_miner_with_a_positive_of_the_wrong_label_fails():
    with pytest.raises(ContractError, match="^a positive has another label than its anchor"):
        testing.check_miner(_altered_miner(lambda a, p, n: (a, n, p)))


def test_miner_pairing_an_anchor_with_itself_fails():
    with pytest.raises(ContractError, match="^an anchor is its own positive"):
        testing.check_miner(_altered_miner(lambda a, p, n: (a, a.clone(), n)))


def test_anchor_equal_to_positive_index_is_fine_against_references():
    def same_index(embeddings, labels, ref_embeddings=None, ref_labels=None):
        if ref_embeddings is None:
            return good_miner(embeddings, labels)
        # batch row i and reference row i are different images: pairing them is allowed
        keep = labels == ref_labels[: labels.numel()]
        anchors = torch.arange(labels.numel())[keep]
        negatives = (ref_labels[None, :] != labels[anchors, None]).int().argmax(dim=1)
        return anchors, anchors.clone(), negatives

    testing.check_miner(same_index)


def test_miner_finding_nothing_fails():
    empty = torch.empty(0, dtype=torch.int64)
    with pytest.raises(ContractError, match="^miner found no triplet in a batch of 5 classes"):
        testing.check_miner(lambda *args, **kwargs: (empty, empty, empty))


def test_miner_returning_triplets_for_one_class_fails():
    def pads_lonely_batches(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = good_miner(embeddings, labels, ref_embeddings, ref_labels)
        if a.numel() == 0:  # "no negative": falls back to the hardest other image
            a, p = torch.arange(2), torch.tensor([1, 0])
            return a, p, torch.tensor([2, 3])
        return a, p, n

    with pytest.raises(
        ContractError, match="^miner returned triplets for a batch with one class only"
    ):
        testing.check_miner(pads_lonely_batches)


def test_miner_raising_on_one_class_fails():
    def strict(embeddings, labels, ref_embeddings=None, ref_labels=None):
        if labels.unique().numel() < 2:
            raise ValueError("labels: expected at least two classes")
        return good_miner(embeddings, labels, ref_embeddings, ref_labels)

    with pytest.raises(
        ContractError,
        match="miner raised on a batch with one class only: ValueError: labels: expected",
    ):
        testing.check_miner(strict)


def test_miner_warning_on_one_class_passes():
    def warns(embeddings, labels, ref_embeddings=None, ref_labels=None):
        if labels.unique().numel() < 2:
            import warnings

            warnings.warn("one class", RuntimeWarning, stacklevel=2)
        return good_miner(embeddings, labels, ref_embeddings, ref_labels)

    testing.check_miner(warns)


def test_miner_indexing_one_past_the_references_fails():
    def one_past(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = good_miner(embeddings, labels, ref_embeddings, ref_labels)
        if ref_embeddings is not None:
            n = n.clone()
            n[0] = ref_labels.numel()  # the first row after the last reference
        return a, p, n

    with pytest.raises(ContractError, match="^miner negatives index outside the reference set"):
        testing.check_miner(one_past)


def test_miner_finding_a_single_triplet_passes():
    testing.check_miner(_altered_miner(lambda a, p, n: (a[:1], p[:1], n[:1])))
