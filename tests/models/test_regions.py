"""Window layouts and per-window pooling of one feature map."""

from __future__ import annotations

import pytest
import torch

from pyinstance.models import MAC, RMAC, GeM, SPoC
from pyinstance.models.regions import DEFAULT_WINDOWS, check_windows, pool_windows, window_boxes


def test_boxes_of_a_two_level_layout_by_hand() -> None:
    boxes = window_boxes(6, 8, ((1.0, 1), (0.5, 2)))
    assert boxes == [
        (0, 0, 6, 8),
        (0, 0, 3, 4),
        (0, 4, 3, 8),
        (3, 0, 6, 4),
        (3, 4, 6, 8),
    ]


def test_default_layout_on_a_10x10_map_by_hand() -> None:
    boxes = window_boxes(10, 10)
    assert len(boxes) == 1 + 9 + 9
    assert boxes[0] == (0, 0, 10, 10)
    # 0.7 of 10 = 7 cells, three starts spread over the 3 free cells: 0, 1.5 -> 2, 3
    assert [b[:2] for b in boxes[1:4]] == [(0, 0), (0, 2), (0, 3)]
    assert {(b[2] - b[0], b[3] - b[1]) for b in boxes[1:10]} == {(7, 7)}
    # 0.5 of 10 = 5 cells, starts 0, 2.5 -> 2 (round half to even), 5
    assert [b[:2] for b in boxes[10:13]] == [(0, 0), (0, 2), (0, 5)]
    assert boxes[-1] == (5, 5, 10, 10)


def test_a_single_window_is_centred_and_never_empty() -> None:
    assert window_boxes(9, 12, ((0.5, 1),)) == [(2, 3, 6, 9)]  # 4.5 -> 4 rows, 6 columns
    assert window_boxes(1, 1, ((0.3, 2),)) == [(0, 0, 1, 1)] * 4
    for top, left, bottom, right in window_boxes(3, 17, DEFAULT_WINDOWS):
        assert 0 <= top < bottom <= 3 and 0 <= left < right <= 17


@pytest.mark.parametrize(
    "make_head",
    [
        lambda: GeM(16),  # summed-area-table path
        lambda: GeM(16, p=4.5, learn_p=False),
        lambda: GeM(16, out_dim=5),  # with a projection
        lambda: SPoC(16),
        lambda: MAC(16),  # generic path: the head on stacked crops
        lambda: RMAC(16, levels=2),
    ],
)
def test_each_window_equals_the_head_on_the_cropped_map(make_head) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    head = make_head()
    features = torch.rand(3, 16, 7, 9) * 6  # ReLU6-like activations
    features[0, :, :2, :3] = 0.0  # a dead corner: GeM's clamp matters there
    layout = ((1.0, 1), (0.6, 2), (0.4, 3), (0.2, 2))
    pooled = pool_windows(features, head, layout)
    boxes = window_boxes(7, 9, layout)
    assert pooled.shape == (3, len(boxes), head.out_dim)
    for r, (top, left, bottom, right) in enumerate(boxes):
        expected = head(features[:, :, top:bottom, left:right])
        torch.testing.assert_close(pooled[:, r], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled[:, 0], head(features), rtol=1e-5, atol=1e-6)


def test_power_mean_path_checks_the_features_like_the_head() -> None:
    features = torch.rand(1, 16, 5, 5)
    features[0, 3, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pool_windows(features, GeM(16))
    with pytest.raises(ValueError, match="expected 16 channels, got 8"):
        pool_windows(torch.rand(1, 8, 5, 5), GeM(16))


def test_windows_of_each_image_stay_with_their_image() -> None:
    head = MAC(4)
    features = torch.zeros(2, 4, 6, 6)
    features[1, 2, 5, 5] = 1.0  # only image 1 has activity, in its bottom-right corner
    pooled = pool_windows(features, head, ((0.5, 2),))
    assert torch.count_nonzero(pooled[0]) == 0
    assert pooled[1, 3, 2] == 1.0 and torch.count_nonzero(pooled[1, :3]) == 0


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        ((), "non-empty sequence"),
        ("whole", "non-empty sequence"),
        (None, "non-empty sequence"),
        (((1.0,),), r"\(fraction, count\) pairs"),
        ((0.5,), r"\(fraction, count\) pairs"),
        (((0.0, 1),), r"fraction must be a number in \(0, 1\]"),
        (((1.5, 1),), r"fraction must be a number in \(0, 1\]"),
        (((True, 1),), "fraction"),
        (((0.5, 0),), "count must be a positive int"),
        (((0.5, 2.0),), "count must be a positive int"),
        (((0.5, False),), "count must be a positive int"),
    ],
)
def test_bad_layouts_are_refused(windows: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"windows: .*{message}"):
        check_windows(windows)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="windows"):
        pool_windows(torch.rand(1, 4, 5, 5), MAC(4), windows)  # type: ignore[arg-type]


def test_layout_is_normalised() -> None:
    assert check_windows([[1, 1], (0.5, 3)]) == ((1.0, 1), (0.5, 3))


@pytest.mark.parametrize("features", [torch.rand(4, 5, 5), [[1.0]], torch.rand(1, 1, 4, 5, 5)])
def test_features_must_be_a_4d_tensor(features: object) -> None:
    with pytest.raises(ValueError, match="features: expected a B×C×H×W tensor"):
        pool_windows(features, MAC(4))  # type: ignore[arg-type]
