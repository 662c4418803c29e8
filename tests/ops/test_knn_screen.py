"""knn_dot(..., screen=KnnScreen): the same results as knn_dot, bit for bit, on every ISA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyinstance.ops import KnnScreen, knn_dot
from pyinstance.ops.knn_screen import ScreenFileError

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
    screen.max_queries = q  # screened however many queries
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


def test_more_queries_than_max_queries_scan_plainly(screened_calls: list[int]) -> None:
    rng = np.random.default_rng(4)
    refs = unit_rows(rng, 300, 40)
    screen = KnnScreen.of(refs)
    limit = screen.max_queries
    for q in (1, limit, limit + 1):
        assert_same(unit_rows(rng, q, 40), refs, 5, screen)
    assert screened_calls == [1, limit]
    with pytest.raises(ValueError, match="max_queries: expected an int >= 0"):
        KnnScreen(4, max_queries=-1)
    with pytest.raises(TypeError, match="max_queries: expected an int"):
        KnnScreen(4, max_queries=2.0)


def test_saved_screen_loads_equal_and_extends(tmp_path) -> None:
    rng = np.random.default_rng(5)
    full = unit_rows(rng, 700, 70)
    screen = KnnScreen.of(full[:500])
    screen.save(tmp_path / "s.bin")
    assert [p.name for p in tmp_path.iterdir()] == ["s.bin"]  # no temporary left
    loaded = KnnScreen.load(tmp_path / "s.bin", full[:500])
    for mine, theirs in zip(loaded.arrays(), screen.arrays(), strict=True):
        np.testing.assert_array_equal(mine[:500], theirs[:500])
    assert (loaded.rows, loaded.max_norm) == (screen.rows, screen.max_norm)
    queries = unit_rows(rng, 3, 70)
    assert_same(queries, full[:500], 6, loaded)
    grown = KnnScreen.load(tmp_path / "s.bin", full)  # the refs grew by appends
    assert grown.rows == 500
    assert_same(queries, full, 6, grown.extended(full))
    half = torch.from_numpy(full[:500]).to(torch.float16)
    KnnScreen.of(half).save(tmp_path / "h.bin")
    assert_same(queries, half, 6, KnnScreen.load(tmp_path / "h.bin", half))


def _flip(offset_from_end: int):
    def damage(data: bytearray) -> bytearray:
        data[len(data) - offset_from_end] ^= 0x01
        return data

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d[:20], "truncated header"),
        (lambda d: b"NOTSCRN1" + d[8:], "not a screen file"),
        (lambda d: d[:-1], "wrong size"),
        (lambda d: d + b"x", "wrong size"),
        (_flip(9000), "checksum"),  # codes
        (_flip(3 * 4 * 200 + 8), "checksum"),  # scales
        (_flip(2 * 4 * 200 + 8), "checksum"),  # slacks
        (_flip(4 * 200 + 8), "checksum"),  # norms
        (_flip(8), "checksum"),  # code sums
    ],
)
def test_damaged_screen_file_is_refused(tmp_path, damage, message) -> None:
    refs = unit_rows(np.random.default_rng(6), 200, 64)
    KnnScreen.of(refs).save(tmp_path / "s.bin")
    path = tmp_path / "s.bin"
    path.write_bytes(bytes(damage(bytearray(path.read_bytes()))))
    with pytest.raises(ScreenFileError, match=message):
        KnnScreen.load(path, refs)


def test_screen_file_of_other_references_is_refused(tmp_path) -> None:
    rng = np.random.default_rng(7)
    refs = unit_rows(rng, 200, 64)
    KnnScreen.of(refs).save(tmp_path / "s.bin")
    other = refs.copy()
    other[-1] = unit_rows(rng, 1, 64)[0]  # the last row (always probed) differs
    with pytest.raises(ScreenFileError, match="made from other references"):
        KnnScreen.load(tmp_path / "s.bin", other)
    with pytest.raises(ScreenFileError, match="made for D=64"):
        KnnScreen.load(tmp_path / "s.bin", unit_rows(rng, 200, 65))
    with pytest.raises(ScreenFileError, match="covers 200 rows, refs hold 150"):
        KnnScreen.load(tmp_path / "s.bin", refs[:150])
    with pytest.raises(FileNotFoundError):
        KnnScreen.load(tmp_path / "absent.bin", refs)
