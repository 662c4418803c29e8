"""Contract checks for plugin authors: call them in your own tests.

Each ``check_*`` builds small synthetic inputs, exercises the component the way pyinstance
will, and raises :class:`ContractError` (an ``AssertionError``) naming what is wrong.
Every built-in component passes the same checks in pyinstance's own test suite.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from pyinstance.models.contracts import LOSS_LOGITS_KINDS, min_input_size

__all__ = [
    "ContractError",
    "check_backbone",
    "check_classifier",
    "check_head",
    "check_loss",
    "check_miner",
    "check_reranker",
]


class ContractError(AssertionError):
    """A component breaks the contract of its kind."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _positive_int_attribute(obj: Any, attribute: str, what: str) -> int:
    value = getattr(obj, attribute, None)
    _expect(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{what} must have a positive int attribute {attribute!r}, got {value!r}",
    )
    return value


def _clustered_batch(
    classes: int, per_class: int, dim: int, *, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised embeddings around ``classes`` random centres, labels 0..classes-1."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=1)
    labels = torch.arange(classes).repeat_interleave(per_class)
    noise = spread * torch.randn(classes * per_class, dim, generator=generator)
    return torch.nn.functional.normalize(centres[labels] + noise, dim=1), labels


def check_backbone(backbone: nn.Module, *, image_size: int | None = None, batch: int = 2) -> None:
    """A backbone maps B×3×H×W images to a finite B×C×h×w map, C = ``out_channels``."""
    _expect(
        isinstance(backbone, nn.Module),
        f"backbone must be a torch.nn.Module, got {type(backbone).__name__}",
    )
    channels = _positive_int_attribute(backbone, "out_channels", "backbone")
    stride = _positive_int_attribute(backbone, "out_stride", "backbone")
    # Unpadded ("valid") convolutions lose a border: a backbone may declare
    # ``min_input_size``, the smallest side giving a 1×1 map; its maps then have at least
    # (size - min_input_size) / stride cells. Without it, no more than one cell is lost.
    try:
        smallest = min_input_size(backbone)
    except (TypeError, ValueError) as error:
        raise ContractError(str(error)) from error
    size = image_size or max(32, 2 * stride, smallest)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    backbone.eval()
    with torch.no_grad():
        features = backbone(images)
        single = backbone(images[:1])
    _expect(
        isinstance(features, torch.Tensor),
        f"backbone must return a tensor, got {type(features).__name__}",
    )
    _expect(
        features.dim() == 4 and features.shape[:2] == (batch, channels),
        f"backbone output must be {batch}×{channels}×h×w for {size}×{size} inputs, got {tuple(features.shape)}",
    )
    expected = size / stride
    for axis, extent in zip("hw", features.shape[2:], strict=True):
        _expect(
            (size - smallest) // stride <= extent <= expected + 1,
            f"backbone out_stride={stride} predicts {axis}≈{expected:g} for {size}px inputs, got {extent}",
        )
    _expect(bool(torch.isfinite(features).all()), "backbone output has NaN or infinite values")
    # float32 sums in another order (the kernels a batch size picks) differ near zero by a
    # few units of the largest value's rounding: the absolute tolerance scales with it
    scale = max(1.0, float(features.abs().max()))
    _expect(
        torch.allclose(single, features[:1], rtol=1e-4, atol=1e-5 * scale),
        "backbone output for one image depends on the rest of the batch (in eval mode)",
    )
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    if trainable:
        backbone.train()
        energy = backbone(images).float().square().mean()
        if energy.requires_grad:  # a detached output reaches no parameter
            energy.backward()
        _expect(
            any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable),
            "no trainable backbone parameter received a gradient",
        )
        backbone.zero_grad(set_to_none=True)
        backbone.eval()


def check_head(head: nn.Module, in_channels: int, *, batch: int = 3) -> None:
    """A head maps B×C×h×w features (any h, w) to finite, L2-normalised B×``out_dim`` descriptors."""
    _expect(
        isinstance(head, nn.Module), f"head must be a torch.nn.Module, got {type(head).__name__}"
    )
    dim = _positive_int_attribute(head, "out_dim", "head")
    generator = torch.Generator().manual_seed(0)
    head.eval()
    for height, width in ((7, 7), (5, 9)):
        features = torch.rand(batch, in_channels, height, width, generator=generator)
        with torch.no_grad():
            descriptors = head(features)
            single = head(features[:1])
        _expect(
            isinstance(descriptors, torch.Tensor) and tuple(descriptors.shape) == (batch, dim),
            f"head output must be {batch}×{dim} for {height}×{width} maps, got "
            f"{tuple(getattr(descriptors, 'shape', ()))}",
        )
        _expect(bool(torch.isfinite(descriptors).all()), "head output has NaN or infinite values")
        norms = descriptors.float().norm(dim=1)
        _expect(
            torch.allclose(norms, torch.ones_like(norms), atol=1e-3),
            f"head output rows must be L2-normalised, got norms {norms.tolist()}",
        )
        _expect(
            torch.allclose(single, descriptors[:1], rtol=1e-4, atol=1e-5),
            "head output for one image depends on the rest of the batch (in eval mode)",
        )
    features = torch.rand(batch, in_channels, 7, 7, generator=generator, requires_grad=True)
    head.train()
    projected = (head(features) * torch.randn(batch, dim, generator=generator)).sum()
    if projected.requires_grad:  # a detached output reaches no input
        projected.backward()
    _expect(
        features.grad is not None and bool(features.grad.abs().sum() > 0),
        "head output is not differentiable w.r.t. its input features",
    )
    head.eval()


def _all_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    valid = same[:, :, None] & (labels[:, None, None] != labels[None, None, :])
    return tuple(index for index in valid.nonzero().unbind(dim=1))  # type: ignore[return-value]


_LOSS_CLASSES = 5  # logits' classes K: one more than the batch's 4 instances
_LOSS_REGIONS = 4  # regions per image for logits="regions" (the topk_region head's k)
_LOSS_MAP_SIZES = ((5, 5), (3, 4))  # two scales of FCN class maps for logits="map"


def _loss_attributes(loss: Any) -> tuple[bool, str | None]:
    needs_triplets = getattr(loss, "needs_triplets", None)
    _expect(
        isinstance(needs_triplets, bool),
        "loss must have a bool attribute needs_triplets (whether it uses a miner's triplets), "
        f"got {needs_triplets!r}",
    )
    kind = getattr(loss, "logits", "<missing>")
    _expect(
        kind in LOSS_LOGITS_KINDS,
        f"loss attribute logits must be one of {LOSS_LOGITS_KINDS} (what it needs in logits=), "
        f"got {kind!r}",
    )
    return needs_triplets, kind


def _loss_logits(kind: str | None, batch: int, seed: int) -> list[torch.Tensor]:
    """Random leaf tensors of the shapes ``kind`` names (none for None)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "image":
        shapes = [(batch, _LOSS_CLASSES)]
    elif kind == "regions":
        shapes = [(batch, _LOSS_REGIONS, _LOSS_CLASSES)]
    elif kind == "map":
        shapes = [(batch, _LOSS_CLASSES, h, w) for h, w in _LOSS_MAP_SIZES]
    else:
        shapes = []
    return [torch.randn(shape, generator=generator).requires_grad_(True) for shape in shapes]


def _logits_argument(kind: str | None, tensors: list[torch.Tensor]) -> Any:
    """What the trainer passes as ``logits=``: a list of maps, one tensor, or None."""
    if kind == "map":
        return list(tensors)
    return tensors[0] if tensors else None


def _call_loss(loss: Any, what: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The loss's value, checked to be a finite scalar tensor."""
    try:
        value = loss(*args, **kwargs)
    except Exception as error:
        raise ContractError(f"loss raised {what}: {type(error).__name__}: {error}") from error
    _expect(
        isinstance(value, torch.Tensor) and value.dim() == 0,
        f"loss {what} must return a scalar tensor, got {getattr(value, 'shape', type(value).__name__)}",
    )
    _expect(bool(torch.isfinite(value)), f"loss {what} returned {value.item()}")
    return value


def _loss_refuses(loss: Any, argument: str, what: str, *args: Any, **kwargs: Any) -> None:
    """The call raises a ValueError/TypeError whose message names ``argument``."""
    try:
        loss(*args, **kwargs)
    except (ValueError, TypeError) as error:
        _expect(
            argument in str(error),
            f"loss error for {what} must name {argument!r}, got: {error}",
        )
        return
    raise ContractError(f"loss accepted {what} without an error naming {argument!r}")


def _ill_shaped_logits(kind: str, tensors: list[torch.Tensor]) -> Any:
    """Logits of the right kind for one image fewer than the batch."""
    return _logits_argument(kind, [tensor.detach()[1:] for tensor in tensors])


def _permuted_value(
    loss: Any,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    kind: str | None,
    logits: list[torch.Tensor],
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss on the batch in another order, and with the classes renamed.

    Rows move with their triplet indices and logits; renaming class ``c`` to ``rename[c]``
    moves logits' column ``c`` to ``rename[c]``. Neither may change the value.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.numel(), generator=generator)
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel())
    reordered = _call_loss(
        loss,
        "on a reordered batch",
        embeddings[order],
        labels[order],
        tuple(position[index] for index in triplets),
        logits=_logits_argument(kind, [tensor[order] for tensor in logits]),
    )
    rename = torch.randperm(_LOSS_CLASSES, generator=generator)
    columns = torch.argsort(rename)  # new column j holds old column columns[j]
    class_dim = {"image": 1, "map": 1, "regions": 2}
    renamed = _call_loss(
        loss,
        "with the classes renamed",
        embeddings,
        rename[labels],
        triplets,
        logits=_logits_argument(
            kind,
            [tensor.index_select(class_dim[kind], columns) for tensor in logits] if kind else [],
        ),
    )
    return reordered, renamed


def _check_loss_gradients(
    embeddings: torch.Tensor, kind: str | None, logits: list[torch.Tensor]
) -> None:
    """After backward: finite gradients reaching the embeddings (no logits) or every logits tensor."""
    _expect(
        embeddings.grad is None or bool(torch.isfinite(embeddings.grad).all()),
        "loss gradient w.r.t. embeddings is not finite",
    )
    if kind is None:
        _expect(
            embeddings.grad is not None and bool(embeddings.grad.abs().sum() > 0),
            "loss gives no gradient to the embeddings on a hard random batch",
        )
    for scale, tensor in enumerate(logits):
        _expect(
            tensor.grad is not None
            and bool(torch.isfinite(tensor.grad).all())
            and bool(tensor.grad.abs().sum() > 0),
            f"loss gradient does not reach logits={kind!r} (tensor {scale}), or is not finite",
        )


def _check_loss_arguments(
    loss: Any,
    value: torch.Tensor,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    triplets: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    needs_triplets: bool,
    kind: str | None,
    logits: list[torch.Tensor],
) -> None:
    """Triplets and logits as declared: refused when missing or ill-shaped, ignored when not needed."""
    if needs_triplets:
        _loss_refuses(
            loss,
            "triplets",
            "triplets=None (it needs_triplets)",
            embeddings,
            labels,
            None,
            logits=_logits_argument(kind, logits),
        )
    else:
        without = _call_loss(
            loss,
            "with triplets=None",
            embeddings,
            labels,
            None,
            logits=_logits_argument(kind, logits),
        )
        _expect(
            torch.allclose(without, value, rtol=1e-5, atol=1e-6),
            "loss declares needs_triplets=False but its value depends on the triplets",
        )
    if kind is None:
        return
    if kind == "map":
        one_scale = _call_loss(
            loss, "with logits='map' as one tensor", embeddings, labels, triplets, logits=logits[0]
        )
        listed = _call_loss(
            loss, "with logits='map' as a list", embeddings, labels, triplets, logits=logits[:1]
        )
        _expect(
            torch.allclose(one_scale, listed, rtol=1e-5, atol=1e-6),
            "loss with logits='map' must read one B×K×H×W tensor as a single scale",
        )
    _loss_refuses(
        loss,
        "logits",
        f"logits=None (its logits attribute is {kind!r})",
        embeddings,
        labels,
        triplets,
    )
    _loss_refuses(
        loss,
        "logits",
        f"logits={kind!r} for one image fewer than the batch",
        embeddings,
        labels,
        triplets,
        logits=_ill_shaped_logits(kind, logits),
    )


def _check_loss_without_triplets(
    loss: Any,
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    kind: str | None,
    logits: list[torch.Tensor],
) -> None:
    """An empty triplet set gives a finite scalar that stays in the graph."""
    empty = torch.empty(0, dtype=torch.int64)
    zero = _call_loss(
        loss,
        "with no triplets",
        embeddings.clone().requires_grad_(True),
        labels,
        (empty, empty, empty),
        logits=_logits_argument(kind, [tensor.clone().requires_grad_(True) for tensor in logits]),
    )
    _expect(
        zero.requires_grad,
        "loss with no triplets must stay differentiable (a zero gradient, not a constant)",
    )
    zero.backward()


def check_loss(loss: Any, *, dim: int = 16) -> None:
    """A loss honours :class:`~pyinstance.models.contracts.LossContract`.

    Checks the ``needs_triplets`` and ``logits`` attributes; that on a random batch (4
    instances × 4 images, logits of the declared kind for K = 5 classes) it returns a
    finite scalar whose gradient is finite and reaches the embeddings (a loss without
    logits) or every logits tensor (a loss with logits); that missing triplets (when
    needed), missing or ill-shaped logits are refused with an error naming the argument;
    that a loss not needing triplets ignores them and a map loss takes one map as one
    scale; that an empty triplet set keeps the graph; and that reordering the batch or
    renaming the classes keeps the value.
    """
    _expect(callable(loss), f"loss must be callable, got {type(loss).__name__}")
    needs_triplets, kind = _loss_attributes(loss)
    embeddings, labels = _clustered_batch(4, 4, dim, spread=1.0, seed=1)
    embeddings.requires_grad_(True)
    triplets = _all_triplets(labels)
    logits = _loss_logits(kind, labels.numel(), seed=7)
    value = _call_loss(
        loss,
        "on a valid batch",
        embeddings,
        labels,
        triplets,
        logits=_logits_argument(kind, logits),
    )
    _expect(value.requires_grad, "loss is not differentiable (its value has no graph)")
    value.backward()
    _check_loss_gradients(embeddings, kind, logits)

    value, embeddings = value.detach(), embeddings.detach()
    logits = [tensor.detach() for tensor in logits]
    _check_loss_arguments(loss, value, embeddings, labels, triplets, needs_triplets, kind, logits)
    _check_loss_without_triplets(loss, embeddings, labels, kind, logits)
    with torch.no_grad():
        reordered, renamed = _permuted_value(
            loss, embeddings, labels, triplets, kind, logits, seed=8
        )
    _expect(
        torch.allclose(reordered, value, rtol=1e-5, atol=1e-6),
        f"loss changes when the batch is reordered: {value.item()} -> {reordered.item()}",
    )
    _expect(
        torch.allclose(renamed, value, rtol=1e-5, atol=1e-6),
        f"loss changes when the classes are renamed: {value.item()} -> {renamed.item()}",
    )


def _check_triplets(
    result: Any,
    labels: torch.Tensor,
    ref_labels: torch.Tensor,
    *,
    same_set: bool,
    one_class: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _expect(
        isinstance(result, tuple) and len(result) == 3,
        f"miner must return a tuple (anchors, positives, negatives), got {type(result).__name__}",
    )
    anchors, positives, negatives = result
    for name, index in zip(("anchors", "positives", "negatives"), result, strict=True):
        _expect(
            isinstance(index, torch.Tensor) and index.dtype == torch.int64 and index.dim() == 1,
            f"miner {name} must be a 1-D int64 tensor, got {getattr(index, 'dtype', type(index).__name__)}",
        )
    _expect(
        anchors.shape == positives.shape == negatives.shape,
        f"miner index tensors differ in length: {anchors.numel()}, {positives.numel()}, {negatives.numel()}",
    )
    if one_class:
        _expect(anchors.numel() == 0, "miner returned triplets for a batch with one class only")
    if anchors.numel():
        _expect(
            int(anchors.min()) >= 0 and int(anchors.max()) < labels.numel(),
            "miner anchors index outside the batch",
        )
        for name, index in (("positives", positives), ("negatives", negatives)):
            _expect(
                int(index.min()) >= 0 and int(index.max()) < ref_labels.numel(),
                f"miner {name} index outside the reference set",
            )
        _expect(
            bool((labels[anchors] == ref_labels[positives]).all()),
            "a positive has another label than its anchor",
        )
        _expect(
            bool((labels[anchors] != ref_labels[negatives]).all()),
            "a negative has the label of its anchor",
        )
        if same_set:
            _expect(bool((anchors != positives).all()), "an anchor is its own positive")
    return anchors, positives, negatives


def check_miner(miner: Any, *, dim: int = 16, deterministic: bool = True) -> None:
    """A miner returns valid (anchor, positive, negative) int64 indices for batches and references."""
    _expect(callable(miner), f"miner must be callable, got {type(miner).__name__}")
    embeddings, labels = _clustered_batch(5, 4, dim, spread=0.8, seed=2)
    with torch.no_grad():
        first = _check_triplets(miner(embeddings, labels), labels, labels, same_set=True)
        _expect(first[0].numel() > 0, "miner found no triplet in a batch of 5 classes × 4 images")
        if deterministic:
            again = miner(embeddings, labels)
            _expect(
                all(torch.equal(a, b) for a, b in zip(first, again, strict=True)),
                "miner is not deterministic (pass deterministic=False for a stochastic miner)",
            )
        refs, ref_labels = _clustered_batch(5, 3, dim, spread=0.8, seed=3)
        _check_triplets(
            miner(embeddings[:8], labels[:8], ref_embeddings=refs, ref_labels=ref_labels),
            labels[:8],
            ref_labels,
            same_set=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a one-class batch may warn; it must not fail
            try:
                lonely = miner(embeddings[:4], labels[:4])
            except Exception as error:
                raise ContractError(
                    f"miner raised on a batch with one class only: {type(error).__name__}: {error}"
                ) from error
        _check_triplets(lonely, labels[:4], labels[:4], same_set=True, one_class=True)


def _instance_clusters(
    centres: torch.Tensor, per_instance: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_instance`` unit descriptors around each of ``centres``, with their codes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(centres.shape[0]).repeat_interleave(per_instance)
    noise = spread * torch.randn(labels.numel(), centres.shape[1], generator=generator)
    return torch.nn.functional.normalize(centres[labels] + noise, dim=1), labels


def _search(queries: torch.Tensor, refs: torch.Tensor, labels: torch.Tensor, k: int) -> Any:
    """Exact k-NN as the index returns it: -1/-inf padding past the N references."""
    from pyinstance.index.neighbours import Neighbours

    scores, rows = (queries @ refs.T).topk(min(k, refs.shape[0]), dim=1)
    pad = k - scores.shape[1]
    scores = torch.nn.functional.pad(scores, (0, pad), value=float("-inf"))
    rows = torch.nn.functional.pad(rows, (0, pad), value=-1)
    codes = torch.where(rows >= 0, labels[rows.clamp_min(0)], -1)
    instances = tuple(f"instance-{c}" for c in range(int(labels.max()) + 1))
    return Neighbours(scores.numpy(), rows.numpy(), codes.numpy(), instances)


def _checked_prediction(classifier: Any, neighbours: Any, queries: torch.Tensor) -> Any:
    from pyinstance.classify import Prediction

    try:
        prediction = classifier.predict(neighbours, queries)
    except Exception as error:
        raise ContractError(
            f"predict() raised on valid input: {type(error).__name__}: {error}"
        ) from error
    _expect(
        isinstance(prediction, Prediction),
        f"predict() must return a pyinstance.classify.Prediction, got {type(prediction).__name__}",
    )
    q, instances = queries.shape[0], len(neighbours.instances)
    _expect(
        len(prediction) == q,
        f"predict() must answer each of the {q} queries, got {len(prediction)} answers",
    )
    ranked, scores = prediction.ranked, prediction.ranked_scores
    _expect(
        bool((ranked < instances).all()),
        f"ranked holds codes >= {instances}, the number of instances",
    )
    padded = ranked < 0
    _expect(
        bool((padded[:, :-1] <= padded[:, 1:]).all()),
        "ranked: -1 padding must come after every ranked instance",
    )
    _expect(bool(np.isneginf(scores[padded]).all()), "ranked_scores must be -inf where padded")
    later = scores[:, 1:][~padded[:, 1:]]
    _expect(
        bool((later <= scores[:, :-1][~padded[:, 1:]]).all())
        and bool(np.isfinite(scores[~padded]).all()),
        "ranked_scores must be finite and non-increasing along each row",
    )
    repeated = (ranked[:, :, None] == ranked[:, None, :]) & ~padded[:, :, None]
    _expect(int(repeated.sum()) == int((~padded).sum()), "ranked lists an instance more than once")
    known = prediction.labels >= 0
    _expect(
        bool((prediction.labels[known] == ranked[known, 0]).all()),
        "labels must be -1 (unknown) or the first ranked instance",
    )
    return prediction


def _rejects_bad_input(call: Any, what: str) -> None:
    try:
        call()
    except (ValueError, TypeError):
        return
    raise ContractError(f"{what} without an error")


def check_classifier(classifier: Any, *, dim: int = 32) -> None:
    """A classifier fits a collection and classifies k-NN results of known and unknown queries.

    Checks ``k``, that ``fit`` validates its input and returns the classifier, the
    :class:`~pyinstance.classify.Prediction` of ``predict`` (shapes, codes, ranking,
    confidence in [0, 1]), accuracy on separable clusters, that extra neighbour columns
    change nothing, that padded neighbours (fewer references than ``k``) and Q×R×D
    queries work, that confidences rank known queries above unknown ones, and that
    queries of the wrong dimension are refused.
    """
    k = getattr(classifier, "k", None)
    _expect(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0,
        f"classifier must have an int attribute k >= 0 (neighbours it reads), got {k!r}",
    )
    for method in ("fit", "predict"):
        _expect(
            callable(getattr(classifier, method, None)), f"classifier must have a {method}() method"
        )
    generator = torch.Generator().manual_seed(4)
    centres = torch.nn.functional.normalize(torch.randn(6, dim, generator=generator), dim=1)
    references, labels = _instance_clusters(centres, 3, 0.09, seed=5)
    queries, truth = _instance_clusters(centres, 2, 0.09, seed=6)
    poisoned = references.clone()
    poisoned[1, 0] = float("nan")
    _rejects_bad_input(lambda: classifier.fit(poisoned, labels), "fit() accepted NaN descriptors")
    _rejects_bad_input(
        lambda: classifier.fit(references, labels[:-1]),
        "fit() accepted fewer labels than descriptors",
    )
    returned = classifier.fit(references, labels)
    _expect(returned is classifier, "classifier.fit() must return the classifier itself")

    prediction = _checked_prediction(classifier, _search(queries, references, labels, k), queries)
    accuracy = float((prediction.labels == truth.numpy()).mean())
    _expect(accuracy >= 0.9, f"classifier gets {accuracy:.0%} right on well-separated clusters")
    wider = _checked_prediction(classifier, _search(queries, references, labels, k + 3), queries)
    _expect(
        np.array_equal(wider.labels, prediction.labels)
        and np.allclose(wider.confidence, prediction.confidence, atol=1e-6),
        "predict() must read only the first k neighbour columns (more columns changed the answer)",
    )

    strangers = torch.nn.functional.normalize(torch.randn(12, dim, generator=generator), dim=1)
    unknown = _checked_prediction(
        classifier, _search(strangers, references, labels, k), strangers
    ).confidence
    separation = float((prediction.confidence[:, None] > unknown[None, :]).mean())
    _expect(
        separation >= 0.9,
        f"confidence ranks known queries above unknown ones in only {separation:.0%} of pairs: "
        "open-set rejection cannot threshold it",
    )

    regions = torch.stack([queries, strangers], dim=1)
    _checked_prediction(classifier, _search(queries, references, labels, k), regions)

    classifier.fit(references[:2], labels[:2])  # one instance, fewer references than k
    _checked_prediction(
        classifier, _search(queries, references[:2], labels[:2], max(k, 3)), queries
    )

    classifier.fit(references, labels)
    _rejects_bad_input(
        lambda: classifier.predict(
            _search(queries, references, labels, k), torch.randn(queries.shape[0], dim + 1)
        ),
        "predict() accepted queries of the wrong dimension",
    )


def check_reranker(reranker: Any, *, dim: int = 32) -> None:
    """A re-ranker scores (query, candidate) pairs with probabilities, pair by pair.

    Checks ``k`` (an int >= 1), ``recipe`` (None or a valid recipe dict, whose ``dim`` then
    replaces ``dim``), that ``score`` returns ``(Q, k)`` probabilities in [0, 1] for R = 1
    and R = 4 windows and for 1 or ``k`` candidates, takes Q×D queries as R = 1, gives
    the same answer twice, for a query alone as in a batch, and for candidates permuted
    (permuted alike), and refuses NaN queries or candidates, and (with a recipe)
    descriptors of another size.
    """
    from pyinstance.index.recipe import Recipe

    k = _positive_int_attribute(reranker, "k", "reranker")
    _expect(hasattr(reranker, "recipe"), "reranker must have a recipe attribute (None: any)")
    if reranker.recipe is not None:
        try:
            recipe = Recipe.from_dict(reranker.recipe)
        except (ValueError, TypeError) as error:
            raise ContractError(f"reranker.recipe: not a valid recipe dict: {error}") from error
        dim = recipe.dim
    _expect(callable(getattr(reranker, "score", None)), "reranker must have a score() method")
    generator = torch.Generator().manual_seed(7)

    def unit(*shape: int) -> np.ndarray:
        rows = torch.nn.functional.normalize(torch.randn(*shape, dim, generator=generator), dim=-1)
        return rows.numpy()

    def scored(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        out = np.asarray(reranker.score(queries, candidates))
        shape = candidates.shape[:2]
        _expect(
            out.shape == shape and out.dtype.kind == "f",
            f"score() must return {shape} float probabilities, got {out.dtype} {out.shape}",
        )
        _expect(
            bool(((out >= 0) & (out <= 1)).all()),
            "score() must return probabilities in [0, 1] (got NaN or values beyond)",
        )
        return out

    candidates = unit(3, k)
    for windows in (1, 4):
        queries = unit(3, windows)
        first = scored(queries, candidates)
        _expect(
            np.allclose(scored(queries, candidates), first, atol=1e-6),
            "score() must be deterministic (the same pairs gave other probabilities)",
        )
        _expect(
            np.allclose(scored(queries[1:2], candidates[1:2]), first[1:2], atol=1e-5),
            "score() must score each query on its own (a query alone differs from in a batch)",
        )
        permutation = np.random.default_rng(0).permutation(k)
        _expect(
            np.allclose(
                scored(queries, candidates[:, permutation]), first[:, permutation], atol=1e-5
            ),
            "score() must not depend on the candidates' order (permuted candidates changed it)",
        )
        scored(queries, candidates[:, :1])
    flat = unit(3, 1)
    _expect(
        np.allclose(scored(flat[:, 0], candidates), scored(flat, candidates), atol=1e-6),
        "score() must take Q×D queries as Q×1×D",
    )
    poisoned = flat.copy()
    poisoned[0, 0, 0] = np.nan
    _rejects_bad_input(lambda: reranker.score(poisoned, candidates), "score() accepted NaN queries")
    bad = candidates.copy()
    bad[1, 0, 0] = np.nan
    _rejects_bad_input(lambda: reranker.score(flat, bad), "score() accepted NaN candidates")
    if reranker.recipe is not None:  # trained for the recipe's size
        _rejects_bad_input(
            lambda: reranker.score(unit(3, 1)[..., :-1], candidates[..., :-1]),
            f"score() accepted descriptors of size {dim - 1} (its recipe's is {dim})",
        )
