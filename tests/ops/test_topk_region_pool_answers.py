"""topk_region_pool (op, backward op, fake kernels) and its reference on hand-worked cases.

The comparisons in test_topk_region_pool.py check the op against the reference; these pin
both to answers worked out by hand on a 1×2×2×3 feature map, so that a bug shared by the
kernel and the reference, or a wrapper that hands the kernel the wrong buffer, shows.

The map (channel 0, channel 1 at each flat location y * 3 + x):

    location   0       1       2       3        4        5
    feature  (1, 1)  (3, 4)  (7, 7)  (5, 12)  (0, -2)  (-1, 2)
    score     0.5     3.0    -1.0     2.0      3.0      0.0

k = 3 selects 1 and 4 (3.0, the tie by the smaller index) then 3 (2.0):
pooled = (3, 4)/5 + (0, -2)/2 + (5, 12)/13 = (64/65, 47/65).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyinstance.ops import topk_region_pool
from pyinstance.ops._reference import topk_region_pool_reference
from pyinstance.ops.topk_region_pool import _acc_dtype, _raise_cuda_status, _zeros

FEATURES = [[[1.0, 3.0, 7.0], [5.0, 0.0, -1.0]], [[1.0, 4.0, 7.0], [12.0, -2.0, 2.0]]]
SALIENCY = [[0.5, 3.0, -1.0], [2.0, 3.0, 0.0]]
# A class map whose maximum over the classes is SALIENCY.
CLASS_MAP = [
    [[0.5, -4.0, -1.0], [2.0, 3.0, -9.0]],
    [[-1.0, 3.0, -2.0], [1.0, 2.0, 0.0]],
]
POOLED = [64 / 65, 47 / 65]
R = 1 / math.sqrt(2)

BACKWARD = torch.ops.pyinstance.topk_region_pool_backward
OP = torch.ops.pyinstance.topk_region_pool


def _features(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([FEATURES], dtype=dtype)


def _saliency(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor([SALIENCY], dtype=dtype)


def _both(features, scores, k, valid_hw=None):
    """(pooled, locations) of the op and of the reference, as lists."""
    got = topk_region_pool(features, scores, k, valid_hw=valid_hw)
    ref = topk_region_pool_reference(features, scores, k, valid_hw=valid_hw)
    return [(p.tolist(), loc.tolist()) for p, loc in (got, ref)]


@pytest.mark.parametrize("scores", [SALIENCY, CLASS_MAP])
def test_hand_worked_map(scores):
    for pooled, locations in _both(_features(), torch.tensor([scores]), 3):
        assert locations == [[1, 4, 3]]
        np.testing.assert_allclose(pooled, [POOLED], rtol=1e-12)


def test_hand_worked_map_k_one_and_all():
    for pooled, locations in _both(_features(), _saliency(), 1):
        assert locations == [[1]]
        np.testing.assert_allclose(pooled, [[0.6, 0.8]], rtol=1e-12)
    whole = [1 / math.sqrt(2) + 0.6 + R + 5 / 13 + 0 - 1 / math.sqrt(5)]
    whole.append(R + 0.8 + R + 12 / 13 - 1 + 2 / math.sqrt(5))
    for pooled, locations in _both(_features(), _saliency(), 6):
        assert locations == [[1, 4, 3, 0, 5, 2]]
        np.testing.assert_allclose(pooled, [whole], rtol=1e-12)


@pytest.mark.parametrize(
    ("valid_hw", "k", "locations", "pooled"),
    [
        # Only row 0, columns 0-1: locations 1 then 0.
        ([[1, 2]], 2, [[1, 0]], [[0.6 + R, 0.8 + R]]),
        # Column 0 of both rows: 3 (2.0) then 0 (0.5).
        ([[2, 1]], 2, [[3, 0]], [[5 / 13 + R, 12 / 13 + R]]),
        # Two columns of two rows: 1, 4, 3 as without padding, then 0.
        ([[2, 2]], 4, [[1, 4, 3, 0]], [[64 / 65 + R, 47 / 65 + R]]),
        # The whole map is valid: padding changes nothing.
        ([[2, 3]], 3, [[1, 4, 3]], [POOLED]),
        # One location; k equals the valid area.
        ([[1, 1]], 1, [[0]], [[R, R]]),
    ],
)
def test_hand_worked_valid_hw(valid_hw, k, locations, pooled):
    for got_pooled, got_locations in _both(_features(), _saliency(), k, torch.tensor(valid_hw)):
        assert got_locations == locations
        np.testing.assert_allclose(got_pooled, pooled, rtol=1e-12)


def test_valid_hw_is_per_image_and_of_any_integer_dtype():
    features = torch.cat([_features(), _features().flip(3)])
    scores = torch.cat([_saliency(), _saliency().flip(2)])
    # Image 1 is image 0 mirrored left-right: its flat location y * 3 + x is image 0's
    # y * 3 + (2 - x).
    for dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        valid_hw = torch.tensor([[1, 2], [2, 1]], dtype=dtype)
        for pooled, locations in _both(features, scores, 2, valid_hw):
            # Image 1's valid column 0 holds image 0's column 2: 2 (-1.0), 5 (0.0).
            assert locations == [[1, 0], [3, 0]]
            np.testing.assert_allclose(
                pooled, [[0.6 + R, 0.8 + R], [R - 1 / math.sqrt(5), R + 2 / math.sqrt(5)]]
            )


def test_minus_infinity_inside_the_window_beats_the_padding():
    scores = torch.tensor([[[-np.inf, 9.0, 9.0], [-np.inf, 9.0, 9.0]]], dtype=torch.float64)
    for pooled, locations in _both(_features(), scores, 2, torch.tensor([[2, 1]])):
        assert locations == [[0, 3]]
        np.testing.assert_allclose(pooled, [[R + 5 / 13, R + 12 / 13]], rtol=1e-12)


def test_float32_scores_rank_as_float32():
    # 1 + 2**-30 is 1.0 in float32: a tie, broken by the smaller index.
    scores = torch.tensor([[[1.0, 1.0 + 2**-30, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float32)
    for _, locations in _both(_features(), scores, 2):
        assert locations == [[0, 1]]
    for _, locations in _both(_features(), scores.double(), 2):
        assert locations == [[0, 1]]
    scores64 = torch.tensor([[[1.0, 1.0 + 2**-30, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    for _, locations in _both(_features(), scores64, 2):
        assert locations == [[1, 0]]


def test_tiny_and_zero_vectors_are_divided_by_eps():
    features = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    features[0, :, 0, 0] = torch.tensor([3e-20, 4e-20])  # norm 5e-20, below eps
    scores = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    for pooled, locations in _both(features, scores, 2):
        assert locations == [[0, 1]]
        np.testing.assert_allclose(pooled, [[3e-8, 4e-8]], rtol=1e-7)  # eps in float32
    pooled, _ = topk_region_pool_reference(features, scores, 2, eps=1e-21)
    np.testing.assert_allclose(pooled.tolist(), [[0.6, 0.8]], rtol=1e-12)


def test_huge_vector_norm_does_not_overflow_in_the_reference():
    features = torch.tensor([[[[3e300]], [[-4e300]]]], dtype=torch.float64)
    pooled, locations = topk_region_pool_reference(features, torch.zeros(1, 1, 1), 1)
    assert locations.tolist() == [[0]]
    np.testing.assert_allclose(pooled.tolist(), [[0.6, -0.8]], rtol=1e-12)


# --- gradients ------------------------------------------------------------------------------

# d/df of f / |f| applied to g: (g - u (u . g)) / |f| with u = f / |f|; with g = (1, 0).
GRAD_AT = {1: (0.128, -0.096), 4: (0.5, 0.0), 3: (144 / 2197, -60 / 2197)}


def _expected_grad() -> list:
    grad = np.zeros((1, 2, 2, 3))
    for location, (g0, g1) in GRAD_AT.items():
        grad[0, :, location // 3, location % 3] = (g0, g1)
    return grad.tolist()


def test_hand_worked_gradient_of_op_and_reference():
    for function in (topk_region_pool, topk_region_pool_reference):
        features = _features().requires_grad_(True)
        pooled, _ = function(features, _saliency(), 3)
        pooled.backward(torch.tensor([[1.0, 0.0]], dtype=torch.float64))
        np.testing.assert_allclose(features.grad.tolist(), _expected_grad(), atol=1e-15)


def test_backward_op_converts_the_incoming_gradient_to_the_features_dtype():
    grad = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
    got = BACKWARD(grad, _features(), torch.tensor([[1, 4, 3]]))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.tolist(), _expected_grad(), atol=1e-15)


def test_backward_op_reads_non_contiguous_gradients_and_locations():
    grad = torch.tensor([[7.0, 1.0], [9.0, 0.0]], dtype=torch.float64).T[1:]  # [[1, 0]]
    locations = torch.tensor([[1, 9, 4, 9, 3, 9]])[:, ::2]
    assert not locations.is_contiguous() and not grad.is_contiguous()
    got = BACKWARD(grad, _features(), locations)
    np.testing.assert_allclose(got.tolist(), _expected_grad(), atol=1e-15)


def test_backward_op_k_is_the_locations_width():
    # Two images, one location each (k = 1 != batch = 2): image 1 selects location 4.
    features = torch.cat([_features(), _features()])
    grad = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    got = BACKWARD(grad, features, torch.tensor([[1], [4]]))
    expected = np.zeros((2, 2, 2, 3))
    expected[0, :, 0, 1] = GRAD_AT[1]
    expected[1, :, 1, 1] = GRAD_AT[4]
    np.testing.assert_allclose(got.tolist(), expected, atol=1e-15)
    assert got.is_contiguous()


def test_backward_op_of_channels_last_features():
    features = _features().to(memory_format=torch.channels_last)
    got = BACKWARD(
        torch.tensor([[1.0, 0.0]], dtype=torch.float64), features, torch.tensor([[1, 4, 3]])
    )
    assert got.is_contiguous()
    np.testing.assert_allclose(got.tolist(), _expected_grad(), atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backward_op_of_reduced_precision_features(dtype):
    got = BACKWARD(
        torch.tensor([[1.0, 0.0]], dtype=dtype), _features(dtype), torch.tensor([[1, 4, 3]])
    )
    assert got.dtype == dtype and got.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(got.double().tolist(), _expected_grad(), atol=1e-2)


def test_gradient_only_to_features_also_when_scores_require_it():
    features = _features().requires_grad_(True)
    scores = _saliency().requires_grad_(True)
    pooled, _ = topk_region_pool(features, scores, 3)
    grads = torch.autograd.grad(
        pooled,
        (features, scores),
        torch.tensor([[1.0, 0.0]], dtype=torch.float64),
        allow_unused=True,
    )
    np.testing.assert_allclose(grads[0].tolist(), _expected_grad(), atol=1e-15)
    assert grads[1] is None


def test_no_gradient_is_computed_for_features_that_do_not_require_it():
    scores = _saliency().requires_grad_(True)
    pooled, _ = topk_region_pool(_features(), scores, 3)
    pooled.sum().backward()
    assert scores.grad is None


@pytest.mark.parametrize(
    ("grad", "features", "locations", "match"),
    [
        (
            torch.zeros(1, 2),
            torch.zeros(1, 2, 2, 3, dtype=torch.int32),
            torch.tensor([[0]]),
            "features: expected a float B×C×H×W",
        ),
        (
            torch.zeros(1, 2),
            torch.zeros(1, 2, 2, 3),
            torch.tensor([0]),
            "locations: expected int64",
        ),
        (
            torch.zeros(1, 2),
            torch.zeros(1, 2, 2, 3),
            torch.tensor([[[0]]]),
            "locations: expected int64",
        ),
        (
            torch.zeros(1, 2),
            torch.zeros(1, 2, 2, 3),
            torch.tensor([[0], [1]]),
            "locations: expected int64",
        ),
        (
            torch.zeros(1, 3),
            torch.zeros(1, 2, 2, 3),
            torch.tensor([[0]]),
            r"grad_pooled: expected shape \(1, 2\)",
        ),
        (
            torch.zeros(2, 2),
            torch.zeros(1, 2, 2, 3),
            torch.tensor([[0]]),
            r"grad_pooled: expected shape \(1, 2\)",
        ),
    ],
)
def test_backward_op_refuses_bad_arguments(grad, features, locations, match):
    with pytest.raises(ValueError, match=match):
        BACKWARD(grad, features, locations)


# --- fake (meta) kernels --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_fake_forward_gives_the_shapes_and_dtypes(dtype):
    features = torch.empty(2, 3, 4, 5, dtype=dtype, device="meta")
    scores = torch.empty(2, 6, 4, 5, device="meta")
    pooled, locations = OP(features, scores, 7, None)
    assert pooled.device.type == "meta" and locations.device.type == "meta"
    assert pooled.shape == (2, 3) and pooled.dtype == dtype
    assert locations.shape == (2, 7) and locations.dtype == torch.int64


def test_fake_backward_is_contiguous_like_the_kernel():
    features = torch.empty(2, 3, 4, 5, device="meta").to(memory_format=torch.channels_last)
    got = BACKWARD(
        torch.empty(2, 3, device="meta"),
        features,
        torch.empty(2, 7, dtype=torch.int64, device="meta"),
    )
    assert got.device.type == "meta" and got.shape == (2, 3, 4, 5) and got.dtype == torch.float32
    assert got.is_contiguous()


def test_fake_forward_under_fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        features = torch.empty(3, 4, 2, 3, dtype=torch.bfloat16)
        pooled, locations = OP(
            features, torch.empty(3, 2, 3), 2, torch.ones(3, 2, dtype=torch.int64)
        )
        assert pooled.shape == (3, 4) and pooled.dtype == torch.bfloat16
        assert locations.shape == (3, 2) and locations.dtype == torch.int64


# --- input checks ---------------------------------------------------------------------------


def test_k_at_both_bounds_is_accepted():
    for k, locations in ((1, [[1]]), (6, [[1, 4, 3, 0, 5, 2]])):
        assert topk_region_pool(_features(), _saliency(), k)[1].tolist() == locations
        assert OP(_features(), _saliency(), k, None)[1].tolist() == locations


@pytest.mark.parametrize("k", [0, 7])
def test_the_op_itself_checks_k(k):
    with pytest.raises(ValueError, match="k: expected 1 <= k <= H"):
        OP(_features(), _saliency(), k, None)


def test_the_op_itself_checks_valid_hw():
    with pytest.raises(ValueError, match="valid_hw: image 0 has valid size"):
        OP(_features(), _saliency(), 1, torch.tensor([[3, 1]]))
    with pytest.raises(ValueError, match="k=3 exceeds the valid area of image 0"):
        OP(_features(), _saliency(), 3, torch.tensor([[1, 2]]))


@pytest.mark.parametrize(
    "valid_hw",
    [[[0, 1]], [[1, 0]], [[3, 1]], [[1, 4]], [[-1, 3]], [[2, -1]]],
)
def test_valid_hw_outside_the_map_is_refused(valid_hw):
    with pytest.raises(ValueError, match=r"valid_hw: image 0 has valid size"):
        topk_region_pool(_features(), _saliency(), 1, valid_hw=torch.tensor(valid_hw))


def test_valid_hw_error_names_the_first_bad_image():
    valid_hw = torch.tensor([[2, 3], [2, 3], [0, 3], [9, 9]])
    features = _features().expand(4, -1, -1, -1)
    scores = _saliency().expand(4, -1, -1)
    with pytest.raises(ValueError, match=r"image 2 has valid size \(0, 3\)"):
        topk_region_pool(features, scores, 1, valid_hw=valid_hw)
    valid_hw = torch.tensor([[2, 3], [1, 1], [1, 2], [2, 3]])
    with pytest.raises(ValueError, match=r"k=2 exceeds the valid area of image 1 \(1×1 = 1"):
        topk_region_pool(features, scores, 2, valid_hw=valid_hw)


def test_valid_area_is_computed_without_small_integer_overflow():
    # 16 × 16 = 256 wraps to 0 in uint8; the area is 256, enough for k = 200.
    features = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    features[0, 0] = 1.0
    scores = torch.arange(256.0, dtype=torch.float64).view(1, 16, 16)
    for dtype in (torch.uint8, torch.int16):
        pooled, locations = topk_region_pool(
            features, scores, 200, valid_hw=torch.tensor([[16, 16]], dtype=dtype)
        )
        assert locations.tolist() == [list(range(255, 55, -1))]
        assert pooled.tolist() == [[200.0]]


def test_a_single_element_map_is_accepted():
    for value, expected in ((-2.5, -1.0), (0.25, 1.0)):
        features = torch.full((1, 1, 1, 1), value, dtype=torch.float64)
        pooled, locations = topk_region_pool(features, torch.zeros(1, 1, 1), 1)
        assert pooled.tolist() == [[expected]] and locations.tolist() == [[0]]


# --- the gradient buffer ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cpu_gradient_buffer_comes_zeroed_from_numpy(dtype, monkeypatch):
    # Documented: on the CPU the buffer is numpy.zeros (calloc), not torch.zeros.
    calls = []
    zeros = np.zeros

    def spy(shape, dtype=float):
        calls.append((shape, dtype))
        return zeros(shape, dtype=dtype)

    monkeypatch.setattr(np, "zeros", spy)
    buffer = _zeros((2, 3, 4), dtype, torch.device("cpu"))
    assert calls and calls[0][0] == (2, 3, 4)
    assert buffer.dtype == dtype and buffer.shape == (2, 3, 4) and buffer.device.type == "cpu"
    assert buffer.is_contiguous() and not bool(buffer.any())


def test_gradient_buffer_off_the_cpu_is_torch_zeros_on_that_device():
    # The meta device stands in for cuda here: same branch.
    buffer = _zeros((2, 3, 4), torch.float16, torch.device("meta"))
    assert buffer.shape == (2, 3, 4) and buffer.dtype == torch.float16
    assert buffer.device.type == "meta"


# --- the CUDA kernels' helpers (plain functions, tested on the CPU) -------------------------


def test_kernel_arithmetic_type_is_float64_only_for_float64():
    expected = {
        torch.float64: torch.float64,
        torch.float32: torch.float32,
        torch.float16: torch.float32,
        torch.bfloat16: torch.float32,
    }
    for dtype, acc in expected.items():
        assert _acc_dtype(torch.zeros(1, dtype=dtype)) is acc


@pytest.mark.parametrize(
    ("codes", "match"),
    [
        ([0, 1], r"^scores: contains NaN values \(image 1\)$"),
        (
            [2, 0, 0],
            r"^features: contains NaN or infinite values at a selected location \(image 0\)$",
        ),
        ([0, 0, 3], r"^k=7 exceeds the valid locations of image 2$"),
        ([0, 4, 1], r"^locations: out of range \[0, H\*W\) in image 1$"),
        ([0, 0, 1, 4], r"^scores: contains NaN values \(image 2\)$"),
    ],
)
def test_cuda_status_codes_become_the_cpu_errors(codes, match):
    with pytest.raises(ValueError, match=match):
        _raise_cuda_status(torch.tensor(codes, dtype=torch.int32), 7)


def test_cuda_status_zero_is_no_error():
    _raise_cuda_status(torch.tensor([0, 0, 0], dtype=torch.int32), 7)


def test_a_valid_hw_that_is_not_an_array_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^valid_hw: expected a numpy array"):
        topk_region_pool(_features(), _saliency(), 1, valid_hw=[[2, 3]])
    meta = torch.ones(1, 2, dtype=torch.int64, device="meta")
    with pytest.raises(ValueError, match=r"^valid_hw: unsupported device meta"):
        topk_region_pool(_features(), _saliency(), 1, valid_hw=meta)


@pytest.mark.parametrize("valid_hw", [None, [[4, 5]]])
def test_ties_among_many_locations_keep_index_order(valid_hw):
    # Twenty locations scoring i % 3 (torch's unstable sort reorders ties from 17 up),
    # one-channel features of 1: pooled = k.
    scores = torch.tensor([float(i % 3) for i in range(20)], dtype=torch.float64).view(1, 4, 5)
    valid = None if valid_hw is None else torch.tensor(valid_hw)
    twos, ones, zeros = list(range(2, 20, 3)), list(range(1, 20, 3)), list(range(0, 20, 3))
    for pooled, locations in _both(torch.ones(1, 1, 4, 5, dtype=torch.float64), scores, 20, valid):
        assert locations == [twos + ones + zeros]
        assert pooled == [[20.0]]


def test_each_location_is_scaled_by_its_own_largest_value():
    # float32: a vector near the top of the range beside one of norm 5e-11. One scale for
    # both would underflow the small one (5e-11 / 2.4e38 < 1.4e-45) to a zero norm.
    features = torch.tensor([[[[1.8e38, 3e-11]], [[-2.4e38, 4e-11]]]], dtype=torch.float32)
    scores = torch.tensor([[[1.0, 0.0]]])
    for pooled, locations in _both(features, scores, 2):
        assert locations == [[0, 1]]
        np.testing.assert_allclose(pooled, [[1.2, 0.0]], atol=1e-6)
