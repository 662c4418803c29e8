"""pyinstance.ops.topk_region_pool against the pure-torch reference, plus opcheck/gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyinstance
from pyinstance.ops import topk_region_pool
from pyinstance.ops._reference import topk_region_pool_reference

CUDA = pyinstance.HAS_CUDA and torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="no CUDA device"))]
ISAS = ["generic", "avx2", "avx512"]


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {
        torch.float64: dict(rtol=1e-10, atol=1e-12),
        torch.float32: dict(rtol=1e-5, atol=1e-5),
        torch.float16: dict(rtol=1e-2, atol=1e-2),
        torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
    }[dtype]


def _check(features, scores, k, valid_hw=None):
    """Run op and reference (in float64 on the same values); compare pooled and locations."""
    pooled, locations = topk_region_pool(features, scores, k, valid_hw=valid_hw)
    ref_pooled, ref_locations = topk_region_pool_reference(
        features.double(),
        scores,
        k,
        valid_hw=None if valid_hw is None else valid_hw.to(scores.device),
    )
    assert locations.dtype == torch.int64 and locations.shape == (features.shape[0], k)
    assert pooled.dtype == features.dtype and pooled.shape == features.shape[:2]
    torch.testing.assert_close(locations, ref_locations, rtol=0, atol=0)
    torch.testing.assert_close(pooled.double(), ref_pooled, **_tol(features.dtype))
    return pooled, locations


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    monkeypatch.setenv("PYINSTANCE_ISA", request.param)
    return request.param


# --- forward against the reference ------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "shape",
    [(2, 8, 5, 7, 3, 4), (3, 33, 9, 11, 17, 6), (1, 64, 13, 13, 500, 4), (4, 5, 1, 1, 2, 1)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(device, shape, dtype, isa):
    batch, channels, height, width, classes, k = shape
    gen = torch.Generator().manual_seed(sum(shape))
    features = torch.randn(batch, channels, height, width, generator=gen, dtype=dtype).to(device)
    scores = torch.randn(batch, classes, height, width, generator=gen, dtype=dtype).to(device)
    _check(features, scores, k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reduced_precision(device, dtype, isa):
    gen = torch.Generator().manual_seed(3)
    features = torch.randn(3, 40, 6, 5, generator=gen).to(device, dtype)
    scores = torch.randn(3, 9, 6, 5, generator=gen).to(device, dtype)
    _check(features, scores, 5)
    # Mixed: float16 features with float32 scores and the other way round.
    _check(features, scores.float(), 5)
    _check(features.float(), scores, 5)


@settings(max_examples=60, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 12),
    height=st.integers(1, 7),
    width=st.integers(1, 9),
    classes=st.integers(1, 4),
    data=st.data(),
)
def test_hypothesis_against_reference(batch, channels, height, width, classes, data):
    # Integer-valued scores from a tiny range: many exact ties between locations.
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64)
    scores = torch.randint(-2, 3, (batch, classes, height, width), generator=gen).double()
    saliency = data.draw(st.booleans(), label="saliency")
    if saliency:
        scores = scores[:, 0]
    valid_hw = None
    area = height * width
    if data.draw(st.booleans(), label="padded"):
        valid_hw = torch.tensor(
            [
                [data.draw(st.integers(1, height)), data.draw(st.integers(1, width))]
                for _ in range(batch)
            ]
        )
        area = int((valid_hw[:, 0] * valid_hw[:, 1]).min())
    k = data.draw(st.integers(1, area), label="k")
    isa = data.draw(st.sampled_from(ISAS), label="isa")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYINSTANCE_ISA", isa)
        _check(features, scores.float(), k, valid_hw)


@pytest.mark.parametrize("device", DEVICES)
def test_ties_prefer_smaller_index(device, isa):
    features = torch.randn(2, 4, 3, 5, device=device)
    scores = torch.zeros(2, 3, 3, 5, device=device)
    scores[1, 2, 2, 4] = 1.0  # one clear winner, then ties in index order
    scores[1, 0, 1, 1] = 0.5
    _, locations = topk_region_pool(features, scores, 4)
    assert locations.tolist() == [[0, 1, 2, 3], [14, 6, 0, 1]]


@pytest.mark.parametrize("device", DEVICES)
def test_class_map_uses_max_over_classes(device, isa):
    scores = torch.full((1, 3, 2, 2), -5.0, device=device)
    scores[0, 2, 1, 0] = 7.0  # location 2 wins via class 2
    scores[0, 0, 0, 1] = 6.0  # location 1 second via class 0
    scores[0, 1, 1, 1] = 7.0  # location 3 ties with location 2 but has a larger index
    _, locations = topk_region_pool(torch.randn(1, 2, 2, 2, device=device), scores, 3)
    assert locations.tolist() == [[2, 3, 1]]


@pytest.mark.parametrize("device", DEVICES)
def test_saliency_equals_single_class_map(device):
    features = torch.randn(2, 6, 4, 4, device=device)
    saliency = torch.randn(2, 4, 4, device=device)
    a = topk_region_pool(features, saliency, 3)
    b = topk_region_pool(features, saliency[:, None], 3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_k_equals_area(device):
    features = torch.randn(2, 7, 3, 4, device=device, dtype=torch.float64)
    scores = torch.randn(2, 5, 3, 4, device=device)
    pooled, locations = _check(features, scores, 12)
    assert sorted(locations[0].tolist()) == list(range(12))
    expected = torch.nn.functional.normalize(features.flatten(2), dim=1).sum(2)
    torch.testing.assert_close(pooled, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_valid_hw_never_selects_padding(device, isa):
    gen = torch.Generator().manual_seed(7)
    features = torch.randn(3, 8, 6, 7, generator=gen).to(device)
    scores = torch.randn(3, 4, 6, 7, generator=gen).to(device)
    valid_hw = torch.tensor([[2, 3], [6, 7], [1, 5]])
    scores[:, :, 3:, :] += 100  # the padding holds the best scores
    _, locations = _check(features, scores, 5, valid_hw)
    rows, cols = locations // 7, locations % 7
    assert bool(
        (rows < valid_hw[:, :1].to(device)).all() and (cols < valid_hw[:, 1:].to(device)).all()
    )
    # int32 valid_hw is accepted and gives the same result.
    torch.testing.assert_close(
        topk_region_pool(features, scores, 5, valid_hw=valid_hw.int())[1], locations
    )


@pytest.mark.parametrize("device", DEVICES)
def test_large_k_partial_sort_path(device):
    # k above the insertion-sort limit of the CPU kernel, with ties.
    gen = torch.Generator().manual_seed(11)
    features = torch.randn(2, 5, 9, 10, generator=gen, dtype=torch.float64).to(device)
    scores = torch.randint(0, 4, (2, 3, 9, 10), generator=gen).float().to(device)
    _check(features, scores, 57, torch.tensor([[9, 10], [8, 9]]))


@pytest.mark.parametrize("device", DEVICES)
def test_infinite_scores_are_valid(device):
    features = torch.randn(1, 3, 2, 3, device=device, dtype=torch.float64)
    scores = torch.tensor([[[-np.inf, np.inf, 0.0], [np.inf, -np.inf, -np.inf]]], device=device)
    _, locations = _check(features, scores, 6)
    assert locations.tolist() == [[1, 3, 2, 0, 4, 5]]


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device, isa):
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(3, 10, 7, 9, generator=gen).to(device)
    channels_last = base.to(memory_format=torch.channels_last)
    transposed = torch.randn(3, 10, 9, 7, generator=gen).to(device).transpose(2, 3)
    sliced = torch.randn(6, 20, 7, 9, generator=gen).to(device)[::2, ::2]
    scores = torch.randn(3, 7, 9, 5, generator=gen).to(device).permute(0, 3, 1, 2)
    for features in (channels_last, transposed, sliced):
        assert not features.is_contiguous()
        pooled, locations = _check(features, scores, 4)
        torch.testing.assert_close(
            (pooled, locations), topk_region_pool(features.contiguous(), scores.contiguous(), 4)
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e30, 1e-30, 1e-42])
def test_huge_and_tiny_values_are_scale_invariant(device, dtype, scale):
    if dtype == torch.float32 and scale == 1e-42:
        scale = 1e-40  # float32 subnormal range
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(2, 300, 4, 4, generator=gen, dtype=torch.float64)
    scores = torch.randn(2, 3, 4, 4, generator=gen).to(device)
    expected, _ = topk_region_pool_reference(features, scores.cpu(), 3)
    scaled = (features * scale).to(device, dtype)
    if scale < 1e-20:
        # Tiny vectors: norm below eps=1e-12, so the denominator is eps, as in F.normalize.
        expected, _ = topk_region_pool_reference(scaled.double().cpu(), scores.cpu(), 3)
    pooled, _ = topk_region_pool(scaled, scores, 3)
    assert bool(torch.isfinite(pooled).all())
    atol = 1e-6 * float(expected.abs().max())  # relative to the output's magnitude
    assert atol > 0
    torch.testing.assert_close(pooled.double().cpu(), expected, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("device", DEVICES)
def test_zero_feature_vectors(device):
    features = torch.zeros(1, 4, 2, 2, device=device, dtype=torch.float64, requires_grad=True)
    scores = torch.arange(4.0, device=device).view(1, 2, 2)
    pooled, _ = topk_region_pool(features, scores, 2)
    assert pooled.abs().max().item() == 0.0
    grad = torch.randn(1, 4, device=device, dtype=torch.float64)
    (got,) = torch.autograd.grad(pooled, features, grad)
    ref_features = features.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        topk_region_pool_reference(ref_features, scores, 2)[0], ref_features, grad
    )
    torch.testing.assert_close(got, expected)
    assert got.abs().max().item() > 1e11  # g / eps at the two selected locations


def test_numpy_in_numpy_out():
    gen = np.random.default_rng(0)
    features = gen.standard_normal((2, 6, 4, 5)).astype(np.float32)
    scores = gen.standard_normal((2, 3, 4, 5)).astype(np.float32)
    pooled, locations = topk_region_pool(features, scores, 3, valid_hw=np.array([[4, 5], [2, 2]]))
    assert isinstance(pooled, np.ndarray) and isinstance(locations, np.ndarray)
    assert pooled.dtype == np.float32 and locations.dtype == np.int64
    ref_pooled, ref_locations = topk_region_pool_reference(
        torch.from_numpy(features).double(),
        torch.from_numpy(scores),
        3,
        valid_hw=torch.tensor([[4, 5], [2, 2]]),
    )
    np.testing.assert_array_equal(locations, ref_locations.numpy())
    np.testing.assert_allclose(pooled, ref_pooled.numpy(), rtol=1e-5, atol=1e-6)


# --- bad input ------------------------------------------------------------------------------


def _good():
    return torch.randn(2, 3, 4, 5), torch.randn(2, 6, 4, 5)


@pytest.mark.parametrize(
    ("mutate", "error", "match"),
    [
        (lambda f, s: (f[0], s, 2), ValueError, "features: expected a 4-D"),
        (lambda f, s: (f, s[0, 0], 2), ValueError, "scores: expected a B×K×H×W"),
        (lambda f, s: (f, s[None], 2), ValueError, "scores: expected a B×K×H×W"),
        (lambda f, s: (f, s[:1], 2), ValueError, r"scores: expected shape \(2, K, 4, 5\)"),
        (lambda f, s: (f, s[..., :4], 2), ValueError, r"scores: expected shape"),
        (lambda f, s: (f, s[:, :0], 2), ValueError, r"K >= 1"),
        (lambda f, s: (f[:, :0], s, 2), ValueError, "features: expected a non-empty"),
        (lambda f, s: (f.int(), s, 2), TypeError, "features: expected dtype float32"),
        (lambda f, s: (f, s.long(), 2), TypeError, "scores: expected dtype float32"),
        (lambda f, s: (f, s, 0), ValueError, r"k: expected 1 <= k <= H\*W = 20, got 0"),
        (lambda f, s: (f, s, -3), ValueError, "k: expected 1 <= k"),
        (lambda f, s: (f, s, 21), ValueError, r"k: expected 1 <= k <= H\*W = 20, got 21"),
        (lambda f, s: (f, s, 2.0), TypeError, "k: expected an int"),
        (lambda f, s: (f, s, True), TypeError, "k: expected an int"),
        (lambda f, s: ([[1.0]], s, 2), TypeError, "features: expected a numpy array"),
        (lambda f, s: (f, s.to("meta"), 2), ValueError, "scores: unsupported device meta"),
        (lambda f, s: (f.to("meta"), s.to("meta"), 2), ValueError, "features: unsupported device"),
        (lambda f, s: (f.to_sparse(), s, 2), TypeError, "features: expected a dense tensor"),
        (lambda f, s: (f, s, np.float64(2)), TypeError, "k: expected an int"),
    ],
)
def test_bad_arguments(mutate, error, match):
    features, scores = _good()
    with pytest.raises(error, match=match):
        topk_region_pool(*mutate(features, scores))


@pytest.mark.parametrize(
    ("valid_hw", "error", "match"),
    [
        (torch.tensor([[4, 5]]), ValueError, r"valid_hw: expected shape \(2, 2\)"),
        (torch.tensor([[4, 5, 1], [1, 1, 1]]), ValueError, r"valid_hw: expected shape"),
        (torch.tensor([[4.0, 5.0], [4.0, 5.0]]), TypeError, "valid_hw: expected an integer dtype"),
        (torch.tensor([[4, 5], [0, 5]]), ValueError, r"valid_hw: image 1 has valid size \(0, 5\)"),
        (torch.tensor([[5, 5], [4, 5]]), ValueError, r"valid_hw: image 0 has valid size \(5, 5\)"),
        (torch.tensor([[4, 6], [4, 5]]), ValueError, "expected 1 <= h <= 4 and 1 <= w <= 5"),
        (
            torch.tensor([[4, 5], [1, 2]]),
            ValueError,
            r"k=3 exceeds the valid area of image 1 \(1×2 = 2",
        ),
    ],
)
def test_bad_valid_hw(valid_hw, error, match):
    features, scores = _good()
    with pytest.raises(error, match=match):
        topk_region_pool(features, scores, 3, valid_hw=valid_hw)


@pytest.mark.parametrize("device", DEVICES)
def test_nan_scores_rejected(device, isa):
    features, scores = (t.to(device) for t in _good())
    for index in [(1, 5, 3, 4), (0, 0, 0, 0), (1, 2, 1, 3)]:
        bad = scores.clone()
        bad[index] = float("nan")
        with pytest.raises(ValueError, match=f"scores: contains NaN values \\(image {index[0]}\\)"):
            topk_region_pool(features, bad, 2)
    # NaN in a long row exercises the SIMD main loop, not only the tail.
    wide = torch.randn(1, 3, 16, 16, device=device)
    wide[0, 1, 3, 7] = float("nan")
    with pytest.raises(ValueError, match="scores: contains NaN"):
        topk_region_pool(torch.randn(1, 2, 16, 16, device=device), wide, 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_features_rejected_only_where_selected(device, value):
    features = torch.randn(1, 3, 2, 2, device=device, requires_grad=False)
    scores = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]], device=device)
    features[0, 1, 1, 1] = value  # location 3: not among the top 2
    pooled, _ = topk_region_pool(features, scores, 2)
    assert bool(torch.isfinite(pooled).all())
    with pytest.raises(
        ValueError,
        match=r"features: contains NaN or infinite values at a selected location \(image 0\)",
    ):
        topk_region_pool(features, scores, 4)


# --- autograd -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("saliency", [False, True])
def test_gradcheck_float64(device, saliency):
    gen = torch.Generator().manual_seed(4)
    features = torch.randn(2, 5, 3, 4, generator=gen, dtype=torch.float64).to(device)
    scores = torch.randn(2, 3, 3, 4, generator=gen, dtype=torch.float64).to(device)
    if saliency:
        scores = scores[:, 0]
    features.requires_grad_(True)
    valid_hw = torch.tensor([[3, 4], [2, 3]])
    assert torch.autograd.gradcheck(
        lambda f: topk_region_pool(f, scores, 3, valid_hw=valid_hw)[0], (features,)
    )
    channels_last = features.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: topk_region_pool(f, scores, 4)[0], (channels_last,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 37, 5, 7, 4), (2, 64, 28, 28, 4), (1, 3, 1, 5, 5)])
def test_backward_matches_reference(device, dtype, shape):
    batch, channels, height, width, k = shape
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(batch, channels, height, width, generator=gen)
    scores = torch.randn(batch, 2, height, width, generator=gen).to(device)
    grad = torch.randn(batch, channels, generator=gen)
    features = base.to(device, dtype).requires_grad_(True)
    (got,) = torch.autograd.grad(
        topk_region_pool(features, scores, k)[0], features, grad.to(device, dtype)
    )
    ref_features = base.to(device, dtype).double().requires_grad_(True)
    (expected,) = torch.autograd.grad(
        topk_region_pool_reference(ref_features, scores, k)[0],
        ref_features,
        grad.to(device).double(),
    )
    assert got.dtype == dtype and got.shape == features.shape and got.is_contiguous()
    torch.testing.assert_close(got.double(), expected, **_tol(dtype))
    # Exactly k nonzero columns per image (random features: no accidental zeros).
    nonzero_columns = (got.flatten(2) != 0).any(dim=1).sum(dim=1)
    assert nonzero_columns.tolist() == [k] * batch


@pytest.mark.parametrize("device", DEVICES)
def test_no_gradient_to_scores_and_expanded_grad(device):
    features = torch.randn(2, 6, 3, 3, device=device, requires_grad=True)
    scores = torch.randn(2, 4, 3, 3, device=device, requires_grad=True)
    pooled, locations = topk_region_pool(features, scores, 2)
    assert pooled.requires_grad and not locations.requires_grad
    pooled.sum().backward()  # expanded (stride-0) incoming gradient
    assert scores.grad is None
    ref_features = features.detach().clone().requires_grad_(True)
    topk_region_pool_reference(ref_features, scores.detach(), 2)[0].sum().backward()
    torch.testing.assert_close(features.grad, ref_features.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(2, 6, 4, 5, generator=gen).to(device)
    scores = torch.randn(2, 3, 4, 5, generator=gen).to(device)
    op = torch.ops.pyinstance.topk_region_pool.default
    cases = [
        (features, scores, 3, None),
        (
            features.double().requires_grad_(True),
            scores,
            4,
            torch.tensor([[2, 3], [4, 5]], device=device),
        ),
        (
            features.to(memory_format=torch.channels_last).requires_grad_(True),
            scores[:, 0],
            20,
            None,
        ),
    ]
    for args in cases:
        torch.library.opcheck(op, args)
    pooled, locations = topk_region_pool(features, scores, 3)
    torch.library.opcheck(
        torch.ops.pyinstance.topk_region_pool_backward.default,
        (torch.randn_like(pooled), features, locations),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_backward_op_rejects_bad_arguments(device):
    features = torch.randn(2, 3, 4, 5, device=device)
    grad = torch.randn(2, 3, device=device)
    locations = torch.tensor([[0, 19], [5, 6]], device=device)
    backward = torch.ops.pyinstance.topk_region_pool_backward
    assert backward(grad, features, locations).shape == features.shape
    for bad, match in [(20, r"out of range \[0, (20|H\*W)\)"), (-1, "out of range")]:
        with pytest.raises(ValueError, match=match):
            backward(grad, features, torch.tensor([[0, 1], [bad, 2]], device=device))
    with pytest.raises(ValueError, match=r"grad_pooled: expected shape \(2, 3\)"):
        backward(grad[:1], features, locations)
    with pytest.raises(ValueError, match=r"locations: expected int64 of shape \(2, k\)"):
        backward(grad, features, locations.int())
    with pytest.raises(ValueError, match="features: expected a float B×C×H×W"):
        backward(grad, features[0], locations)


def test_unknown_isa_cap_caps_nothing(monkeypatch):
    features, scores = _good()
    expected = topk_region_pool(features, scores, 2)
    monkeypatch.setenv("PYINSTANCE_ISA", "sse9")
    got = topk_region_pool(features, scores, 2)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("device", DEVICES)
def test_batch_large_enough_for_the_parallel_pipeline(device, isa):
    # Big enough for the CPU kernel's parallel region: each thread streams its images'
    # class maps while pooling the previous image.
    gen = torch.Generator().manual_seed(21)
    features = torch.randn(7, 24, 12, 12, generator=gen).to(device)
    scores = torch.randn(7, 300, 12, 12, generator=gen).to(device)
    valid_hw = torch.tensor([[12, 12], [3, 4], [12, 1], [7, 9], [1, 5], [12, 12], [2, 2]])
    _check(features, scores, 4, valid_hw)
    bad = scores.clone()
    bad[4, 299, 0, 3] = float("nan")
    with pytest.raises(ValueError, match=r"scores: contains NaN values \(image 4\)"):
        topk_region_pool(features, bad, 4)


def test_numpy_integer_k_is_accepted():
    features, scores = _good()
    expected = topk_region_pool(features, scores, 3)
    for k in (np.int64(3), np.int32(3), np.uint8(3)):
        got = topk_region_pool(features, scores, k)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_awkward_numpy_layouts_are_accepted():
    features, scores = (t.numpy() for t in _good())
    expected = topk_region_pool(features, scores, 2)
    flipped = topk_region_pool(features[::-1].copy()[::-1], scores.astype(">f4"), 2)
    np.testing.assert_array_equal(flipped[0], expected[0])
    np.testing.assert_array_equal(flipped[1], expected[1])
