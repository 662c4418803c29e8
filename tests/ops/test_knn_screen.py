"""knn_dot(..., screen=KnnScreen): the same results as knn_dot, bit for bit, on every ISA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinstance.ops import KnnScreen, knn_dot

ISAS = ["generic", "avx2", "avx512"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PYINSTANCE_ISA", request.param)
    return request.param


def unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_same(queries, refs, k, screen, **kwargs) -> None:
    want = knn_dot(queries, refs, k, **kwargs)
    got = knn_dot(queries, refs, k, screen=screen, **kwargs)
    assert torch.equal(torch.as_tensor(got[1]), torch.as_tensor(want[1]))
    assert torch.equal(torch.as_tensor(got[0]), torch.as_tensor(want[0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("n", "dim", "q", "k"), [(700, 100, 1, 5), (513, 37, 2, 4), (900, 130, 19, 10)]
)
def test_screened_equals_plain(isa, dtype, n, dim, q, k) -> None:
    rng = np.random.default_rng(n + q)
    x = unit_rows(rng, n, dim)
    x[5] = x[7]  # a tie
    refs = torch.from_numpy(x).to(dtype)
    queries = torch.from_numpy(rng.standard_normal((q, dim)).astype(np.float32))
    queries[0] = refs[7].float()  # the tie is the best match
    screen = KnnScreen.of(refs)
    for threads in (1, 3):
        assert_same(queries, refs, k, screen, threads=threads)
    exclude = torch.from_numpy(rng.integers(-1, n, q))
    assert_same(queries, refs, k, screen, exclude=exclude)


def test_many_exact_ties_keep_index_order(isa) -> None:
    refs = np.ones((300, 64), np.float32)
    refs[::7] *= 2
    screen = KnnScreen.of(refs)
    assert_same(np.ones((3, 64), np.float32), refs, 20, screen)


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1e3, 1e15])
def test_any_magnitude(isa, scale) -> None:
    rng = np.random.default_rng(1)
    refs = rng.standard_normal((400, 48)).astype(np.float32) * np.float32(scale)
    refs[3] = 0  # a zero row
    queries = rng.standard_normal((2, 48)).astype(np.float32)
    queries[1] = 0  # a zero query: every score 0
    assert_same(queries, refs, 7, KnnScreen.of(refs))


def test_overflowing_scores_go_the_exact_way(isa) -> None:
    refs = np.full((200, 16), 1e20, np.float32)
    refs[1, 0] = -1e20
    queries = np.full((1, 16), 1e20, np.float32)
    assert_same(queries, refs, 3, KnnScreen.of(refs))


def test_extended_follows_appends_and_old_screen_stays_valid() -> None:
    rng = np.random.default_rng(2)
    full = unit_rows(rng, 1000, 64)
    first = KnnScreen.of(full[:300])
    grown = first.extended(full)
    assert (first.rows, grown.rows) == (300, 1000)
    queries = unit_rows(rng, 2, 64)
    assert_same(queries, full[:300], 5, first)
    assert_same(queries, full, 5, grown)
    assert_same(queries, full[:500], 5, grown.prefix(500))
    with pytest.raises(ValueError, match="rows: expected 0 <= rows <= 1000"):
        grown.prefix(1001)


def test_wrong_screen_is_refused() -> None:
    rng = np.random.default_rng(3)
    refs = unit_rows(rng, 200, 32)
    screen = KnnScreen.of(refs)
    with pytest.raises(ValueError, match="screen: built for 200 x 32"):
        knn_dot(refs[:1], refs[:150], 3, screen=screen)
    other = refs.copy()
    other[-1] = -other[-1]
    with pytest.raises(ValueError, match="screen: built for"):
        knn_dot(refs[:1], other, 3, screen=screen)
    with pytest.raises(TypeError, match="screen: expected a KnnScreen"):
        knn_dot(refs[:1], refs, 3, screen="fast")


def test_bad_references_are_refused() -> None:
    refs = np.ones((10, 8), np.float32)
    refs[2, 3] = np.nan
    with pytest.raises(ValueError, match="refs: contains NaN"):
        KnnScreen.of(refs)
    with pytest.raises(ValueError, match="refs: expected a 2-D"):
        KnnScreen.of(np.ones(8, np.float32))
    with pytest.raises(TypeError, match="refs: expected float32"):
        KnnScreen.of(np.ones((3, 8), np.int64))
    with pytest.raises(ValueError, match="dim: expected a positive int"):
        KnnScreen(0)
    with pytest.raises(ValueError, match="fewer than the 10 already screened"):
        KnnScreen.of(np.ones((10, 8), np.float32)).extended(np.ones((4, 8), np.float32))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 150),
    dim=st.integers(1, 70),
    q=st.integers(1, 6),
    exponent=st.integers(-20, 20),
    integers=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_screened_equals_plain_on_random_problems(
    n, dim, q, exponent, integers, dtype, seed, data
) -> None:
    rng = np.random.default_rng(seed)
    if dtype == torch.float16:
        exponent = min(exponent, 10)  # float16 tops out at 65504
    if integers:  # exact products, many ties
        refs = rng.integers(-3, 4, (n, dim)).astype(np.float32)
        queries = rng.integers(-3, 4, (q, dim)).astype(np.float32)
    else:
        refs = rng.standard_normal((n, dim)).astype(np.float32)
        queries = rng.standard_normal((q, dim)).astype(np.float32)
    refs = torch.from_numpy(refs * np.float32(2.0**exponent)).to(dtype)
    k = data.draw(st.integers(1, n))
    screen = KnnScreen.of(refs)
    for isa in ISAS:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PYINSTANCE_ISA", isa)
            assert_same(queries, refs, k, screen)
