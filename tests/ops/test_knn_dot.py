"""pyinstance.ops.knn_dot against the float64 reference, on every ISA variant and device."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pyinstance
from pyinstance.ops import knn_dot
from pyinstance.ops._arrays import to_tensor
from pyinstance.ops._reference import knn_dot_reference

REF_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ISAS = ["generic", "avx2", "avx512"]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _cuda_available() -> bool:
    return pyinstance.HAS_CUDA and torch.cuda.is_available()


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device (or pyinstance built without CUDA)")
    return request.param


@pytest.fixture(params=ISAS)
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Caps the CPU kernel at each ISA variant (read by the kernel at every call)."""
    monkeypatch.setenv("PYINSTANCE_ISA", request.param)
    return request.param


def integer_data(
    shape: tuple[int, ...], dtype: torch.dtype, seed: int, low: int = -3
) -> torch.Tensor:
    """Small integers: every dot product is exact in float32 and float64, with many ties."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, 4, shape, generator=g).to(dtype)


def assert_exact(queries, refs, k, scores, indices, exclude=None) -> None:
    """Same indices and scores as the float64 reference (inputs with exact dot products)."""
    q = torch.as_tensor(queries).cpu()
    r = torch.as_tensor(refs).cpu()
    excl = None if exclude is None else torch.as_tensor(exclude).cpu()
    want_scores, want_indices = knn_dot_reference(q, r, k, excl)
    got_scores = torch.as_tensor(scores).cpu()
    got_indices = torch.as_tensor(indices).cpu()
    assert got_scores.dtype == torch.float32 and got_indices.dtype == torch.int64
    assert torch.equal(got_indices, want_indices)
    assert torch.equal(got_scores.double(), want_scores)


def assert_close_to_reference(queries, refs, k, scores, indices, exclude=None) -> None:
    """Exact up to float32 rounding: the neighbours' true scores match the reference's."""
    q = torch.as_tensor(queries).cpu().double()
    r = torch.as_tensor(refs).cpu().double()
    got_scores = torch.as_tensor(scores).cpu().double()
    got_indices = torch.as_tensor(indices).cpu()
    excl = None if exclude is None else torch.as_tensor(exclude).cpu()
    want_scores, want_indices = knn_dot_reference(q, r, k, excl)
    # float32 accumulation error bound for the dot products involved.
    tol = 1e-5 * float((q.abs() @ r.abs().T).max()) + 1e-30
    true_scores = torch.gather(q @ r.T, 1, got_indices)
    assert (got_indices >= 0).all() and (got_indices < r.shape[0]).all()
    for row in got_indices:
        assert len(set(row.tolist())) == k
    if excl is not None:
        assert not (got_indices == excl[:, None]).any()
    assert torch.allclose(got_scores, true_scores, rtol=0, atol=tol)
    assert torch.allclose(true_scores, want_scores, rtol=0, atol=2 * tol)
    assert (got_scores[:, 1:] <= got_scores[:, :-1]).all()
    # Where the reference's scores are well separated, the indices must agree exactly.
    gaps = torch.cat(
        [want_scores[:, :-1] - want_scores[:, 1:], torch.full_like(want_scores[:, :1], torch.inf)],
        dim=1,
    )
    separated = (gaps > 4 * tol) & torch.cat(
        [torch.ones_like(gaps[:, :1], dtype=bool), gaps[:, :-1] > 4 * tol], dim=1
    )
    assert torch.equal(got_indices[separated], want_indices[separated])


# --- exactness -------------------------------------------------------------------------------


@pytest.mark.parametrize("ref_dtype", REF_DTYPES)
@pytest.mark.parametrize("n_queries", [1, 2, 3, 7, 12, 33, 130])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_with_ties_every_isa(isa, ref_dtype, n_queries, threads):
    # Integer data: dot products are exact, so ties are real and must go to the smaller index.
    queries = integer_data((n_queries, 37), torch.float32, seed=n_queries)
    refs = integer_data((517, 37), ref_dtype, seed=1000 + n_queries)
    scores, indices = knn_dot(queries, refs, 12, threads=threads)
    assert_exact(queries, refs.float(), 12, scores, indices)


@pytest.mark.parametrize("ref_dtype", REF_DTYPES)
@pytest.mark.parametrize("dim", [1, 16, 100, 256])
def test_random_descriptors_every_isa(isa, ref_dtype, dim):
    g = torch.Generator().manual_seed(dim)
    queries = torch.nn.functional.normalize(torch.randn(70, dim, generator=g), dim=1)
    refs = torch.nn.functional.normalize(torch.randn(1500, dim, generator=g), dim=1).to(ref_dtype)
    for threads, q in ((2, queries[:5]), (1, queries)):  # reference split, then query split
        scores, indices = knn_dot(q, refs, 10, threads=threads)
        assert_close_to_reference(q, refs.float(), 10, scores, indices)


@settings(max_examples=60, deadline=None)
@given(
    n_queries=st.integers(0, 80),
    n_refs=st.integers(1, 300),
    dim=st.integers(1, 70),
    data=st.data(),
    ref_dtype=st.sampled_from(REF_DTYPES),
    threads=st.sampled_from([1, 2, 3]),
    isa=st.sampled_from(ISAS),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_exact(n_queries, n_refs, dim, data, ref_dtype, threads, isa, seed):
    k = data.draw(st.integers(1, n_refs), label="k")
    queries = integer_data((n_queries, dim), torch.float32, seed)
    refs = integer_data((n_refs, dim), ref_dtype, seed + 1)
    exclude = None
    if n_refs > 1 and k < n_refs and data.draw(st.booleans(), label="use_exclude"):
        exclude = torch.tensor(
            data.draw(
                st.lists(st.integers(-1, n_refs - 1), min_size=n_queries, max_size=n_queries)
            ),
            dtype=torch.int64,
        )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYINSTANCE_ISA", isa)
        scores, indices = knn_dot(queries, refs, k, exclude=exclude, threads=threads)
    assert scores.shape == indices.shape == (n_queries, k)
    assert_exact(queries, refs.float(), k, scores, indices, exclude)


def test_duplicate_references_break_ties_by_index(device):
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.normalize(torch.randn(50, 64, generator=g), dim=1)
    refs = base.repeat(4, 1)  # rows i, i+50, i+100, i+150 are identical
    queries = base[:20].clone()
    for threads, q in ((2, queries[:3]), (1, queries)):
        scores, indices = knn_dot(q.to(device), refs.to(device), 6, threads=threads)
        first = indices[:, :4].cpu()
        expected = torch.arange(q.shape[0])[:, None] + torch.tensor([0, 50, 100, 150])
        assert torch.equal(first, expected)
        assert torch.equal(scores[:, :4].cpu(), scores[:, :1].cpu().expand(-1, 4))


def test_k_equals_n_returns_every_reference_sorted(device):
    queries = integer_data((5, 9), torch.float32, 5)
    refs = integer_data((40, 9), torch.float32, 6)
    scores, indices = knn_dot(queries.to(device), refs.to(device), 40)
    assert_exact(queries, refs, 40, scores, indices)
    assert torch.equal(indices.cpu().sort(dim=1).values, torch.arange(40).expand(5, -1))


def test_large_k_many_queries(isa):
    queries = integer_data((300, 20), torch.float32, 7)
    refs = integer_data((2000, 20), torch.bfloat16, 8)
    scores, indices = knn_dot(queries, refs, 700, threads=2)
    assert_exact(queries, refs.float(), 700, scores, indices)


@pytest.mark.parametrize("scale", [2.0**60, 2.0**-60])
@pytest.mark.parametrize("ref_dtype", [torch.float32, torch.bfloat16])
def test_huge_and_tiny_magnitudes(isa, scale, ref_dtype):
    # Powers of two keep the integer products exact at any magnitude float32 can hold.
    queries = integer_data((40, 24), torch.float32, 9) * scale
    refs = integer_data((300, 24), torch.float32, 10) * scale
    refs = refs.to(ref_dtype)
    for threads, q in ((2, queries[:4]), (1, queries)):
        scores, indices = knn_dot(q, refs, 8, threads=threads)
        assert_exact(q, refs.float(), 8, scores, indices)


def test_overflowing_products_come_back_as_inf():
    queries = torch.full((2, 4), 1e30)
    refs = torch.tensor([[1e30] * 4, [-1e30] * 4, [1.0] * 4])
    scores, indices = knn_dot(queries, refs, 3)
    assert torch.equal(indices, torch.tensor([[0, 2, 1]] * 2))
    assert scores[0, 0] == torch.inf and scores[0, 2] == -torch.inf


# --- exclude ---------------------------------------------------------------------------------


def test_exclude_self(device, isa):
    g = torch.Generator().manual_seed(11)
    refs = torch.nn.functional.normalize(torch.randn(400, 32, generator=g), dim=1)
    exclude = torch.arange(400)
    exclude[::7] = -1  # some queries keep themselves
    for threads in (1, 2):
        scores, indices = knn_dot(
            refs.to(device), refs.to(device), 5, exclude=exclude.to(device), threads=threads
        )
        assert_close_to_reference(refs, refs, 5, scores, indices, exclude)
        kept = torch.nonzero(exclude < 0).flatten()
        assert torch.equal(indices.cpu()[kept, 0], kept)
        dropped = torch.nonzero(exclude >= 0).flatten()
        assert not (indices.cpu()[dropped] == dropped[:, None]).any()


def test_exclude_with_k_equal_n_minus_one():
    refs = integer_data((30, 6), torch.float32, 12)
    exclude = torch.arange(30)
    scores, indices = knn_dot(refs, refs, 29, exclude=exclude)
    assert_exact(refs, refs, 29, scores, indices, exclude)
    # k = N is fine when nothing is excluded.
    knn_dot(refs, refs, 30, exclude=torch.full((30,), -1))


# --- input kinds, layouts, threads -----------------------------------------------------------


def test_numpy_in_numpy_out():
    queries = integer_data((6, 10), torch.float32, 13).numpy()
    refs = integer_data((50, 10), torch.float16, 14).numpy()
    scores, indices = knn_dot(queries, refs, 4)
    assert isinstance(scores, np.ndarray) and isinstance(indices, np.ndarray)
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert_exact(torch.from_numpy(queries), torch.from_numpy(refs).float(), 4, scores, indices)


def test_torch_in_torch_out_on_device(device):
    queries = integer_data((6, 10), torch.float32, 15).to(device)
    refs = integer_data((50, 10), torch.float32, 16).to(device)
    scores, indices = knn_dot(queries, refs, 4)
    assert isinstance(scores, torch.Tensor) and scores.device == queries.device
    assert indices.device == queries.device


def test_cupy_in_cupy_out():
    cupy = pytest.importorskip("cupy")
    if not _cuda_available():
        pytest.skip("no CUDA device")
    queries = cupy.asarray(integer_data((6, 10), torch.float32, 17).numpy())
    refs = cupy.asarray(integer_data((50, 10), torch.float32, 18).numpy())
    scores, indices = knn_dot(queries, refs, 4)
    assert isinstance(scores, cupy.ndarray) and isinstance(indices, cupy.ndarray)
    assert_exact(
        cupy.asnumpy(queries), cupy.asnumpy(refs), 4, cupy.asnumpy(scores), cupy.asnumpy(indices)
    )


def test_requires_grad_inputs_are_accepted():
    queries = integer_data((3, 5), torch.float32, 19).requires_grad_()
    refs = integer_data((20, 5), torch.float32, 20)
    scores, indices = knn_dot(queries, refs, 3)
    assert_exact(queries.detach(), refs, 3, scores, indices)


@pytest.mark.parametrize("ref_dtype", REF_DTYPES)
def test_non_contiguous_inputs(device, ref_dtype):
    queries = integer_data((30, 24), torch.float32, 21).to(device)
    refs = integer_data((24, 200), ref_dtype, 22).to(device)
    q_view = queries[::2]  # strided rows
    r_view = refs.T  # N x D, column-major
    scores, indices = knn_dot(q_view, r_view, 7)
    expected = knn_dot(q_view.contiguous(), r_view.contiguous(), 7)
    assert torch.equal(indices, expected[1]) and torch.equal(scores, expected[0])
    assert_exact(q_view.cpu(), r_view.float().cpu(), 7, scores, indices)


def test_memmap_refs_are_streamed_not_copied(tmp_path):
    refs = integer_data((3000, 48), torch.float16, 23).numpy()
    path = tmp_path / "refs.f16"
    writer = np.memmap(path, dtype=np.float16, mode="w+", shape=refs.shape)
    writer[:] = refs
    writer.flush()
    del writer
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=refs.shape)
    # The array layer views the mapping in place: the kernel reads the file pages.
    assert to_tensor(mapped, "refs")[0].data_ptr() == mapped.ctypes.data
    queries = integer_data((100, 48), torch.float32, 24).numpy()
    for q in (queries[:3], queries):
        scores, indices = knn_dot(q, mapped, 9)
        assert isinstance(scores, np.ndarray)
        assert_exact(torch.from_numpy(q), torch.from_numpy(refs).float(), 9, scores, indices)


def test_bfloat16_memmap_through_a_torch_view(tmp_path):
    refs = integer_data((500, 16), torch.bfloat16, 25)
    path = tmp_path / "refs.bf16"
    refs.view(torch.int16).numpy().tofile(path)
    mapped = torch.from_numpy(np.memmap(path, dtype=np.int16, mode="r", shape=(500, 16)))
    queries = integer_data((4, 16), torch.float32, 26)
    scores, indices = knn_dot(queries, mapped.view(torch.bfloat16), 5)
    assert_exact(queries, refs.float(), 5, scores, indices)


def test_empty_queries_give_empty_results(device):
    scores, indices = knn_dot(torch.empty(0, 8, device=device), torch.ones(5, 8, device=device), 3)
    assert scores.shape == indices.shape == (0, 3)


@pytest.mark.parametrize("threads", [None, 1, 2, 5])
def test_thread_counts_agree(threads):
    queries = integer_data((150, 30), torch.float32, 27)
    refs = integer_data((900, 30), torch.float16, 28)
    for q in (queries[:2], queries):
        scores, indices = knn_dot(q, refs, 11, threads=threads)
        assert_exact(q, refs.float(), 11, scores, indices)


def test_concurrent_calls_from_python_threads():
    jobs = []
    for i in range(8):
        queries = integer_data((1 + 40 * (i % 3), 40), torch.float32, 100 + i)
        refs = integer_data((3000, 40), REF_DTYPES[i % 3], 200 + i)
        jobs.append((queries, refs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: knn_dot(job[0], job[1], 10), jobs))
    for (queries, refs), (scores, indices) in zip(jobs, results, strict=True):
        assert_exact(queries, refs.float(), 10, scores, indices)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_k(device):
    queries = torch.ones(2, 4, device=device)
    refs = torch.ones(5, 4, device=device)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= N=5"):
        knn_dot(queries, refs, 6)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= N=5"):
        knn_dot(queries, refs, 0)
    with pytest.raises(TypeError, match="k: expected an integer"):
        knn_dot(queries, refs, 2.0)
    with pytest.raises(TypeError, match="k: expected an integer"):
        knn_dot(queries, refs, True)


def test_bad_shapes(device):
    refs = torch.ones(5, 4, device=device)
    with pytest.raises(ValueError, match="queries: expected a 2-D"):
        knn_dot(torch.ones(4, device=device), refs, 1)
    with pytest.raises(ValueError, match="refs: expected a 2-D"):
        knn_dot(torch.ones(2, 4, device=device), torch.ones(1, 5, 4, device=device), 1)
    with pytest.raises(ValueError, match="same dimension D, got 3 and 4"):
        knn_dot(torch.ones(2, 3, device=device), refs, 1)
    with pytest.raises(ValueError, match="refs: expected a non-empty array"):
        knn_dot(torch.ones(2, 4, device=device), torch.ones(0, 4, device=device), 1)
    with pytest.raises(ValueError, match="D >= 1"):
        knn_dot(torch.ones(2, 0, device=device), torch.ones(3, 0, device=device), 1)


def test_bad_dtypes(device):
    refs = torch.ones(5, 4, device=device)
    with pytest.raises(TypeError, match="queries: expected dtype float32, got int64"):
        knn_dot(torch.ones(2, 4, dtype=torch.int64, device=device), refs, 1)
    with pytest.raises(TypeError, match="queries: expected dtype float32, got float64"):
        knn_dot(torch.ones(2, 4, dtype=torch.float64, device=device), refs, 1)
    with pytest.raises(
        TypeError, match="refs: expected dtype float32, float16, bfloat16, got int32"
    ):
        knn_dot(torch.ones(2, 4, device=device), refs.int(), 1)
    with pytest.raises(TypeError, match="refs: expected a numpy array, torch tensor or cupy array"):
        knn_dot(torch.ones(2, 4, device=device), [[1.0] * 4], 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_queries(device, bad):
    queries = torch.ones(3, 4, device=device)
    queries[2, 1] = bad
    with pytest.raises(ValueError, match="queries: contains NaN or infinite values"):
        knn_dot(queries, torch.ones(5, 4, device=device), 1)


@pytest.mark.parametrize("ref_dtype", REF_DTYPES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("n_queries", [1, 200])
def test_non_finite_refs(device, isa, ref_dtype, bad, n_queries):
    for position in [(0, 0), (777, 19), (999, 39)]:  # first, middle, last (vector tail)
        refs = torch.ones(1000, 40)
        refs[position] = bad
        with pytest.raises(ValueError, match="refs: contains NaN or infinite values"):
            knn_dot(torch.ones(n_queries, 40, device=device), refs.to(ref_dtype).to(device), 1)


def test_bad_exclude(device):
    queries = torch.ones(3, 4, device=device)
    refs = torch.ones(5, 4, device=device)
    with pytest.raises(ValueError, match="exclude: expected 3 entries"):
        knn_dot(queries, refs, 1, exclude=torch.zeros(2, dtype=torch.int64, device=device))
    with pytest.raises(TypeError, match="exclude: expected dtype int64"):
        knn_dot(queries, refs, 1, exclude=torch.zeros(3, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match=r"exclude: entries must be -1 \(none\)"):
        knn_dot(queries, refs, 1, exclude=torch.tensor([0, 5, 1], device=device))
    with pytest.raises(ValueError, match=r"exclude: entries must be -1 \(none\)"):
        knn_dot(queries, refs, 1, exclude=torch.tensor([0, -2, 1], device=device))
    with pytest.raises(ValueError, match="k: expected k <= N - 1 = 4"):
        knn_dot(queries, refs, 5, exclude=torch.tensor([-1, 2, -1], device=device))


def test_bad_threads():
    for threads in (0, -1, 2**31, 200_000):
        with pytest.raises(ValueError, match=r"threads: expected None or an integer in \[1, "):
            knn_dot(torch.ones(2, 4), torch.ones(5, 4), 1, threads=threads)
    for threads in (1.5, True):
        with pytest.raises(TypeError, match="threads: expected None or an integer"):
            knn_dot(torch.ones(2, 4), torch.ones(5, 4), 1, threads=threads)


def test_huge_threads_never_reach_openmp(isa):
    # 200000 threads used to crash the interpreter; the binding itself refuses them too.
    queries, refs = np.ones((3, 8), np.float32), np.ones((50, 8), np.float32)
    scores, _ = knn_dot(queries, refs, 5, threads=np.int64(2))
    assert scores.shape == (3, 5)
    scores_t, indices_t = torch.empty(3, 5), torch.empty(3, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="threads: expected 1 <= threads <= 1024"):
        pyinstance._backend._C.knn_dot(
            queries.ctypes.data, refs.ctypes.data, 0, 3, 50, 8, 5, 0,
            scores_t.data_ptr(), indices_t.data_ptr(), 200_000,
        )  # fmt: skip


def test_overflowing_scores_rank_by_their_true_value(isa):
    # Row 0's true score is +1e40 (+inf in float32, ranked first); it used to come back as
    # -inf after inf - inf in the float32 sum.
    queries = np.array([[1e20] * 3], np.float32)
    refs = np.array([[1e20, 1e20, -1e20], [0, 0, 1]], np.float32)
    scores, indices = knn_dot(queries, refs, 2)
    assert indices.tolist() == [[0, 1]]
    assert scores[0, 0] == np.inf and scores[0, 1] == np.float32(1e20)
    # A true 0 (1e60 - 1e60) stays 0, not -inf.
    scores, _ = knn_dot(
        np.array([[1e30, 1e30]], np.float32), np.array([[1e30, -1e30]], np.float32), 1
    )
    assert scores.tolist() == [[0.0]]


@pytest.mark.parametrize("n_queries", [1, 3, 200])
def test_overflow_recomputes_every_query_exactly(isa, n_queries):
    # Both scan paths (few and many queries), each dtype; overflow in one query only.
    generator = torch.Generator().manual_seed(n_queries)
    queries = torch.randn(n_queries, 8, generator=generator)
    refs = torch.randn(40, 8, generator=generator)
    queries[n_queries // 2, :2] = torch.tensor([3e19, 3e19])
    refs[7, :2] = torch.tensor([1e19, -1e19])
    refs[9, :2] = torch.tensor([1e19, 1e19])
    for dtype in (torch.float32, torch.bfloat16):
        r = refs.to(dtype)
        scores, indices = knn_dot(queries, r, 5, threads=2)
        exact = queries.double() @ r.double().T
        expected = torch.sort(exact.float(), dim=1, descending=True, stable=True)
        assert torch.equal(indices, expected.indices[:, :5])
        assert torch.equal(scores, expected.values[:, :5])
        assert scores[n_queries // 2, 0] == float("inf")


def test_mixed_devices():
    if not _cuda_available():
        # Without a GPU the meta device stands in for a second device: refused by name.
        with pytest.raises(ValueError, match="refs: unsupported device meta"):
            knn_dot(torch.ones(2, 4), torch.ones(5, 4, device="meta"), 1)
        return
    with pytest.raises(ValueError, match="same device"):
        knn_dot(torch.ones(2, 4), torch.ones(5, 4, device="cuda"), 1)
    with pytest.raises(ValueError, match="same device"):
        knn_dot(
            torch.ones(2, 4),
            torch.ones(5, 4),
            1,
            exclude=torch.zeros(2, dtype=torch.int64, device="cuda"),
        )


def test_unknown_isa_caps_nothing(monkeypatch):
    monkeypatch.setenv("PYINSTANCE_ISA", "sse9")
    scores, _ = knn_dot(torch.ones(2, 4), torch.ones(5, 4), 1)
    assert scores.tolist() == [[4.0], [4.0]]


def test_awkward_numpy_layouts_are_accepted():
    queries = np.arange(8, dtype=np.float32).reshape(2, 4)
    refs = np.arange(20, dtype=np.float32).reshape(5, 4)
    expected = knn_dot(queries, refs, 2)
    for q, r in ((queries[::-1][::-1], refs[::-1].copy()[::-1]), (queries.astype(">f4"), refs)):
        scores, indices = knn_dot(q, r, 2)
        np.testing.assert_array_equal(scores, expected[0])
        np.testing.assert_array_equal(indices, expected[1])


def test_sparse_refs_are_refused_by_name():
    with pytest.raises(TypeError, match="refs: expected a dense tensor"):
        knn_dot(torch.ones(2, 4), torch.eye(4).to_sparse(), 1)


def test_cpp_checks_guard_direct_calls():
    # The binding validates on its own (other C++ kernels and Python both rely on it).
    from pyinstance import _C

    out_s = torch.empty(1, 9)
    out_i = torch.empty(1, 9, dtype=torch.int64)
    q = torch.ones(1, 4)
    r = torch.ones(5, 4)
    with pytest.raises(ValueError, match="k: expected 1 <= k <= N=5"):
        _C.knn_dot(
            q.data_ptr(), r.data_ptr(), 0, 1, 5, 4, 9, 0, out_s.data_ptr(), out_i.data_ptr(), 1
        )
    with pytest.raises(ValueError, match="refs: expected dtype float32, float16 or bfloat16"):
        _C.knn_dot(
            q.data_ptr(), r.data_ptr(), 3, 1, 5, 4, 1, 0, out_s.data_ptr(), out_i.data_ptr(), 1
        )


# --- shared CPU/CUDA ordering math (pyinstance/topk.h) -----------------------------------------


def test_order_keys_follow_score_then_index():
    from pyinstance import _C

    inf, nan = float("inf"), float("nan")
    scores = [inf, 3.5, 1.0, 1.0, 0.0, -0.0, 1e-40, -1e-40, -2.0, -inf, nan, 1.0, 0.0]
    indices = [5, 0, 9, 2, 7, 3, 1, 4, 6, 8, 11, 12, 10]
    keys = [_C.knn_order_key(s, i) for s, i in zip(scores, indices, strict=True)]
    for (_, back, index), s, i in zip(keys, scores, indices, strict=True):
        want = -inf if s != s else (0.0 if s == 0 else float(np.float32(s)))
        assert index == i and back == want and (back != 0 or np.copysign(1, back) > 0)
    by_key = [i for _, _, i in sorted(keys)]
    ranked = sorted(
        zip(scores, indices, strict=True),
        key=lambda c: (-(-inf if c[0] != c[0] else np.float32(c[0])), c[1]),
    )
    assert by_key == [i for _, i in ranked]
    assert len({key for key, _, _ in keys}) == len(keys)
