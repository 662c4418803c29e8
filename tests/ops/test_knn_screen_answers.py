"""KnnScreen's arrays, file and checks against expectations computed here (float64 numpy).

The kernel's exactness rests on the screen's stored bounds (codes, scales, norms no
smaller than the rows' norms, slacks no smaller than the quantisation error plus the
rounding term of the module's docstring); these tests recompute each from the rows.
"""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch

from pyinstance.ops import knn_dot
from pyinstance.ops.knn_screen import KnnScreen, ScreenFileError

UNIT = 2.0**-24


def rows_of(seed: int, rows: int, dim: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, dim)) * scale).astype(np.float32)


def expected(rows: np.ndarray):
    """Codes, scales, exact norms and exact slacks of ``rows`` (float64 arithmetic)."""
    largest = np.abs(rows).max(axis=1)
    scales = (largest / np.float32(127)).astype(np.float32)
    codes = np.zeros(rows.shape, np.int64)
    nonzero = scales > 0
    codes[nonzero] = np.clip(
        np.rint(rows[nonzero].astype(np.float64) / scales[nonzero, None].astype(np.float64)),
        -127,
        127,
    )
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    residual = rows.astype(np.float64) - scales.astype(np.float64)[:, None] * codes
    slacks = np.linalg.norm(residual, axis=1) + 16 * UNIT * scales * np.linalg.norm(
        codes.astype(np.float64), axis=1
    )
    return codes, scales, norms, slacks


def check_bound(stored: np.ndarray, exact: np.ndarray) -> None:
    """Stored float32 bounds are no smaller than the exact values, and tight (rounded up
    with a 1e-6 relative margin and one float32 ulp)."""
    stored = stored.astype(np.float64)
    assert (stored >= exact).all()
    assert (stored <= exact * (1 + 1e-6) * (1 + 2.0**-22) + 1e-44).all()
    assert (stored >= exact * (1 + 0.5e-6)).all()


def test_the_arrays_hold_each_rows_codes_scales_sums_and_bounds() -> None:
    refs = rows_of(1, 70, 37, scale=3.0)
    refs[4] = 0.0  # a zero row: scale 0, codes 0, bounds 0
    refs[5, 2] = -50.0  # the largest magnitude negative
    screen = KnnScreen.of(refs)
    codes, scales, slacks, norms, sums = screen.arrays()
    want_codes, want_scales, want_norms, want_slacks = expected(refs)
    assert (screen.rows, screen.dim, screen.stride) == (70, 37, 64)
    assert codes.dtype == np.int8 and codes.shape[1] == 64
    np.testing.assert_array_equal(codes[:70, :37], want_codes)
    assert not codes[:, 37:].any() and not codes[70:].any()
    np.testing.assert_array_equal(scales[:70], want_scales)
    assert codes[5, 2] == -127 and scales[5] == np.float32(50.0 / 127)
    np.testing.assert_array_equal(sums[:70], want_codes.sum(axis=1))
    check_bound(norms[:70][np.arange(70) != 4], want_norms[np.arange(70) != 4])
    check_bound(slacks[:70][np.arange(70) != 4], want_slacks[np.arange(70) != 4])
    assert norms[4] > 0 and norms[4] < 1e-44 and slacks[4] < 1e-44  # one ulp above 0
    assert screen.max_norm == float(norms[:70].max())
    for array in (scales, slacks, norms):
        assert array.dtype == np.float32
    assert sums.dtype == np.int32


def test_float16_and_bfloat16_rows_are_screened_as_their_float32_values() -> None:
    refs = torch.from_numpy(rows_of(2, 20, 9))
    for dtype in (torch.float16, torch.bfloat16):
        narrow = refs.to(dtype)
        screen = KnnScreen.of(narrow)
        want_codes, want_scales, _, _ = expected(narrow.float().numpy())
        np.testing.assert_array_equal(screen.arrays()[0][:20, :9], want_codes)
        np.testing.assert_array_equal(screen.arrays()[1][:20], want_scales)


def test_the_stride_is_the_dimension_rounded_up_to_64() -> None:
    for dim, stride in ((1, 64), (64, 64), (65, 128), (128, 128), (200, 256)):
        assert KnnScreen(dim).stride == stride
        assert KnnScreen(dim).arrays()[0].shape == (0, stride)
    assert KnnScreen(np.int64(3)).dim == 3
    assert KnnScreen(3, max_queries=np.int32(0)).max_queries == 0


def test_the_arrays_grow_in_64_row_steps_by_half_and_keep_every_row() -> None:
    full = rows_of(3, 400, 8)
    screen = KnnScreen.of(full[:1])
    assert len(screen.arrays()[1]) == 64
    capacities = [64]
    for rows in (64, 65, 97, 130, 300, 400):
        screen = screen.extended(full[:rows])
        capacities.append(len(screen.arrays()[1]))
        want = KnnScreen.of(full[:rows]).arrays()
        for mine, theirs in zip(screen.arrays(), want, strict=True):
            np.testing.assert_array_equal(mine[:rows], theirs[:rows])
            assert len(mine) == capacities[-1]
    # 64 fits 64; 65 needs 128 (more than 64 * 3 / 2 = 96, rounded up: 128); 97 fits; 130
    # needs 192 (128 * 3 / 2); 300 needs 320 (more than 288); 400 needs 448 but gets 512
    # (320 * 3 / 2 = 480, rounded up to 64 rows).
    assert capacities == [64, 64, 128, 128, 192, 320, 512]
    assert KnnScreen(8).extended(full[:0]).rows == 0


def test_extending_quantises_only_the_new_rows_and_keeps_the_old_screen() -> None:
    full = rows_of(4, 150, 16)
    first = KnnScreen.of(full[:100])
    before = [a.copy() for a in first.arrays()]
    changed = full.copy()
    changed[:100] = 0.0  # the screened rows are not read again
    grown = first.extended(changed)
    assert grown.rows == 150 and first.rows == 100
    np.testing.assert_array_equal(grown.arrays()[1][:100], before[1][:100])
    np.testing.assert_array_equal(grown.arrays()[1][100:150], expected(full[100:])[1])
    for mine, old in zip(first.arrays(), before, strict=True):
        np.testing.assert_array_equal(mine, old)
    assert grown.max_norm == max(first.max_norm, float(grown.arrays()[3][100:150].max()))
    assert first.max_norm == float(before[3][:100].max())


def test_a_prefix_shares_the_arrays_and_keeps_the_settings() -> None:
    refs = rows_of(5, 50, 12)
    screen = KnnScreen(12, max_queries=7).extended(refs)
    head = screen.prefix(np.int64(20))
    assert type(head.rows) is int and head.rows == 20 and screen.rows == 50
    assert (head.dim, head.stride, head.max_queries) == (12, 64, 7)
    assert head.max_norm == screen.max_norm
    for mine, theirs in zip(head.arrays(), screen.arrays(), strict=True):
        assert mine is theirs
    assert screen.prefix(0).rows == 0 and screen.prefix(50).rows == 50
    with pytest.raises(TypeError, match="rows: expected an int, got bool"):
        screen.prefix(True)
    with pytest.raises(TypeError, match="rows: expected an int, got float"):
        screen.prefix(3.0)
    with pytest.raises(ValueError, match=r"rows: expected 0 <= rows <= 50, got -1"):
        screen.prefix(-1)


def test_the_constructor_refuses_each_bad_argument_by_name() -> None:
    with pytest.raises(ValueError, match=r"dim: expected a positive int, got True"):
        KnnScreen(True)
    with pytest.raises(ValueError, match=r"dim: expected a positive int, got 2\.0"):
        KnnScreen(2.0)
    with pytest.raises(ValueError, match=r"dim: expected a positive int, got -1"):
        KnnScreen(-1)
    with pytest.raises(TypeError, match="max_queries: expected an int, got bool"):
        KnnScreen(2, max_queries=False)
    assert KnnScreen(1).dim == 1 and KnnScreen(1, max_queries=0).max_queries == 0
    screen = KnnScreen(3)
    assert (screen.rows, screen.max_norm, screen.max_queries) == (0, 0.0, 48)


def test_references_of_another_dimension_are_refused() -> None:
    screen = KnnScreen.of(rows_of(6, 10, 8))
    with pytest.raises(ValueError, match="refs: expected D=8 columns, got 9"):
        screen.extended(rows_of(6, 12, 9))
    with pytest.raises(ValueError, match=r"refs: 4 rows, fewer than the 10 already screened"):
        screen.extended(rows_of(6, 4, 8))
    assert screen.extended(rows_of(6, 10, 8)).rows == 10


def test_references_of_every_kind_are_checked() -> None:
    with pytest.raises(
        ValueError, match=r"refs: expected a 2-D \(N x D\) array, got shape \(2, 3, 4\)"
    ):
        KnnScreen.of(np.ones((2, 3, 4), np.float32))
    with pytest.raises(
        TypeError, match="refs: expected float32, float16 or bfloat16, got torch.float64"
    ):
        KnnScreen.of(np.ones((2, 3)))
    with pytest.raises(ValueError, match="refs: contains NaN or infinite values"):
        KnnScreen.of(np.array([[1.0, np.inf]], np.float32))
    with pytest.raises(TypeError, match="^refs: expected a numpy array"):
        KnnScreen.of("rows")
    needs_grad = torch.ones(2, 3, requires_grad=True)
    assert KnnScreen.of(needs_grad).rows == 2  # detached, no error


def test_float32_numpy_references_are_read_without_a_copy() -> None:
    from pyinstance.ops.knn_screen import _float_rows

    refs = rows_of(7, 4, 3)
    assert _float_rows(refs) is refs
    tensor = torch.from_numpy(refs)
    assert np.shares_memory(_float_rows(tensor), refs)
    assert _float_rows(torch.from_numpy(refs).half()).dtype == np.float32


def test_matches_compares_shape_and_the_first_and_last_rows() -> None:
    refs = rows_of(8, 30, 10)
    screen = KnnScreen.of(refs)
    tensor = torch.from_numpy(refs)
    assert screen.matches(tensor)
    assert not screen.matches(tensor[:29]) and not screen.matches(tensor[:, :9])
    for row in (0, 29):
        other = tensor.clone()
        other[row, 3] += 1.0
        assert not screen.matches(other)
    scaled = tensor.clone()
    scaled[29] *= 2  # the same codes, another scale
    assert not screen.matches(scaled)
    middle = tensor.clone()
    middle[15] = 0.0  # not spot-checked
    assert screen.matches(middle)
    assert KnnScreen.of(tensor.to(torch.bfloat16)).matches(tensor.to(torch.bfloat16))


def _header(path) -> tuple:
    return struct.unpack("<8sQQQI", path.read_bytes()[:36])


def test_the_file_layout_is_the_documented_one(tmp_path) -> None:
    refs = rows_of(9, 5, 70)
    screen = KnnScreen.of(refs)
    screen.save(str(tmp_path / "s.bin"))
    data = (tmp_path / "s.bin").read_bytes()
    magic, dim, stride, rows, crc = _header(tmp_path / "s.bin")
    assert (magic, dim, stride, rows) == (b"PYISCRN1", 70, 128, 5)
    assert len(data) == 36 + 5 * (128 + 16)
    assert crc == zlib.crc32(data[8:32] + data[36:])
    codes, scales, slacks, norms, sums = screen.arrays()
    body = data[36:]
    assert body[: 5 * 128] == codes[:5].tobytes()
    offset = 5 * 128
    for array in (scales, slacks, norms, sums):
        assert (
            body[offset : offset + 20] == array[:5].astype(array.dtype.newbyteorder("<")).tobytes()
        )
        offset += 20
    assert [p.name for p in tmp_path.iterdir()] == ["s.bin"]


def test_a_save_over_an_existing_file_replaces_it_and_a_failed_one_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "s.bin"
    KnnScreen.of(rows_of(10, 5, 4)).save(path)
    refs = rows_of(11, 9, 4)
    KnnScreen.of(refs).save(path)
    assert KnnScreen.load(path, refs).rows == 9
    with pytest.raises(OSError):
        KnnScreen.of(refs).save(tmp_path / "absent" / "s.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.bin"]


def test_a_loaded_screen_equals_the_built_one_and_serves_knn_dot(tmp_path) -> None:
    refs = rows_of(12, 300, 20)
    built = KnnScreen.of(refs)
    built.save(tmp_path / "s.bin")
    loaded = KnnScreen.load(str(tmp_path / "s.bin"), torch.from_numpy(refs))
    assert (loaded.rows, loaded.dim, loaded.stride) == (300, 20, 64)
    assert type(loaded.rows) is int
    assert loaded.max_norm == built.max_norm
    for mine, theirs in zip(loaded.arrays(), built.arrays(), strict=True):
        np.testing.assert_array_equal(mine[:300], theirs[:300])
        assert not mine[300:].any()
    queries = rows_of(13, 2, 20)
    want = knn_dot(queries, refs, 4)
    got = knn_dot(queries, refs, 4, screen=loaded)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def _rewrite(path, **fields) -> None:
    """Rewrite header fields of the file at ``path`` and fix its checksum."""
    data = bytearray(path.read_bytes())
    magic, dim, stride, rows, _ = struct.unpack("<8sQQQI", data[:36])
    values = {"magic": magic, "dim": dim, "stride": stride, "rows": rows} | fields
    head = struct.pack("<8sQQQ", values["magic"], values["dim"], values["stride"], values["rows"])
    body = bytes(data[36:])
    crc = zlib.crc32(head[8:] + body)
    path.write_bytes(head + struct.pack("<I", crc) + body)


def test_a_file_whose_header_disagrees_is_refused_by_reason(tmp_path) -> None:
    refs = rows_of(14, 10, 8)
    path = tmp_path / "s.bin"
    KnnScreen.of(refs).save(path)
    _rewrite(path, stride=128)
    with pytest.raises(ScreenFileError, match="made for D=8, not these refs' D=8"):
        KnnScreen.load(path, refs)
    KnnScreen.of(refs).save(path)
    _rewrite(path, rows=0)
    with pytest.raises(ScreenFileError, match="covers 0 rows, refs hold 10"):
        KnnScreen.load(path, refs)
    KnnScreen.of(refs).save(path)
    _rewrite(path, rows=9)
    with pytest.raises(ScreenFileError, match="wrong size"):
        KnnScreen.load(path, refs)
    KnnScreen.of(refs).save(path)
    assert KnnScreen.load(path, refs).rows == 10  # exactly as many rows as refs: accepted
    (tmp_path / "short.bin").write_bytes(b"PYISCRN1")
    with pytest.raises(ScreenFileError, match="short.bin': truncated header"):
        KnnScreen.load(tmp_path / "short.bin", refs)


def test_a_file_with_a_bad_checksum_is_refused_though_its_rows_agree(tmp_path) -> None:
    refs = rows_of(15, 10, 8)
    path = tmp_path / "s.bin"
    KnnScreen.of(refs).save(path)
    data = bytearray(path.read_bytes())
    data[32] ^= 0x01  # the stored CRC only
    path.write_bytes(bytes(data))
    with pytest.raises(ScreenFileError, match="checksum mismatch"):
        KnnScreen.load(path, refs)
    KnnScreen.of(refs).save(path)
    data = bytearray(path.read_bytes())
    data[8] ^= 0x40  # dim 8 -> 72 (same stride): refused by the dimension first
    path.write_bytes(bytes(data))
    with pytest.raises(ScreenFileError, match="made for D=72"):
        KnnScreen.load(path, refs)


def _saved_with(path, refs, edit) -> None:
    """Save ``refs``' screen with one array edited (``edit(arrays)``), checksum fixed."""
    screen = KnnScreen.of(refs)
    edit(screen.arrays())
    screen.save(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda a: a[0].__setitem__((0, 0), 0 if a[0][0, 0] else 1),  # a code of the first row
        lambda a: a[0].__setitem__((9, 8), 1),  # padding past D
        lambda a: a[1].__setitem__(9, a[1][9] * 2),  # a scale
        lambda a: a[4].__setitem__(0, a[4][0] + 1),  # a code sum
        lambda a: a[2].__setitem__(9, a[2][9] / 2),  # a slack below the bound
        lambda a: a[3].__setitem__(0, a[3][0] / 2),  # a norm below the bound
    ],
)
def test_a_file_whose_probed_rows_disagree_is_refused_as_stale(tmp_path, edit) -> None:
    refs = rows_of(16, 10, 8, scale=5.0)
    path = tmp_path / "s.bin"
    _saved_with(path, refs, edit)
    with pytest.raises(ScreenFileError, match="made from other references"):
        KnnScreen.load(path, refs)


def test_larger_stored_bounds_are_accepted(tmp_path) -> None:
    refs = rows_of(17, 10, 8)
    path = tmp_path / "s.bin"
    _saved_with(path, refs, lambda a: (a[2].__imul__(2), a[3].__imul__(2)))
    loaded = KnnScreen.load(path, refs)
    assert loaded.max_norm == pytest.approx(2 * float(np.linalg.norm(refs, axis=1).max()), rel=1e-5)


def test_probes_reach_the_last_row_and_at_most_256_rows(tmp_path) -> None:
    refs = rows_of(18, 600, 4)
    path = tmp_path / "s.bin"
    KnnScreen.of(refs).save(path)
    changed = refs.copy()
    changed[599] *= 3  # the last row is always probed
    with pytest.raises(ScreenFileError, match="made from other references"):
        KnnScreen.load(path, changed)
    unprobed = refs.copy()
    unprobed[1] *= 3  # 256 evenly spaced of 600 rows: 0, 2, 4, ... (1 is not probed)
    assert KnnScreen.load(path, unprobed).rows == 600
    probed = refs.copy()
    probed[2] *= 3
    with pytest.raises(ScreenFileError, match="made from other references"):
        KnnScreen.load(path, probed)


def test_a_screen_of_one_row_saves_and_loads(tmp_path) -> None:
    refs = rows_of(19, 1, 5)
    KnnScreen.of(refs).save(tmp_path / "s.bin")
    loaded = KnnScreen.load(tmp_path / "s.bin", refs)
    assert loaded.rows == 1
    np.testing.assert_array_equal(loaded.arrays()[0][0, :5], expected(refs)[0][0])


def test_max_norm_is_the_largest_stored_norm_also_below_one() -> None:
    refs = rows_of(20, 30, 6, scale=1e-3)
    screen = KnnScreen.of(refs)
    largest = float(np.linalg.norm(refs.astype(np.float64), axis=1).max())
    assert screen.max_norm == float(screen.arrays()[3][:30].max())
    assert largest <= screen.max_norm <= largest * (1 + 2e-6) < 0.1


def test_a_screen_of_no_rows_holds_empty_arrays_of_the_kernels_dtypes() -> None:
    codes, scales, slacks, norms, sums = KnnScreen(5).arrays()
    assert codes.shape == (0, 64) and codes.dtype == np.int8
    for array, dtype in ((scales, np.float32), (slacks, np.float32), (norms, np.float32)):
        assert array.shape == (0,) and array.dtype == dtype
    assert sums.shape == (0,) and sums.dtype == np.int32


def test_norms_bound_rows_whose_float32_sum_of_squares_loses_the_small_terms() -> None:
    # 16 entries of 1 then 4080 of 2^-13: a float32 sum of squares drops every 2^-26 added to
    # a running sum of at least 1, short of the exact norm by about 1.9e-6 relative (more
    # than the 1e-6 margin): the norms are summed in float64.
    row = np.full((1, 4096), 2.0**-13, np.float32)
    row[0, :16] = 1.0
    exact = np.sqrt(16 + 4080 * 2.0**-26)
    check_bound(KnnScreen.of(row).arrays()[3][:1], np.array([exact]))


def test_rows_too_small_for_a_finite_inverse_scale_quantise_silently() -> None:
    # max|r| below 127 * 2^-128: 1 / s overflows float32. By hand: 2^-142 / 127 rounds to the
    # smallest subnormal 2^-149, so 2^-142 / s = 128 clips to 127; 2^-149 / 127 rounds to a
    # scale of 0 (codes 0); 1e-40 is 127 s (its zero stays 0).
    tiny = np.array(
        [[2.0**-142, -(2.0**-142)], [2.0**-149, 0.0], [1e-40, 0.0], [1e-40, 5e-41], [3.0, -1.0]],
        np.float32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow, invalid or divide warning reaches here
        screen = KnnScreen.of(tiny)
    codes, scales, slacks, norms, sums = screen.arrays()
    np.testing.assert_array_equal(codes[:3, :2], [[127, -127], [0, 0], [127, 0]])
    np.testing.assert_array_equal(codes[4, :2], [127, -42])
    np.testing.assert_array_equal(scales[:2], np.array([2.0**-149, 0.0], np.float32))
    np.testing.assert_array_equal(sums[:3], [0, 0, 127])
    # Whatever the codes of the fourth row, the stored bounds hold for the stored codes.
    check_bound(norms[:5], np.linalg.norm(tiny.astype(np.float64), axis=1))
    residual = tiny - scales[:5, None].astype(np.float64) * codes[:5, :2]
    rounding = 16 * UNIT * scales[:5] * np.linalg.norm(codes[:5, :2].astype(np.float64), axis=1)
    check_bound(slacks[:5], np.linalg.norm(residual, axis=1) + rounding)


def test_rows_are_quantised_once_in_chunks_of_at_most_4096(monkeypatch) -> None:
    calls = []
    quantise = KnnScreen._quantise

    def spy(self, rows, start):
        calls.append((start, rows.shape[0]))
        assert len(calls) <= 3 and rows.shape[0] <= 4096  # stop a runaway loop early
        quantise(self, rows, start)

    monkeypatch.setattr(KnnScreen, "_quantise", spy)
    refs = rows_of(21, 8300, 1)
    screen = KnnScreen.of(refs[:4100])
    assert calls == [(0, 4096), (4096, 4)]
    calls.clear()
    grown = screen.extended(refs)
    assert calls == [(4100, 4096), (8196, 104)]
    np.testing.assert_array_equal(grown.arrays()[1][:8300], expected(refs)[1])
