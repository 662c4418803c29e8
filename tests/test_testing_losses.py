"""check_loss accepts losses honouring the contract and names what a broken one breaks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pyinstance import testing
from pyinstance.testing import ContractError


def _loss(function, *, needs_triplets=True, logits=None):
    """A plain function as a loss: the two attributes the trainer reads set on it."""
    function.needs_triplets = needs_triplets
    function.logits = logits
    return function


def _dot_triplet(embeddings, triplets):
    a, p, n = triplets
    return (embeddings[a] * (embeddings[n] - embeddings[p])).sum(dim=1)


def _triplet_hinge(embeddings, labels, triplets=None, *, logits=None):
    if triplets is None:
        raise ValueError("triplets: needed")
    terms = (_dot_triplet(embeddings, triplets) + 0.5).relu()
    return terms.mean() if terms.numel() else embeddings.sum() * 0


def _image_cross_entropy(embeddings, labels, triplets=None, *, logits=None):
    if logits is None or logits.shape[0] != labels.shape[0]:
        raise ValueError("logits: expected B×K")
    return F.cross_entropy(logits, labels)


def test_plain_functions_with_the_attributes_pass():
    testing.check_loss(_loss(_triplet_hinge))
    testing.check_loss(_loss(_image_cross_entropy, needs_triplets=False, logits="image"))


def test_loss_that_is_not_callable_fails():
    with pytest.raises(ContractError, match="loss must be callable, got int"):
        testing.check_loss(3)


def test_loss_without_needs_triplets_fails():
    def hinge(embeddings, labels, triplets=None, *, logits=None):
        return _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="bool attribute needs_triplets .* got None"):
        testing.check_loss(hinge)


def test_loss_with_an_unknown_logits_kind_fails():
    with pytest.raises(ContractError, match="logits must be one of .* got 'scores'"):
        testing.check_loss(_loss(_triplet_hinge, logits="scores"))


def test_loss_without_the_logits_keyword_fails():
    def old_signature(embeddings, labels, triplets=None):
        return _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="loss raised on a valid batch: TypeError.*logits"):
        testing.check_loss(_loss(old_signature))


def test_loss_without_gradient_fails():
    def detached(embeddings, labels, triplets=None, *, logits=None):
        return embeddings.detach().sum() * 0 + torch.tensor(1.0, requires_grad=True)

    with pytest.raises(ContractError, match="no gradient to the embeddings"):
        testing.check_loss(_loss(detached, needs_triplets=False))


def test_loss_without_a_graph_fails():
    def constant(embeddings, labels, triplets=None, *, logits=None):
        return torch.tensor(1.0)

    with pytest.raises(ContractError, match="not differentiable"):
        testing.check_loss(_loss(constant, needs_triplets=False))


def test_loss_per_triplet_instead_of_a_scalar_fails():
    def unreduced(embeddings, labels, triplets=None, *, logits=None):
        return _dot_triplet(embeddings, triplets)

    with pytest.raises(
        ContractError,
        match=r"loss on a valid batch must return a scalar tensor, got torch.Size\(\[576\]\)",
    ):
        testing.check_loss(_loss(unreduced))


def test_loss_returning_a_python_float_fails():
    with pytest.raises(ContractError, match="must return a scalar tensor, got float"):
        testing.check_loss(_loss(lambda embeddings, labels, triplets=None, *, logits=None: 0.5))


def test_loss_returning_nan_fails():
    def log_of_negative(embeddings, labels, triplets=None, *, logits=None):
        return torch.log(embeddings.sum() * 0 - 1)

    with pytest.raises(ContractError, match="loss on a valid batch returned nan"):
        testing.check_loss(_loss(log_of_negative))


def test_loss_with_a_non_finite_gradient_fails():
    def sqrt_at_zero(embeddings, labels, triplets=None, *, logits=None):
        return (embeddings - embeddings).square().sum().sqrt()  # value 0, gradient 0·inf

    with pytest.raises(ContractError, match="loss gradient w.r.t. embeddings is not finite"):
        testing.check_loss(_loss(sqrt_at_zero))


def test_loss_with_a_zero_gradient_fails():
    def constant(embeddings, labels, triplets=None, *, logits=None):
        return embeddings.sum() * 0 + 1

    with pytest.raises(ContractError, match="no gradient to the embeddings on a hard random"):
        testing.check_loss(_loss(constant))


def test_loss_raising_on_a_valid_batch_fails():
    def broken(embeddings, labels, triplets=None, *, logits=None):
        raise RuntimeError("boom")

    with pytest.raises(ContractError, match="loss raised on a valid batch: RuntimeError: boom"):
        testing.check_loss(_loss(broken))


def test_loss_needing_triplets_but_accepting_none_fails():
    def all_pairs_when_none(embeddings, labels, triplets=None, *, logits=None):
        if triplets is None:
            return (embeddings @ embeddings.T).mean()
        return _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="accepted triplets=None .* naming 'triplets'"):
        testing.check_loss(_loss(all_pairs_when_none))


def test_loss_refusing_no_triplets_without_naming_them_fails():
    def vague(embeddings, labels, triplets=None, *, logits=None):
        if triplets is None:
            raise ValueError("a miner is needed")
        return _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="must name 'triplets', got: a miner is needed"):
        testing.check_loss(_loss(vague))


def test_loss_declaring_no_triplets_but_using_them_fails():
    with pytest.raises(ContractError, match="loss raised with triplets=None: ValueError"):
        testing.check_loss(_loss(_triplet_hinge, needs_triplets=False))

    def optional(embeddings, labels, triplets=None, *, logits=None):
        pairs = (embeddings @ embeddings.T).relu().mean()
        return pairs if triplets is None else pairs + _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="needs_triplets=False but its value depends"):
        testing.check_loss(_loss(optional, needs_triplets=False))


def test_loss_averaging_an_empty_set_of_triplets_fails():
    def mean_over_triplets(embeddings, labels, triplets=None, *, logits=None):
        if triplets is None:
            raise ValueError("triplets: needed")
        return (_dot_triplet(embeddings, triplets) + 0.5).relu().mean()

    with pytest.raises(ContractError, match="loss with no triplets returned nan"):
        testing.check_loss(_loss(mean_over_triplets))


def test_loss_returning_nothing_for_no_triplets_fails():
    def none_when_empty(embeddings, labels, triplets=None, *, logits=None):
        if triplets is not None and triplets[0].numel() == 0:
            return None
        return _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(
        ContractError, match="loss with no triplets must return a scalar tensor, got NoneType"
    ):
        testing.check_loss(_loss(none_when_empty))


def test_loss_with_no_triplets_must_stay_differentiable():
    def constant_when_empty(embeddings, labels, triplets=None, *, logits=None):
        if triplets is not None and triplets[0].numel() == 0:
            return torch.tensor(0.0)  # breaks loss.backward() in a training step
        return _triplet_hinge(embeddings, labels, triplets)

    with pytest.raises(ContractError, match="^loss with no triplets must stay differentiable"):
        testing.check_loss(_loss(constant_when_empty))


def test_loss_depending_on_the_batch_order_fails():
    def first_row_special(embeddings, labels, triplets=None, *, logits=None):
        return _triplet_hinge(embeddings, labels, triplets) + embeddings[0].sum()

    with pytest.raises(ContractError, match="loss changes when the batch is reordered"):
        testing.check_loss(_loss(first_row_special))


def test_loss_depending_on_class_names_fails():
    def penalises_class_zero(embeddings, labels, triplets=None, *, logits=None):
        return _image_cross_entropy(embeddings, labels, logits=logits) + logits[:, 0].mean()

    with pytest.raises(ContractError, match="loss changes when the classes are renamed"):
        testing.check_loss(_loss(penalises_class_zero, needs_triplets=False, logits="image"))


def test_loss_accepting_missing_logits_fails():
    def falls_back(embeddings, labels, triplets=None, *, logits=None):
        if logits is None:
            return embeddings.square().mean()
        return F.cross_entropy(logits, labels)

    with pytest.raises(ContractError, match="accepted logits=None .* naming 'logits'"):
        testing.check_loss(_loss(falls_back, needs_triplets=False, logits="image"))


def test_loss_accepting_ill_shaped_logits_fails():
    def unchecked(embeddings, labels, triplets=None, *, logits=None):
        if logits is None:
            raise ValueError("logits: needed")
        return logits.logsumexp(dim=1).mean() - logits[:, 0].mean() * 0

    with pytest.raises(ContractError, match="accepted logits='image' for one image fewer"):
        testing.check_loss(_loss(unchecked, needs_triplets=False, logits="image"))


def test_loss_whose_gradient_misses_the_logits_fails():
    def detaches(embeddings, labels, triplets=None, *, logits=None):
        _image_cross_entropy(embeddings, labels, logits=logits)  # validates
        return F.cross_entropy(logits.detach(), labels) + embeddings.square().mean()

    with pytest.raises(ContractError, match="gradient does not reach logits='image'"):
        testing.check_loss(_loss(detaches, needs_triplets=False, logits="image"))


def test_map_loss_reading_one_scale_only_fails():
    def first_scale(embeddings, labels, triplets=None, *, logits=None):
        if not isinstance(logits, list) or any(m.shape[0] != labels.numel() for m in logits):
            raise ValueError("logits: expected B×K×H×W maps")
        return F.cross_entropy(logits[0].mean(dim=(2, 3)), labels)

    with pytest.raises(ContractError, match=r"gradient does not reach logits='map' \(tensor 1\)"):
        testing.check_loss(_loss(first_scale, needs_triplets=False, logits="map"))


def test_map_loss_refusing_a_single_tensor_fails():
    def lists_only(embeddings, labels, triplets=None, *, logits=None):
        if not isinstance(logits, list) or any(m.shape[0] != labels.numel() for m in logits):
            raise ValueError("logits: expected a list of B×K×H×W maps")
        return sum(F.cross_entropy(m.mean(dim=(2, 3)), labels) for m in logits)

    with pytest.raises(ContractError, match="loss raised with logits='map' as one tensor"):
        testing.check_loss(_loss(lists_only, needs_triplets=False, logits="map"))
