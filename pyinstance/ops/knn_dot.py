"""Exact dot-product k-nearest-neighbour search (``knn_dot``) on CPU and CUDA."""

from __future__ import annotations

from typing import Any

import torch

from pyinstance.ops._args import check_int, check_threads
from pyinstance.ops._arrays import (
    common_device,
    cuda_launch,
    dtype_code,
    from_tensor,
    kernel_module,
    require,
    to_tensor,
)
from pyinstance.ops.knn_screen import KnnScreen

_REF_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: float32's largest finite value: dot products beyond it overflow.
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def _check_cuda_overflow(queries: torch.Tensor, refs: torch.Tensor) -> None:
    """The CUDA kernel has no float64 fallback: refuse inputs whose products could overflow.

    Cauchy-Schwarz bounds every partial sum by ``max ||q|| * max ||r||``.
    """
    q_norm = torch.linalg.vector_norm(queries, dim=1, dtype=torch.float64).max()
    r_norm = torch.linalg.vector_norm(refs, dim=1, dtype=torch.float64).max()
    bound = float(q_norm * r_norm)
    if bound >= _FLOAT32_MAX / 2:
        raise ValueError(
            f"queries, refs: dot products may overflow float32 on CUDA (largest norms "
            f"{float(q_norm):.3g} and {float(r_norm):.3g}); scale the descriptors down or run "
            "on the CPU, which recomputes overflowing scores in float64"
        )


def _check_exclude(exclude: Any, queries: torch.Tensor, n: int, k: int) -> torch.Tensor | None:
    if exclude is None:
        return None
    t, _ = to_tensor(exclude, "exclude")
    common_device(queries=queries, exclude=t)
    t = require(t, "exclude", ndim=1, dtypes=(torch.int64,), nonempty=False)
    q = queries.shape[0]
    if t.shape[0] != q:
        raise ValueError(f"exclude: expected {q} entries (one per query), got {t.shape[0]}")
    if q and bool(((t < -1) | (t >= n)).any()):
        raise ValueError(f"exclude: entries must be -1 (none) or a reference index in [0, {n})")
    if k > n - 1 and q and bool((t >= 0).any()):
        raise ValueError(
            f"k: expected k <= N - 1 = {n - 1} when exclude removes a reference, got {k}"
        )
    return t


def _screen_applies(screen: KnnScreen | None, queries: torch.Tensor, refs: torch.Tensor) -> bool:
    """Whether ``screen`` is usable for this call; raises when it is not ``refs``' screen.

    More queries than ``screen.max_queries`` (compute-bound) and scores near float32's range
    (the bounds would overflow) go the plain way."""
    if screen is None:
        return False
    if not isinstance(screen, KnnScreen):
        raise TypeError(f"screen: expected a KnnScreen or None, got {type(screen).__name__}")
    if refs.device.type != "cpu":
        raise ValueError(f"screen: a CPU screen cannot serve refs on {refs.device}")
    if not screen.matches(refs):
        raise ValueError(
            f"screen: built for {screen.rows} x {screen.dim} references, not these "
            f"{tuple(refs.shape)} (build it with KnnScreen.of(refs) or extend it)"
        )
    if queries.shape[0] > screen.max_queries:
        return False
    q_norm = float(torch.linalg.vector_norm(queries, dim=1, dtype=torch.float64).max())
    return q_norm * screen.max_norm < _FLOAT32_MAX * 1e-8


def knn_dot(
    queries: Any,
    refs: Any,
    k: int,
    *,
    exclude: Any = None,
    threads: int | None = None,
    screen: KnnScreen | None = None,
) -> tuple[Any, Any]:
    """The ``k`` references with the largest dot product with each query, exactly.

    Args:
        queries: Q x D float32 array (numpy, torch CPU/CUDA or cupy).
        refs: N x D float32, float16 or bfloat16 array on the same device; products are
            accumulated in float32. A read-only ``np.memmap`` is streamed, never copied
            (unless it is not C-contiguous); numpy has no bfloat16, so map such a file as
            int16 and pass ``torch.from_numpy(mapped).view(torch.bfloat16)``.
        k: neighbours per query, 1 <= k <= N (N - 1 when ``exclude`` removes a reference).
        exclude: optional Q int64 reference indices to skip, one per query (-1: none), e.g.
            the query itself when the queries are the references.
        threads: CPU threads, an integer in 1..1024 (default: OpenMP's); ignored on CUDA.
        screen: optional :class:`~pyinstance.ops.knn_screen.KnnScreen` of exactly ``refs``
            (CPU): up to ``screen.max_queries`` queries then read its int8 codes, a quarter
            of float32's bytes, and score exactly only the rows that bounds cannot rule
            out. The results are the same, bit for bit.

    Returns:
        ``(scores, indices)``: Q x k float32 scores in descending order and Q x k int64
        reference indices, equal scores ordered by the smaller index, as the same kind of
        array and on the same device as ``queries``.

    Overflow: on the CPU, when a float32 accumulation overflows (the kernel detects it), the
    call recomputes every score in float64 and rounds it to float32, so a true value beyond
    float32's range comes back as +-inf and ranks by its sign (+inf first), and a true value
    within it (0 = 1e60 - 1e60, say) stays finite. On CUDA, inputs whose largest row norms
    could overflow float32 (``max ||q|| * max ||r|| >= 1.7e38``) are refused with a
    ``ValueError``.

    The GIL is released while the kernel runs; memory beyond the inputs is O(Q * k) plus
    bounded per-thread tiles.
    """
    q, kind = to_tensor(queries, "queries")
    r, _ = to_tensor(refs, "refs")
    q = q.detach()
    r = r.detach()
    if q.dim() != 2:
        raise ValueError(f"queries: expected a 2-D (Q x D) array, got shape {tuple(q.shape)}")
    if r.dim() != 2:
        raise ValueError(f"refs: expected a 2-D (N x D) array, got shape {tuple(r.shape)}")
    if q.shape[1] != r.shape[1]:
        raise ValueError(
            f"queries and refs must have the same dimension D, got {q.shape[1]} and {r.shape[1]}"
        )
    device = common_device(queries=q, refs=r)
    q = require(q, "queries", dtypes=(torch.float32,), finite=True, nonempty=False)
    if q.shape[1] == 0:
        raise ValueError("queries: expected D >= 1 columns, got 0")
    # CPU refs are checked for NaN/inf by the kernel while it streams them (no extra pass).
    r = require(r, "refs", dtypes=_REF_DTYPES, finite=device.type != "cpu")
    n_queries, n_refs = q.shape[0], r.shape[0]
    k = check_int(k, "k")
    if not 1 <= k <= n_refs:
        raise ValueError(f"k: expected 1 <= k <= N={n_refs} (the number of references), got {k}")
    n_threads = check_threads(threads)
    excl = _check_exclude(exclude, q, n_refs, k)

    scores = torch.empty((n_queries, k), dtype=torch.float32, device=device)
    indices = torch.empty((n_queries, k), dtype=torch.int64, device=device)
    if n_queries:
        module = kernel_module(device)
        args = (
            q.data_ptr(),
            r.data_ptr(),
            dtype_code(r),
            n_queries,
            n_refs,
            q.shape[1],
            k,
            0 if excl is None else excl.data_ptr(),
            scores.data_ptr(),
            indices.data_ptr(),
        )
        if device.type == "cpu" and _screen_applies(screen, q, r):
            codes, scales, slacks, norms, sums = screen.arrays()
            module.knn_dot_screened(
                *args[:8],
                codes.ctypes.data,
                screen.stride,
                scales.ctypes.data,
                slacks.ctypes.data,
                norms.ctypes.data,
                sums.ctypes.data,
                *args[8:],
                n_threads,
            )
        elif device.type == "cpu":
            module.knn_dot(*args, n_threads)
        else:
            _check_cuda_overflow(q, r)
            index, stream = cuda_launch(device, kind)
            module.knn_dot(*args, stream, index)
    return from_tensor(scores, kind), from_tensor(indices, kind)


__all__ = ["knn_dot"]
