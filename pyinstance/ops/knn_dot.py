"""Exact dot-product k-nearest-neighbour search (``knn_dot``) on CPU and CUDA."""

from __future__ import annotations

import numbers
from typing import Any

import torch

from pyinstance.ops._arrays import (
    common_device,
    dtype_code,
    from_tensor,
    kernel_module,
    require,
    stream_handle,
    to_tensor,
)

_REF_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_k(k: Any, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k: expected an integer, got {type(k).__name__}")
    k = int(k)
    if not 1 <= k <= n:
        raise ValueError(f"k: expected 1 <= k <= N={n} (the number of references), got {k}")
    return k


def _check_threads(threads: Any) -> int:
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads: expected None or a positive integer, got {threads!r}")
    return int(threads)


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


def knn_dot(
    queries: Any,
    refs: Any,
    k: int,
    *,
    exclude: Any = None,
    threads: int | None = None,
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
        threads: CPU threads (default: all cores); ignored on CUDA.

    Returns:
        ``(scores, indices)``: Q x k float32 scores in descending order and Q x k int64
        reference indices, equal scores ordered by the smaller index, as the same kind of
        array and on the same device as ``queries``. Dot products that overflow float32
        come back as +-inf.

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
    k = _check_k(k, n_refs)
    n_threads = _check_threads(threads)
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
        if device.type == "cpu":
            module.knn_dot(*args, n_threads)
        else:
            index = device.index if device.index is not None else torch.cuda.current_device()
            module.knn_dot(*args, stream_handle(device, kind), index)
    return from_tensor(scores, kind), from_tensor(indices, kind)


__all__ = ["knn_dot"]
