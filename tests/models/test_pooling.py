"""MAC, SPoC, GeM and R-MAC heads against plain references; projection and whitening."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinstance.models.pooling import MAC, RMAC, GeM, Projection, SPoC, l2_normalize, rmac_regions

HEADS = [MAC, SPoC, GeM, RMAC]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_mac_and_spoc_against_reference() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 8, 5, 7)
    torch.testing.assert_close(MAC(8)(x), _unit(x.flatten(2).max(dim=2).values))
    torch.testing.assert_close(SPoC(8)(x), _unit(x.flatten(2).mean(dim=2)))


def test_gem_reference_and_limits() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 8, 6, 5, dtype=torch.float64) + 0.01
    gem = GeM(8).double()
    assert gem.p.item() == 3.0 and gem.p.requires_grad
    torch.testing.assert_close(gem(x), _unit((x**3).mean(dim=(2, 3)) ** (1 / 3)))
    torch.testing.assert_close(GeM(8, p=1.0).double()(x), SPoC(8).double()(x))
    # p -> inf: (mean x^p)^(1/p) -> max; at p = 500 within (1/30)^(1/500) ~ 0.7%
    torch.testing.assert_close(GeM(8, p=500.0).double()(x), MAC(8).double()(x), atol=1e-2, rtol=0)
    fixed = GeM(8, p=2.0, learn_p=False)
    assert "p" not in dict(fixed.named_parameters()) and float(fixed.p) == 2.0


def test_gem_p_is_learned() -> None:
    gem = GeM(4)
    x = torch.rand(2, 4, 3, 3) + 0.1
    (gem(x) * torch.randn(2, 4)).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs().item() > 0


def _slow_rmac_regions(height: int, width: int, levels: int = 3) -> list[tuple[int, int, int]]:
    """Tolias et al.'s region grid, written the way the original MATLAB code loops."""
    ovr = 0.4
    w = min(width, height)
    steps = [2, 3, 4, 5, 6, 7]
    best = min(
        range(6),
        key=lambda i: abs(
            (w * w - w * ((max(height, width) - w) / (steps[i] - 1))) / (w * w) - ovr
        ),
    )
    wd = best + 1 if height < width else 0
    hd = best + 1 if height > width else 0
    regions = []
    for level in range(1, levels + 1):
        wl = math.floor(2 * w / (level + 1))
        if wl == 0:
            continue
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if level + wd == 1 else (width - wl) / (level + wd - 1)
        cen_w = [math.floor(wl2 + i * b) - wl2 for i in range(level + wd)]
        b = 0 if level + hd == 1 else (height - wl) / (level + hd - 1)
        cen_h = [math.floor(wl2 + i * b) - wl2 for i in range(level + hd)]
        for top in cen_h:
            for left in cen_w:
                regions.append((top, left, wl))
    return regions


def _slow_rmac(x: torch.Tensor, levels: int = 3, projection=None) -> torch.Tensor:  # noqa: ANN001
    total = torch.zeros(
        x.shape[0], projection.linear.out_features if projection else x.shape[1], dtype=x.dtype
    )
    for top, left, side in _slow_rmac_regions(x.shape[2], x.shape[3], levels):
        region = _unit(x[:, :, top : top + side, left : left + side].amax(dim=(2, 3)))
        if projection is not None:
            region = _unit(projection(region))
        total += region
    return _unit(total)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (2, 9), (7, 7), (14, 20), (25, 11), (3, 40)])
def test_rmac_against_loop_reference(height: int, width: int) -> None:
    torch.manual_seed(height * 100 + width)
    x = torch.randn(2, 6, height, width, dtype=torch.float64)
    torch.testing.assert_close(RMAC(6).double()(x), _slow_rmac(x))
    regions = [
        (t, c, s) for s, rows, cols in rmac_regions(height, width) for t in rows for c in cols
    ]
    assert sorted(regions) == sorted(_slow_rmac_regions(height, width))


def test_rmac_grid_is_tolias() -> None:
    grid = rmac_regions(30, 40)
    assert [side for side, _, _ in grid] == [30, 20, 15]  # 2·min/(l+1)
    assert [len(rows) * len(cols) for _, rows, cols in grid] == [2, 6, 12]
    side, rows, cols = rmac_regions(20, 60)[0]  # 4 squares of 20 along 60: overlap ~ 1/3
    assert (side, rows, len(cols)) == (20, (0,), 4)
    overlaps = [1 - (b - a) / side for a, b in zip(cols[:-1], cols[1:], strict=True)]
    assert all(0.3 <= overlap <= 0.5 for overlap in overlaps)
    for side, rows, cols in rmac_regions(13, 31, levels=4):
        assert rows[-1] + side == 13 and cols[-1] + side == 31  # the grid spans the map


def test_rmac_with_projection_projects_every_region() -> None:
    torch.manual_seed(0)
    head = RMAC(6, out_dim=4).double()
    x = torch.randn(2, 6, 9, 12, dtype=torch.float64)
    torch.testing.assert_close(head(x), _slow_rmac(x, projection=head.projection))
    assert head.out_dim == 4


@pytest.mark.parametrize("head_type", HEADS)
def test_projection_reduces_dimension_and_normalises(head_type) -> None:  # noqa: ANN001
    head = head_type(16, out_dim=5)
    out = head(torch.rand(3, 16, 4, 6))
    assert out.shape == (3, 5) and head.out_dim == 5
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    out.sum().backward()
    assert head.projection.linear.weight.grad is not None


def test_init_whitening_gives_identity_covariance() -> None:
    torch.manual_seed(0)
    data = torch.randn(200, 6) @ torch.randn(6, 6) + torch.randn(6)
    projection = Projection(6, 4)
    projection.init_whitening(data)
    with torch.no_grad():
        white = projection(data).double()
    torch.testing.assert_close(
        white.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        torch.cov(white.T), torch.eye(4, dtype=torch.float64), atol=1e-3, rtol=0
    )
    with pytest.raises(ValueError, match="more than 4 descriptors"):
        projection.init_whitening(data[:4])
    with pytest.raises(ValueError, match="N×6"):
        projection.init_whitening(data[:, :5])


@settings(max_examples=30, deadline=None)
@given(
    head_index=st.integers(0, 3),
    batch=st.integers(1, 3),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    scale=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**16),
)
def test_properties_unit_norm_scale_invariance_batch_independence(
    head_index: int, batch: int, height: int, width: int, scale: float, seed: int
) -> None:
    torch.manual_seed(seed)
    head = HEADS[head_index](5).double()
    x = torch.rand(batch, 5, height, width, dtype=torch.float64) + 0.05
    out = head(x)
    assert out.shape == (batch, 5)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(batch, dtype=torch.float64))
    torch.testing.assert_close(head(x * scale), out)  # positively homogeneous pooling
    torch.testing.assert_close(head(x[-1:]), out[-1:])  # no mixing across the batch
    torch.testing.assert_close(head(x.flip(0)), out.flip(0))


def test_non_contiguous_and_ties() -> None:
    x = torch.rand(2, 7, 6, 4).permute(0, 1, 3, 2)  # non-contiguous
    for head_type in HEADS:
        torch.testing.assert_close(head_type(7)(x), head_type(7)(x.contiguous()))
    ties = torch.ones(1, 3, 4, 4)
    for head_type in HEADS:
        torch.testing.assert_close(head_type(3)(ties), torch.full((1, 3), 3**-0.5))


@pytest.mark.parametrize("head_type", HEADS)
def test_bad_inputs(head_type) -> None:  # noqa: ANN001
    head = head_type(4)
    with pytest.raises(ValueError, match="expected 4 channels, got 3"):
        head(torch.rand(1, 3, 2, 2))
    with pytest.raises(ValueError, match="B×4×H×W"):
        head(torch.rand(4, 2, 2))
    with pytest.raises(ValueError, match="NaN"):
        head(torch.full((1, 4, 2, 2), float("nan")))
    with pytest.raises(TypeError, match="floating-point"):
        head(torch.ones(1, 4, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        head(torch.rand(1, 4, 0, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        head([[1.0]])
    with pytest.raises(ValueError, match="in_channels"):
        head_type(0)
    with pytest.raises(ValueError, match="out_dim"):
        head_type(4, out_dim=0)


def test_bad_head_options() -> None:
    with pytest.raises(ValueError, match="p: expected"):
        GeM(4, p=0.0)
    with pytest.raises(ValueError, match="p: expected"):
        GeM(4, p=float("inf"))
    with pytest.raises(ValueError, match="levels"):
        RMAC(4, levels=0)
    with pytest.raises(ValueError, match="overlap"):
        RMAC(4, overlap=1.5)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: GeM(4, p="3"), TypeError, r"p: expected a finite number > 0, got '3' \(str\)"),
        (lambda: GeM(4, p=True), TypeError, "p: expected a finite number > 0, got True"),
        (lambda: GeM(4, p=float("nan")), ValueError, "p: expected a finite number > 0, got nan"),
        (lambda: GeM(4, learn_p=1), TypeError, "learn_p: expected True or False"),
        (lambda: MAC(True), TypeError, "in_channels: expected an integer >= 1, got True"),
        (lambda: SPoC(4, out_dim=2.0), TypeError, "out_dim: expected an integer >= 1"),
        (lambda: RMAC(4, levels=True), TypeError, "levels: expected an integer >= 1"),
        (lambda: RMAC(4, overlap="0.4"), TypeError, "overlap: expected a finite number"),
        (lambda: RMAC(4, overlap=float("nan")), ValueError, "overlap: expected a finite number"),
    ],
)
def test_head_options_name_the_argument(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_head_options_accept_numpy_scalars():
    gem = GeM(np.int64(4), out_dim=np.int32(3), p=np.float32(2.5))
    assert (gem.in_channels, gem.out_dim, gem.p.item()) == (4, 3, 2.5)
    assert type(gem.in_channels) is int and type(gem.out_dim) is int
    rmac = RMAC(np.int16(4), levels=np.int64(2), overlap=np.float64(0.3))
    assert (rmac.levels, rmac.overlap) == (2, 0.3) and type(rmac.levels) is int
    assert gem(torch.rand(2, 4, 5, 5)).shape == (2, 3)


def test_rmac_gradient_flows_to_region_maxima() -> None:
    x = torch.rand(1, 3, 6, 8, requires_grad=True)
    RMAC(3)(x).sum().backward()
    assert x.grad is not None and (x.grad != 0).sum() > 0
    reference = x.detach().clone().requires_grad_(True)
    _slow_rmac(reference.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), reference.grad.double(), atol=1e-5, rtol=1e-4)


def test_rmac_levels_and_overlap_give_the_hand_computed_regions() -> None:
    # 6×10 map, overlap 0.4: squares of 6 overlap by 1 - shift/6 for shift (10 - 6)/(k - 1);
    # k = 2 (shift 4, overlap 1/3) is nearest 0.4, so one extra square along the long side.
    # Level l: side floor(12 / (l + 1)), l squares along 6 and l + 1 along 10, evenly spread.
    assert rmac_regions(6, 10, levels=3, overlap=0.4) == (
        (6, (0,), (0, 4)),
        (4, (0, 2), (0, 3, 6)),
        (3, (0, 1, 3), (0, 2, 4, 7)),
    )
    # overlap 0.8: shifts 4/3 (overlap 0.78) nearest, three extra squares: 4 along 10
    assert rmac_regions(6, 10, levels=1, overlap=0.8) == ((6, (0,), (0, 1, 2, 4)),)
    torch.manual_seed(4)
    x = torch.randn(2, 5, 6, 10, dtype=torch.float64)

    def by_hand(regions: list[tuple[int, int, int]]) -> torch.Tensor:
        total = sum(_unit(x[:, :, t : t + s, c : c + s].amax(dim=(2, 3))) for t, c, s in regions)
        return _unit(total)

    level_1 = [(0, 0, 6), (0, 4, 6)]
    level_2 = [(t, c, 4) for t in (0, 2) for c in (0, 3, 6)]
    torch.testing.assert_close(RMAC(5, levels=1).double()(x), by_hand(level_1))
    torch.testing.assert_close(RMAC(5, levels=2).double()(x), by_hand(level_1 + level_2))
    torch.testing.assert_close(
        RMAC(5, levels=1, overlap=0.8).double()(x), by_hand([(0, c, 6) for c in (0, 1, 2, 4)])
    )


def test_init_whitening_keeps_the_largest_components() -> None:
    generator = torch.Generator().manual_seed(2)
    spread = torch.tensor([10.0, 0.1, 5.0, 1.0, 0.5, 2.0])  # largest along axes 0 and 2
    data = torch.randn(4000, 6, generator=generator, dtype=torch.float64) * spread
    projection = Projection(6, 2).double()
    projection.init_whitening(data)
    weight = projection.linear.weight.detach().abs()
    kept = weight[:, [0, 2]]
    assert float(weight[:, [1, 3, 4, 5]].max()) < 0.02 * float(kept.max())
    # row 0 whitens the largest axis (1/10), row 1 the second (1/5)
    torch.testing.assert_close(
        kept, torch.tensor([[0.1, 0.0], [0.0, 0.2]], dtype=torch.float64), atol=5e-3, rtol=0.05
    )


@pytest.fixture(autouse=True)
def _fresh_rmac_grid():
    """Every test lays out its R-MAC grid afresh instead of taking one that an earlier test
    left in the cache (mutation testing needs each test to run the layout code)."""
    rmac_regions.cache_clear()
    yield
    rmac_regions.cache_clear()


def test_projection_arguments_name_themselves() -> None:
    assert Projection(1, 1).linear.weight.shape == (1, 1)
    with pytest.raises(ValueError, match=r"^in_dim: expected an integer >= 1, got 0"):
        Projection(0, 4)
    with pytest.raises(ValueError, match=r"^out_dim: expected an integer >= 1, got 0"):
        Projection(4, 0)


def test_overlap_is_a_fraction_in_zero_one() -> None:
    for overlap in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"^overlap: expected"):
            RMAC(4, overlap=overlap)
    assert RMAC(4, overlap=0.0).overlap == 0.0


@pytest.mark.parametrize("head_type", HEADS)
def test_an_empty_batch_is_refused(head_type) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"^features: empty tensor of shape \(0, 4, 2, 2\)"):
        head_type(4)(torch.rand(0, 4, 2, 2))


def test_gem_keeps_a_low_precision_dtype() -> None:
    features = torch.rand(2, 4, 3, 3, dtype=torch.bfloat16) + 0.1
    assert GeM(4)(features).dtype == torch.bfloat16


def test_l2_normalize_divides_tiny_vectors_by_eps() -> None:
    """``x / max(||x||, 1e-6)``: a vector of norm 1e-8 shrinks instead of being blown up."""
    x = torch.tensor([[1e-8, 0.0], [3.0, 4.0]], dtype=torch.float64)
    expected = torch.tensor([[1e-2, 0.0], [0.6, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(l2_normalize(x), expected, rtol=1e-12, atol=0)
