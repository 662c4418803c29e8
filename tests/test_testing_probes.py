"""What check_loss and check_miner hand to the component, call by call, and the message that
names each call when the component breaks there."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pyinstance import testing
from pyinstance.testing import ContractError

BATCH_LABELS = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]  # 4 instances × 4 images
TRIPLETS = 16 * 3 * 12  # every anchor: 3 positives × 12 negatives


def _valid_logits(logits, batch):
    return isinstance(logits, torch.Tensor) and logits.shape[0] == batch


def _hinge(embeddings, triplets):
    a, p, n = triplets
    terms = ((embeddings[a] * (embeddings[n] - embeddings[p])).sum(dim=1) + 0.5).relu()
    return terms.mean() if terms.numel() else embeddings.sum() * 0


def _class_scores(kind, logits, batch):
    """B×K class scores from logits of ``kind``; ValueError naming logits otherwise."""
    if kind == "map":
        maps = [logits] if isinstance(logits, torch.Tensor) else logits
        if not isinstance(maps, list) or not all(_valid_logits(m, batch) for m in maps):
            raise ValueError("logits: expected B×K×H×W maps")
        return sum(m.mean(dim=(2, 3)) for m in maps)
    if not _valid_logits(logits, batch):
        raise ValueError(f"logits: expected {kind} class scores for the batch")
    return logits if kind == "image" else logits.mean(dim=1)


class GoodLoss:
    """A contract-abiding loss of each kind (hinge on triplets, cross-entropy on logits)."""

    def __init__(self, needs_triplets, logits):
        self.needs_triplets = needs_triplets
        self.logits = logits

    def __call__(self, embeddings, labels, triplets=None, *, logits=None):
        value = embeddings.new_zeros(()) if self.logits else None
        if self.needs_triplets:
            if triplets is None:
                raise ValueError("triplets: this loss needs a miner's triplets")
            value = _hinge(embeddings, triplets)
        if self.logits:
            scores = _class_scores(self.logits, logits, labels.numel())
            value = value + F.cross_entropy(scores, labels)
        return value


KINDS = [(True, None), (False, "image"), (True, "regions"), (False, "map"), (True, "map")]


def _probes(needs_triplets, kind):
    """check_loss's calls in order: (what it says, the argument a refusal must name)."""
    calls = [("on a valid batch", None)]
    if needs_triplets:
        calls.append(("triplets=None (it needs_triplets)", "triplets"))
    else:
        calls.append(("with triplets=None", None))
    if kind == "map":
        calls += [("with logits='map' as one tensor", None), ("with logits='map' as a list", None)]
    if kind is not None:
        calls += [
            (f"logits=None (its logits attribute is {kind!r})", "logits"),
            (f"logits={kind!r} for one image fewer than the batch", "logits"),
        ]
    return calls + [
        ("with no triplets", None),
        ("on a reordered batch", None),
        ("with the classes renamed", None),
    ]


class NaNAt(GoodLoss):
    """GoodLoss, but its ``at``-th call (from 0) returns NaN whatever it is given."""

    def __init__(self, needs_triplets, logits, at):
        super().__init__(needs_triplets, logits)
        self.at, self.calls = at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls - 1 == self.at:
            return torch.tensor(float("nan"))
        return super().__call__(*args, **kwargs)


@pytest.mark.parametrize(("needs_triplets", "kind"), KINDS)
def test_good_losses_of_every_kind_pass(needs_triplets, kind):
    testing.check_loss(GoodLoss(needs_triplets, kind))


@pytest.mark.parametrize(("needs_triplets", "kind"), KINDS)
def test_each_probe_of_check_loss_is_named_when_the_loss_breaks_there(needs_triplets, kind):
    for at, (what, refused) in enumerate(_probes(needs_triplets, kind)):
        if refused:
            message = f"loss accepted {what} without an error naming {refused!r}"
        else:
            message = f"loss {what} returned nan"
        loss = NaNAt(needs_triplets, kind, at)
        with pytest.raises(ContractError, match=f"^{re.escape(message)}$"):
            testing.check_loss(loss)
        assert loss.calls == at + 1


def _describe(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    return [tuple(tensor.shape) for tensor in value]


class Recording(GoodLoss):
    """GoodLoss noting every call's arguments."""

    def __init__(self, needs_triplets, logits):
        super().__init__(needs_triplets, logits)
        self.calls = []

    def __call__(self, embeddings, labels, triplets=None, *, logits=None):
        self.calls.append((embeddings.detach().clone(), labels.clone(), triplets, logits))
        return super().__call__(embeddings, labels, triplets, logits=logits)


LOGITS_SHAPES = {
    None: None,
    "image": (16, 5),  # K = 5 classes
    "regions": (16, 4, 5),  # 4 regions per image
    "map": [(16, 5, 5, 5), (16, 5, 3, 4)],  # two scales
}
CLASS_DIM = {"image": 1, "regions": 2, "map": 1}


def _one_image_fewer(shape):
    if isinstance(shape, list):
        return [(15, *s[1:]) for s in shape]
    return (15, *shape[1:])


@pytest.mark.parametrize(("needs_triplets", "kind"), KINDS)
@pytest.mark.parametrize("dim", [16, 5])
def test_check_loss_probes_what_its_docstring_promises(needs_triplets, kind, dim):
    loss = Recording(needs_triplets, kind)
    testing.check_loss(loss, dim=dim)
    shape = LOGITS_SHAPES[kind]
    expected = [(BATCH_LABELS, TRIPLETS, shape)]  # the valid batch
    expected.append((BATCH_LABELS, None, shape))  # triplets=None
    if kind == "map":
        expected += [(BATCH_LABELS, TRIPLETS, shape[0]), (BATCH_LABELS, TRIPLETS, shape[:1])]
    if kind is not None:
        expected += [
            (BATCH_LABELS, TRIPLETS, None),
            (BATCH_LABELS, TRIPLETS, _one_image_fewer(shape)),
        ]
    expected.append((BATCH_LABELS, 0, shape))  # no triplets
    seen = [
        (labels.tolist(), None if t is None else t[0].numel(), _describe(logits))
        for _, labels, t, logits in loss.calls
    ]
    # the last two calls reorder or rename the batch: compared below
    assert seen[:-2] == expected
    assert [(sorted(labels), t, lg) for labels, t, lg in seen[-2:-1]] == [
        (BATCH_LABELS, TRIPLETS, shape)
    ]
    renamed = seen[-1]
    assert renamed[1:] == (TRIPLETS, shape) and set(renamed[0]) <= set(range(5))
    embeddings, labels, triplets, logits = loss.calls[0]
    for call in loss.calls:
        assert call[0].shape == (16, dim)
        assert torch.equal(call[0], embeddings) or call is loss.calls[-2]
        for index in call[2] or ():
            assert index.dtype == torch.int64
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(16), atol=1e-5)
    # every (anchor, positive, negative) of the batch, each once
    a, p, n = triplets
    assert len(set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))) == TRIPLETS
    assert bool(
        (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    )
    _check_reordered(loss.calls[0], loss.calls[-2], kind)
    _check_renamed(loss.calls[0], loss.calls[-1], kind)


def _tensors(logits):
    if logits is None:
        return []
    return [logits] if isinstance(logits, torch.Tensor) else list(logits)


def _check_reordered(original, reordered, kind):
    """The same rows in another order, carried along by the triplets and the logits."""
    embeddings, labels, triplets, logits = original
    moved, moved_labels, moved_triplets, moved_logits = reordered
    order = [int((embeddings == row).all(dim=1).nonzero()) for row in moved]
    assert sorted(order) == list(range(16)) and order != list(range(16))
    assert moved_labels.tolist() == labels[order].tolist()
    for index, moved_index in zip(triplets, moved_triplets, strict=True):
        assert torch.equal(moved[moved_index], embeddings[index])
    for tensor, moved_tensor in zip(_tensors(logits), _tensors(moved_logits), strict=True):
        assert torch.equal(moved_tensor, tensor.detach()[order])


def _check_renamed(original, renamed, kind):
    """The same rows, class c called rename[c], and the logits' column c moved to rename[c]."""
    embeddings, labels, triplets, logits = original
    same, new_labels, new_triplets, new_logits = renamed
    assert torch.equal(same, embeddings) and new_triplets is triplets
    pairs = set(zip(labels.tolist(), new_labels.tolist(), strict=True))
    rename = dict(pairs)
    assert len(pairs) == 4 and len(set(rename.values())) == 4  # a bijection of the 4 classes
    assert rename != {c: c for c in range(4)}
    if kind is None:
        return
    rename[4] = (set(range(5)) - set(rename.values())).pop()
    for tensor, new_tensor in zip(_tensors(logits), _tensors(new_logits), strict=True):
        for old, new in rename.items():
            assert torch.equal(
                new_tensor.select(CLASS_DIM[kind], new),
                tensor.detach().select(CLASS_DIM[kind], old),
            )


def _clusters(classes, per_class, dim, spread, seed):
    """The seeded probe the checks document: unit rows around random unit centres."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator)
    centres = centres / centres.norm(dim=1, keepdim=True)
    labels = torch.arange(classes).repeat_interleave(per_class)
    rows = centres[labels] + spread * torch.randn(classes * per_class, dim, generator=generator)
    return rows / rows.norm(dim=1, keepdim=True), labels


@pytest.mark.parametrize(("needs_triplets", "kind"), KINDS)
def test_check_loss_draws_the_same_seeded_batch_every_run(needs_triplets, kind):
    loss = Recording(needs_triplets, kind)
    torch.manual_seed(123)  # the global generator plays no part
    testing.check_loss(loss, dim=6)
    embeddings, labels = _clusters(4, 4, 6, spread=1.0, seed=1)
    valid = loss.calls[0]
    assert torch.allclose(valid[0], embeddings, atol=1e-6)
    assert torch.equal(valid[1], labels)
    generator = torch.Generator().manual_seed(7)
    shapes = LOGITS_SHAPES[kind]
    shapes = [] if shapes is None else shapes if isinstance(shapes, list) else [shapes]
    expected = [torch.randn(shape, generator=generator) for shape in shapes]
    for tensor, drawn in zip(_tensors(valid[3]), expected, strict=True):
        assert torch.equal(tensor.detach(), drawn)
    generator = torch.Generator().manual_seed(8)
    order = torch.randperm(16, generator=generator)
    rename = torch.randperm(5, generator=generator)
    assert torch.allclose(loss.calls[-2][0], embeddings[order], atol=1e-6)
    assert torch.equal(loss.calls[-2][1], labels[order])
    assert torch.equal(loss.calls[-1][1], rename[labels])


class RecordingMiner:
    """A contract-abiding miner noting every call's arguments."""

    def __init__(self):
        self.calls = []

    def __call__(self, embeddings, labels, ref_embeddings=None, ref_labels=None):
        self.calls.append((embeddings.clone(), labels.clone(), ref_embeddings, ref_labels))
        same_set = ref_embeddings is None
        refs = embeddings if same_set else ref_embeddings
        ref_labels = labels if same_set else ref_labels
        same = labels[:, None] == ref_labels[None, :]
        if same_set:
            same.fill_diagonal_(False)
        different = labels[:, None] != ref_labels[None, :]
        similarity = embeddings @ refs.T
        valid = same.any(1) & different.any(1)
        positives = similarity.masked_fill(~same, 2).argmin(1)
        negatives = similarity.masked_fill(~different, -2).argmax(1)
        return torch.arange(len(labels))[valid], positives[valid], negatives[valid]


@pytest.mark.parametrize(("dim", "deterministic"), [(16, True), (7, False)])
def test_check_miner_probes_the_documented_batches(dim, deterministic):
    miner = RecordingMiner()
    torch.manual_seed(321)  # the global generator plays no part
    testing.check_miner(miner, dim=dim, deterministic=deterministic)
    embeddings, labels = _clusters(5, 4, dim, spread=0.8, seed=2)  # 5 classes × 4 images
    refs, ref_labels = _clusters(5, 3, dim, spread=0.8, seed=3)  # 5 classes × 3 references
    expected = [(embeddings, labels, None, None)] * (2 if deterministic else 1)
    expected += [
        (embeddings[:8], labels[:8], refs, ref_labels),  # two classes against the references
        (embeddings[:4], labels[:4], None, None),  # one class only
    ]
    assert len(miner.calls) == len(expected)
    for seen, wanted in zip(miner.calls, expected, strict=True):
        for got, want in zip(seen, wanted, strict=True):
            assert (got is None) == (want is None)
            if want is not None:
                assert got.shape == want.shape and got.dtype == want.dtype
                assert torch.allclose(got.float(), want.float(), atol=1e-6)


class RecordingReranker:
    """A recipe-free cosine re-ranker noting every (queries, candidates) pair it scores."""

    k = 3
    recipe = None

    def __init__(self):
        self.calls = []

    def score(self, queries, candidates):
        self.calls.append((np.array(queries), np.array(candidates)))
        queries = np.asarray(queries, dtype=np.float32)
        candidates = np.asarray(candidates, dtype=np.float32)
        if queries.ndim == 2:
            queries = queries[:, None]
        if not (np.isfinite(queries).all() and np.isfinite(candidates).all()):
            raise ValueError("NaN")
        if queries.shape[-1] != candidates.shape[-1]:
            raise ValueError("sizes differ")
        return (np.einsum("qrd,qkd->qkr", queries, candidates).max(axis=2) + 1) / 2


def _units(generator, *shape):
    rows = torch.randn(*shape, generator=generator)
    return (rows / rows.norm(dim=-1, keepdim=True)).numpy()


@pytest.mark.parametrize("dim", [32, 6])
def test_check_reranker_scores_the_same_seeded_pairs_every_run(dim):
    reranker = RecordingReranker()
    torch.manual_seed(5)  # the global generators play no part
    np.random.seed(5)
    testing.check_reranker(reranker, dim=dim)
    generator = torch.Generator().manual_seed(7)
    candidates = _units(generator, 3, 3, dim)  # Q = 3 rows of k = 3 candidates
    permutation = np.random.default_rng(0).permutation(3)
    expected = []
    for windows in (1, 4):
        queries = _units(generator, 3, windows, dim)
        expected += [
            (queries, candidates),
            (queries, candidates),  # again: deterministic
            (queries[1:2], candidates[1:2]),  # one query alone
            (queries, candidates[:, permutation]),
            (queries, candidates[:, :1]),  # one candidate
        ]
    flat = _units(generator, 3, 1, dim)
    poisoned = flat.copy()
    poisoned[0, 0, 0] = np.nan
    bad = candidates.copy()
    bad[1, 0, 0] = np.nan
    expected += [
        (flat[:, 0], candidates),  # Q×D queries
        (flat, candidates),
        (poisoned, candidates),
        (flat, bad),
    ]
    assert len(reranker.calls) == len(expected)
    for (queries, candidates), (want_queries, want_candidates) in zip(
        reranker.calls, expected, strict=True
    ):
        assert queries.shape == want_queries.shape
        assert np.allclose(queries, want_queries, atol=1e-6, equal_nan=True)
        assert np.array_equal(np.isnan(queries), np.isnan(want_queries))
        assert candidates.shape == want_candidates.shape
        assert np.allclose(candidates, want_candidates, atol=1e-6, equal_nan=True)
        assert np.array_equal(np.isnan(candidates), np.isnan(want_candidates))
    assert not np.array_equal(permutation, np.arange(3))


class RecordingClassifier:
    """Reads one neighbour; notes what fit() and predict() are given."""

    k = 2

    def __init__(self):
        self.calls = []

    def fit(self, descriptors, labels):
        descriptors, labels = torch.as_tensor(descriptors), torch.as_tensor(labels)
        self.calls.append(("fit", descriptors.clone(), labels.clone()))
        if labels.shape != (descriptors.shape[0],) or not torch.isfinite(descriptors).all():
            raise ValueError("descriptors: NaN, or labels: not one per descriptor")
        self.dim = descriptors.shape[1]
        return self

    def predict(self, neighbours, queries):
        queries = torch.as_tensor(queries)
        self.calls.append(("predict", neighbours, queries.clone()))
        if queries.shape[-1] != self.dim:
            raise ValueError("queries: wrong dimension")
        from pyinstance.classify import Prediction

        labels = neighbours.labels[:, :1]
        scores = np.where(labels >= 0, neighbours.scores[:, :1], -np.inf)
        confidence = np.clip(np.nan_to_num(scores[:, 0], neginf=0), 0, 1)
        return Prediction(labels[:, 0], confidence, labels, scores)


def _around(centres, per_instance, spread, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(centres.shape[0]).repeat_interleave(per_instance)
    rows = centres[labels] + spread * torch.randn(
        labels.numel(), centres.shape[1], generator=generator
    )
    return rows / rows.norm(dim=1, keepdim=True), labels


def _exact_neighbours(neighbours, queries, references, labels, k):
    """The k-NN of ``queries`` as an index returns them: best first, -1/-inf padding."""
    similarity = queries @ references.T
    found = min(k, references.shape[0])
    assert neighbours.k == k and len(neighbours) == queries.shape[0]
    order = np.argsort(-similarity.numpy(), axis=1, kind="stable")[:, :found]
    assert np.array_equal(neighbours.rows[:, :found], order)
    assert np.allclose(
        neighbours.scores[:, :found], np.take_along_axis(similarity.numpy(), order, 1)
    )
    assert np.array_equal(neighbours.labels[:, :found], labels.numpy()[order])
    assert (neighbours.rows[:, found:] == -1).all() and (neighbours.labels[:, found:] == -1).all()
    assert np.isneginf(neighbours.scores[:, found:]).all()
    instances = int(labels.max()) + 1
    assert neighbours.instances == tuple(f"instance-{c}" for c in range(instances))


@pytest.mark.parametrize("dim", [32, 7])
def test_check_classifier_probes_the_same_seeded_collection_every_run(dim):
    classifier = RecordingClassifier()
    torch.manual_seed(11)  # the global generator plays no part but for the last queries
    testing.check_classifier(classifier, dim=dim)
    generator = torch.Generator().manual_seed(4)
    centres = torch.randn(6, dim, generator=generator)
    centres = centres / centres.norm(dim=1, keepdim=True)
    references, labels = _around(centres, 3, 0.09, seed=5)  # 6 instances × 3
    queries, _ = _around(centres, 2, 0.09, seed=6)  # 6 instances × 2
    strangers = torch.randn(12, dim, generator=generator)
    strangers = strangers / strangers.norm(dim=1, keepdim=True)
    poisoned = references.clone()
    poisoned[1, 0] = float("nan")
    k = classifier.k
    regions = torch.stack([queries, strangers], dim=1)
    expected = [
        ("fit", poisoned, labels),
        ("fit", references, labels[:-1]),
        ("fit", references, labels),
        ("predict", (references, labels, k), queries),
        ("predict", (references, labels, k + 3), queries),
        ("predict", (references, labels, k), strangers),
        ("predict", (references, labels, k), regions),
        ("fit", references[:2], labels[:2]),
        ("predict", (references[:2], labels[:2], 3), queries),
        ("fit", references, labels),
        ("predict", (references, labels, k), None),  # random queries of the wrong size
    ]
    assert [call[0] for call in classifier.calls] == [call[0] for call in expected]
    for (kind, a, b), (_, want_a, want_b) in zip(classifier.calls, expected, strict=True):
        if kind == "fit":
            assert torch.allclose(a, want_a, atol=1e-6, equal_nan=True)
            assert torch.equal(torch.isnan(a), torch.isnan(want_a))
            assert torch.equal(b, want_b)
            continue
        searched = strangers if want_b is strangers else queries
        _exact_neighbours(a, searched, *want_a)
        if want_b is None:
            assert b.shape == (12, dim + 1)
        else:
            assert torch.allclose(b, want_b, atol=1e-6)


class RecordingBackbone(torch.nn.Module):
    """A stride-4 convolution noting each input, the mode and whether autograd records."""

    out_channels = 8
    out_stride = 4

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.calls = []

    def forward(self, images):
        self.calls.append((images.clone(), self.training, torch.is_grad_enabled()))
        return self.conv(images)


@pytest.mark.parametrize(
    ("kwargs", "size", "batch"), [({}, 32, 2), ({"image_size": 20, "batch": 3}, 20, 3)]
)
def test_check_backbone_probes_seeded_images_in_eval_then_train_mode(kwargs, size, batch):
    backbone = RecordingBackbone()
    torch.manual_seed(9)  # the global generator plays no part
    testing.check_backbone(backbone, **kwargs)
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = [(images, False, False), (images[:1], False, False), (images, True, True)]
    assert len(backbone.calls) == 3
    for (seen, training, grad), (want, want_training, want_grad) in zip(
        backbone.calls, expected, strict=True
    ):
        assert torch.equal(seen, want) and (training, grad) == (want_training, want_grad)
    assert not backbone.training  # left in eval mode
    assert all(p.grad is None for p in backbone.parameters())  # gradients cleared


class RecordingHead(torch.nn.Module):
    """Channel means, L2-normalised, scaled by a parameter; notes each input and mode."""

    def __init__(self, channels):
        super().__init__()
        self.out_dim = channels
        self.scale = torch.nn.Parameter(torch.ones(channels))
        self.calls = []

    def forward(self, features):
        self.calls.append((features.detach().clone(), self.training, features.requires_grad))
        return torch.nn.functional.normalize(features.mean(dim=(2, 3)) * self.scale, dim=1)


@pytest.mark.parametrize(("channels", "batch"), [(5, 3), (4, 2)])
def test_check_head_probes_seeded_maps_of_two_sizes_then_trains(channels, batch):
    head = RecordingHead(channels)
    torch.manual_seed(9)
    testing.check_head(head, channels, batch=batch)
    generator = torch.Generator().manual_seed(0)
    expected = []
    for height, width in ((7, 7), (5, 9)):
        features = torch.rand(batch, channels, height, width, generator=generator)
        expected += [(features, False, False), (features[:1], False, False)]
    expected.append((torch.rand(batch, channels, 7, 7, generator=generator), True, True))
    assert len(head.calls) == len(expected)
    for seen, want in zip(head.calls, expected, strict=True):
        assert torch.equal(seen[0], want[0]) and seen[1:] == want[1:]
    assert not head.training


# --- check_loss: messages from their start, tolerances, gradients of the logits -----------


def test_loss_attribute_messages_name_the_attribute_and_the_value():
    class NoAttributes:
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            return GoodLoss(True, None)(embeddings, labels, triplets)

    loss = NoAttributes()
    with pytest.raises(
        ContractError,
        match=re.escape(
            "loss must have a bool attribute needs_triplets (whether it uses a miner's "
            "triplets), got None"
        )
        + "$",
    ) as raised:
        testing.check_loss(loss)
    assert str(raised.value).startswith("loss must")
    loss.needs_triplets = 1  # an int is no bool
    with pytest.raises(ContractError, match=r"^loss must have a bool attribute .*, got 1$"):
        testing.check_loss(loss)
    loss.needs_triplets = True
    with pytest.raises(
        ContractError,
        match="^"
        + re.escape(
            "loss attribute logits must be one of (None, 'image', 'map', 'regions') "
            "(what it needs in logits=), got '<missing>'"
        )
        + "$",
    ):
        testing.check_loss(loss)


def test_a_refusal_not_naming_the_argument_is_quoted_whole():
    class Vague(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            if triplets is None:
                raise TypeError("a miner is needed")
            return super().__call__(embeddings, labels, triplets, logits=logits)

    with pytest.raises(
        ContractError,
        match="^"
        + re.escape(
            "loss error for triplets=None (it needs_triplets) must name 'triplets', "
            "got: a miner is needed"
        )
        + "$",
    ):
        testing.check_loss(Vague(True, None))


class Wobbly(GoodLoss):
    """Values near 1e-3 that move by 5e-7 (the checks allow 1e-6) on each probe compared
    with the valid batch: without triplets, one map as a tensor, reordered, renamed."""

    def __call__(self, embeddings, labels, triplets=None, *, logits=None):
        value = 1e-3 * super().__call__(embeddings, labels, triplets, logits=logits)
        order = labels.tolist()
        moved = [
            triplets is None,
            isinstance(logits, torch.Tensor),
            order != sorted(order),
            order == sorted(order) and order != BATCH_LABELS,
        ]
        return value + 5e-7 * sum(moved)


@pytest.mark.parametrize(("needs_triplets", "kind"), [(False, "map"), (True, None)])
def test_a_loss_within_the_tolerances_passes(needs_triplets, kind):
    testing.check_loss(Wobbly(needs_triplets, kind))


@pytest.mark.parametrize("kind", ["image", "regions", "map"])
def test_logits_receiving_a_zero_gradient_fail(kind):
    class Frozen(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            tensors = [logits] if isinstance(logits, torch.Tensor) else logits
            if kind != "map":  # the only tensor takes part with a zero weight
                value = super().__call__(embeddings, labels, triplets, logits=logits).detach()
            else:  # the first scale counts, the second takes part with a zero weight
                value = super().__call__(embeddings, labels, triplets, logits=tensors[:1])
            return value + 0 * tensors[-1].sum() + 0 * embeddings.sum()

    scale = 1 if kind == "map" else 0
    with pytest.raises(
        ContractError,
        match="^"
        + re.escape(
            f"loss gradient does not reach logits={kind!r} (tensor {scale}), or is not finite"
        )
        + "$",
    ):
        testing.check_loss(Frozen(False, kind))


def test_logits_receiving_a_non_finite_gradient_fail():
    class SquareRoot(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            value = super().__call__(embeddings, labels, triplets, logits=logits)
            return value + (logits - logits).square().sum().sqrt()  # 0, gradient 0·inf

    with pytest.raises(
        ContractError, match=r"^loss gradient does not reach logits='image' \(tensor 0\)"
    ):
        testing.check_loss(SquareRoot(False, "image"))


def test_a_loss_on_logits_alone_may_leave_the_embeddings_without_gradient():
    class LogitsOnly(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            return F.cross_entropy(_class_scores("image", logits, labels.numel()), labels)

    testing.check_loss(LogitsOnly(False, "image"))


def test_embedding_gradient_messages_are_exact():
    class Infinite(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            value = super().__call__(embeddings, labels, triplets, logits=logits)
            return value + (embeddings - embeddings).square().sum().sqrt()

    class Blind(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            return super().__call__(embeddings, labels, triplets, logits=logits) * 0

    with pytest.raises(ContractError, match="^loss gradient w.r.t. embeddings is not finite$"):
        testing.check_loss(Infinite(True, None))
    with pytest.raises(
        ContractError, match="^loss gives no gradient to the embeddings on a hard random batch$"
    ):
        testing.check_loss(Blind(True, None))


def test_value_messages_are_exact():
    class Shifted(GoodLoss):
        """Adds 1 on a reordered batch (labels out of order) or on renamed classes."""

        def __init__(self, when):
            super().__init__(True, None)
            self.when = when

        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            value = super().__call__(embeddings, labels, triplets, logits=logits)
            order = labels.tolist()
            shifted = order != sorted(order) if self.when == "reordered" else order[0] != 0
            # 1 + the hinge: 0.5 apart is within 1 and within the value, beyond 1e-5 of it
            return value + 1.5 if shifted else value + 1

    for when, what in (
        ("reordered", "the batch is reordered"),
        ("renamed", "the classes are renamed"),
    ):
        with pytest.raises(ContractError) as raised:
            testing.check_loss(Shifted(when))
        found = re.fullmatch(rf"loss changes when {what}: (\S+) -> (\S+)", str(raised.value))
        assert found, str(raised.value)
        before, after = map(float, found.groups())
        assert after == pytest.approx(before + 0.5)


# --- check_miner: what a miner's answer must be ------------------------------------------


def _miner_returning(change):
    def miner(embeddings, labels, ref_embeddings=None, ref_labels=None):
        good = RecordingMiner()(embeddings, labels, ref_embeddings, ref_labels)
        return change(*good)

    return miner


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda a, p, n: (a, p),
            "miner must return a tuple (anchors, positives, negatives), got tuple",
        ),
        (lambda a, p, n: (a.tolist(), p, n), "miner anchors must be a 1-D int64 tensor, got list"),
        (
            lambda a, p, n: (a, p[:, None], n),
            "miner positives must be a 1-D int64 tensor, got torch.int64",
        ),
        (
            lambda a, p, n: (a, p, n.int()),
            "miner negatives must be a 1-D int64 tensor, got torch.int32",
        ),
        (lambda a, p, n: (a[:-1], p, n), "miner index tensors differ in length: 19, 20, 20"),
        (lambda a, p, n: (a, p[:-1], n), "miner index tensors differ in length: 20, 19, 20"),
        (lambda a, p, n: (a - 1, p, n), "miner anchors index outside the batch"),
        (lambda a, p, n: (a, p - 20, n), "miner positives index outside the reference set"),
    ],
)
def test_miner_answer_messages_are_exact(change, message):
    with pytest.raises(ContractError, match=f"^{re.escape(message)}$"):
        testing.check_miner(_miner_returning(change))


def test_an_empty_answer_for_one_class_passes_but_one_triplet_fails():
    calls = []

    def lonely_triplet(embeddings, labels, ref_embeddings=None, ref_labels=None):
        calls.append(labels)
        a, p, n = RecordingMiner()(embeddings, labels, ref_embeddings, ref_labels)
        if labels.unique().numel() == 1:  # one class: one made-up triplet
            return torch.tensor([0]), torch.tensor([1]), torch.tensor([2])
        return a, p, n

    with pytest.raises(
        ContractError, match="^miner returned triplets for a batch with one class only$"
    ):
        testing.check_miner(lonely_triplet)
    assert len(calls) == 4


def test_check_reranker_with_a_recipe_probes_one_component_fewer():
    from pyinstance.index import DEFAULT_RECIPE

    class Sized(RecordingReranker):
        recipe = DEFAULT_RECIPE.with_(dim=12).to_dict()

        def score(self, queries, candidates):
            if np.shape(queries)[-1] != 12 or np.shape(candidates)[-1] != 12:
                self.calls.append((np.array(queries), np.array(candidates)))
                raise ValueError("descriptors: expected 12 components")
            return super().score(queries, candidates)

    reranker = Sized()
    testing.check_reranker(reranker, dim=40)  # the recipe's dim replaces dim
    generator = torch.Generator().manual_seed(7)
    candidates = _units(generator, 3, 3, 12)
    for shape in ((3, 1), (3, 4), (3, 1)):  # R = 1 and 4 windows, then Q×1 queries
        _units(generator, *shape, 12)
    queries, seen_candidates = reranker.calls[-1]
    assert queries.shape == (3, 1, 11) and seen_candidates.shape == (3, 3, 11)
    assert np.allclose(queries, _units(generator, 3, 1, 12)[..., :-1], atol=1e-6)
    assert np.allclose(seen_candidates, candidates[..., :-1], atol=1e-6)
    assert all(q.shape[-1] == 12 for q, _ in reranker.calls[:-1])


def test_values_half_apart_fail():
    class TripledWithoutTriplets(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            value = super().__call__(embeddings, labels, triplets, logits=logits)
            return value + 0.5 if triplets is None else value  # v ≈ 1.6: within v, not 1e-5 v

    class TripledForOneTensor(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            value = super().__call__(embeddings, labels, triplets, logits=logits)
            return value + 0.5 if isinstance(logits, torch.Tensor) else value

    with pytest.raises(
        ContractError,
        match="^loss declares needs_triplets=False but its value depends on the triplets$",
    ):
        testing.check_loss(TripledWithoutTriplets(False, "image"))
    with pytest.raises(
        ContractError,
        match=r"^loss with logits='map' must read one B×K×H×W tensor as a single scale$",
    ):
        testing.check_loss(TripledForOneTensor(False, "map"))


# --- check_backbone / check_head: inclusive bounds and tolerances -------------------------


class Conv(torch.nn.Module):
    """Stride 4, 8 channels (the last one all zeros); ``alone`` changes a lone image's map."""

    out_channels = 8
    out_stride = 4

    def __init__(self, kernel=3, padding=1, scale=1.0, alone=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, kernel, stride=4, padding=padding)
        self.scale, self.alone = scale, alone

    def forward(self, images):
        out = self.conv(images) * self.scale
        out = torch.cat([out, torch.zeros_like(out[:, :1])], dim=1)
        if self.alone is not None and images.shape[0] == 1:
            out = self.alone(out)
        return out


def test_a_map_of_exactly_the_declared_minimum_cells_passes():
    # min_input_size 5 at 32 px: at least (32 - 5) // 4 = 6 cells; a 9×9 valid kernel gives 6
    backbone = Conv(kernel=9, padding=0)
    backbone.min_input_size = 5
    assert backbone(torch.zeros(1, 3, 32, 32)).shape[-1] == 6
    testing.check_backbone(backbone)


def test_a_map_two_cells_larger_than_predicted_fails():
    backbone = Conv(kernel=1, padding=4)  # (32 + 8 - 1) // 4 + 1 = 10 cells, 32 / 4 = 8
    with pytest.raises(
        ContractError, match="^backbone out_stride=4 predicts h≈8 for 32px inputs, got 10$"
    ):
        testing.check_backbone(backbone)


@pytest.mark.parametrize(
    "backbone",
    [
        Conv(scale=10.0, alone=lambda out: out * (1 + 5e-5)),  # relative 5e-5 (1e-4 allowed)
        Conv(alone=lambda out: out + 5e-6),  # 5e-6 on the zero channel (1e-5 allowed)
        Conv(scale=1e-3),  # gradients far below 1
    ],
)
def test_a_backbone_within_the_tolerances_passes(backbone):
    testing.check_backbone(backbone)


class Peak(Conv):
    """Conv's map (values below 0.01) with one cell set to ``peak``, its largest value."""

    def __init__(self, peak, alone):
        super().__init__(scale=1e-3, alone=alone)
        self.peak = peak

    def forward(self, images):
        out = super().forward(images).clone()
        out[:, 0, 0, 0] = self.peak
        return out


@pytest.mark.parametrize(
    ("peak", "shift", "passes"),
    [
        (6.0, 5.5e-5, True),  # 5.5e-5 on the zero channel: below 1e-5 × 6
        (6.0, 6.5e-5, False),
        (0.5, 9e-6, True),  # peaks below 1 keep 1e-5
        (0.5, 1.1e-5, False),
        (100.0, 9e-4, True),
    ],
)
def test_the_batch_tolerance_near_zero_scales_with_the_largest_output(peak, shift, passes):
    # A network with outputs up to 6 (ReLU6) differs by 1.5e-5 near zero between a batch of
    # one and of two when oneDNN picks other kernels for them (EfficientNet-Lite1, 2 threads).
    backbone = Peak(peak, alone=lambda out: out + torch.eye(8)[7][:, None, None] * shift)
    if passes:
        testing.check_backbone(backbone)
    else:
        with pytest.raises(ContractError, match="depends on the rest of the batch"):
            testing.check_backbone(backbone)


def test_a_lone_image_far_from_its_batch_row_fails():
    with pytest.raises(
        ContractError,
        match=r"^backbone output for one image depends on the rest of the batch \(in eval mode\)$",
    ):
        testing.check_backbone(Conv(alone=lambda out: out + 10))


class Pooled(torch.nn.Module):
    """Channel means and one zero component, L2-normalised; ``alone`` changes a lone row."""

    def __init__(self, channels, alone=None, bias=0.0, norm=1.0):
        super().__init__()
        self.out_dim = channels + 1
        self.alone, self.bias, self.norm = alone, bias, norm

    def forward(self, features):
        pooled = features.mean(dim=(2, 3)) + self.bias
        out = torch.nn.functional.normalize(
            torch.cat([pooled, torch.zeros_like(pooled[:, :1])], dim=1), dim=1
        )
        if self.alone is not None and features.shape[0] == 1:
            out = self.alone(out)
        return out * self.norm


@pytest.mark.parametrize(
    "head",
    [
        Pooled(4, alone=lambda out: out * (1 + 5e-5)),  # relative 5e-5 (1e-4 allowed)
        Pooled(4, alone=lambda out: out + 5e-6),  # 5e-6 on the zero component (1e-5 allowed)
        Pooled(4, bias=1e3),  # an input gradient far below 1
        Pooled(4, norm=1 + 5e-4),  # norms 1.0005 (1e-3 allowed)
    ],
)
def test_a_head_within_the_tolerances_passes(head):
    testing.check_head(head, 4)


def test_a_lone_row_far_from_its_batch_row_fails():
    with pytest.raises(
        ContractError,
        match=r"^head output for one image depends on the rest of the batch \(in eval mode\)$",
    ):
        # one channel: rows (1, 0), flipped to (-1, 0) alone, 2 apart
        testing.check_head(Pooled(1, alone=lambda out: -out), 1)


def test_check_loss_and_check_miner_probe_16_components_by_default():
    loss, miner = Recording(True, None), RecordingMiner()
    testing.check_loss(loss)
    testing.check_miner(miner)
    assert {call[0].shape[1] for call in loss.calls} == {16}
    assert {call[0].shape[1] for call in miner.calls} == {16}


class PositionalTriplets(GoodLoss):
    """``triplets`` without a default, as the trainer passes it: positionally, None or not."""

    def __init__(self, needs_triplets, logits, accepts_none=False):
        super().__init__(needs_triplets, logits)
        self.accepts_none = accepts_none

    def __call__(self, embeddings, labels, triplets, *, logits=None):
        if triplets is None and self.accepts_none:
            return (embeddings @ embeddings.T).mean()
        return super().__call__(embeddings, labels, triplets, logits=logits)


def test_the_triplets_none_probes_pass_none_as_the_trainer_does():
    testing.check_loss(PositionalTriplets(False, "image"))
    with pytest.raises(
        ContractError,
        match=r"^loss accepted triplets=None \(it needs_triplets\) without an error naming 'triplets'$",
    ):
        testing.check_loss(PositionalTriplets(True, None, accepts_none=True))


def test_a_miner_answering_another_tuple_the_second_time_is_not_accepted():
    calls = []

    def grows(embeddings, labels, ref_embeddings=None, ref_labels=None):
        calls.append(None)
        a, p, n = RecordingMiner()(embeddings, labels, ref_embeddings, ref_labels)
        return (a, p, n, n) if len(calls) == 2 else (a, p, n)  # the repeated call only

    with pytest.raises((ContractError, ValueError)):
        testing.check_miner(grows)


def test_the_nondeterminism_message_is_exact():
    def shuffled(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = RecordingMiner()(embeddings, labels, ref_embeddings, ref_labels)
        order = torch.randperm(len(a))
        return a[order], p[order], n[order]

    with pytest.raises(
        ContractError,
        match=r"^miner is not deterministic \(pass deterministic=False for a stochastic miner\)$",
    ):
        testing.check_miner(shuffled)


def test_an_anchor_past_the_eight_rows_given_with_references_fails():
    def one_more(embeddings, labels, ref_embeddings=None, ref_labels=None):
        a, p, n = RecordingMiner()(embeddings, labels, ref_embeddings, ref_labels)
        if ref_embeddings is None:
            return a, p, n
        # row 8 is of class 2 in the full batch: a triplet valid for it, but it was not given
        positive = int((ref_labels == 2).nonzero()[0])
        negative = int((ref_labels != 2).nonzero()[0])
        extra = torch.tensor([8]), torch.tensor([positive]), torch.tensor([negative])
        return tuple(torch.cat([x, y]) for x, y in zip((a, p, n), extra, strict=True))

    with pytest.raises(ContractError, match="^miner anchors index outside the batch$"):
        testing.check_miner(one_more)


def test_a_loss_without_a_graph_is_named_exactly():
    class Constant(GoodLoss):
        def __call__(self, embeddings, labels, triplets=None, *, logits=None):
            return super().__call__(embeddings, labels, triplets, logits=logits).detach()

    with pytest.raises(
        ContractError, match=r"^loss is not differentiable \(its value has no graph\)$"
    ):
        testing.check_loss(Constant(True, None))


def test_backbone_and_head_messages_are_exact():
    head = Pooled(4)
    head.out_dim = 4  # returns 5 components
    with pytest.raises(
        ContractError, match=r"^head output must be 3×4 for 7×7 maps, got \(3, 5\)$"
    ):
        testing.check_head(head, 4)
    with pytest.raises(ContractError, match="^backbone output has NaN or infinite values$"):
        testing.check_backbone(Conv(scale=float("inf")))
    with pytest.raises(
        ContractError, match="^no trainable backbone parameter received a gradient$"
    ):
        testing.check_backbone(Conv(scale=0.0))
