"""Exact k-NN: pyinstance.ops.knn_dot against faiss IndexFlatIP and blocked torch matmul+topk.

Same data, same thread count, interleaved repeats, minimum time per configuration:

    python benchmarks/knn.py                 # N=1,000,000, D=256, k=10, Q in {1, 16, 1000}
    python benchmarks/knn.py --quick         # seconds-long smoke run

Before timing, every float32 method (faiss, torch, ours) must give the same neighbours for
every query count: the k scores equal faiss's (|difference| <= 1e-4) and each returned index
really has its reported score (recomputed in float64). Neighbours swapped inside a near-tie
pass; a wrong neighbour stops the run. Our kernel also runs on bfloat16 and float16 copies
of the references; their recall@k is measured against our float32 result.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from pyinstance import _backend
from pyinstance.ops import knn_dot


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="references")
    parser.add_argument("--dim", type=int, default=256, help="descriptor dimension")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query")
    parser.add_argument("--queries", default="1,16,1000", help="comma-separated query counts")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (min kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for all")
    parser.add_argument("--block", type=int, default=65536, help="torch references per block")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.n, args.queries, args.repeats = 20_000, "1,16,100", 2
    return args


def unit_rows(rows: int, dim: int, generator: torch.Generator, chunk: int = 65536) -> torch.Tensor:
    """rows x dim random L2-normalised float32 descriptors, built in chunks."""
    out = torch.empty(rows, dim)
    for start in range(0, rows, chunk):
        block = torch.randn(min(chunk, rows - start), dim, generator=generator)
        out[start : start + block.shape[0]] = torch.nn.functional.normalize(block, dim=1)
    return out


def torch_topk(queries: torch.Tensor, refs: torch.Tensor, k: int, block: int):
    """Plain torch: matmul + topk per block of references, merged with a running top-k."""
    best_s = torch.full((queries.shape[0], k), -torch.inf)
    best_i = torch.zeros((queries.shape[0], k), dtype=torch.int64)
    for start in range(0, refs.shape[0], block):
        scores = queries @ refs[start : start + block].T
        s, i = scores.topk(min(k, scores.shape[1]), dim=1)
        merged_s = torch.cat([best_s, s], dim=1)
        merged_i = torch.cat([best_i, i + start], dim=1)
        best_s, order = merged_s.topk(k, dim=1)
        best_i = torch.gather(merged_i, 1, order)
    return best_s, best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), truth.tolist(), strict=True))
    return hits / truth.size


def check_same_neighbours(
    name: str,
    found: tuple[object, object],
    expected: np.ndarray,
    queries: np.ndarray,
    refs: np.ndarray,
) -> None:
    """Raise unless ``found`` has ``expected``'s k scores, each the true score of its index."""
    scores, indices = (np.asarray(part) for part in found)
    true = np.einsum("qd,qkd->qk", queries.astype(np.float64), refs[indices].astype(np.float64))
    wrong_index = np.abs(true - scores).max()
    wrong_score = np.abs(scores - expected).max()
    if scores.shape != expected.shape or max(wrong_index, wrong_score) > 1e-4:
        raise SystemExit(
            f"{name}: neighbours differ (scores off by {wrong_score:.2e}, index scores off by "
            f"{wrong_index:.2e}); not timing"
        )


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    args = parse_args()
    import faiss

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(args.seed)
    console = Console(width=200)
    console.print(
        f"N={args.n:,} D={args.dim} k={args.k} threads={args.threads} repeats={args.repeats} "
        f"isa={_backend._C.active_isa()}"
    )
    refs = unit_rows(args.n, args.dim, generator)
    refs_np = refs.numpy()
    refs_bf16 = refs.bfloat16()
    refs_f16 = refs.half()
    index = faiss.IndexFlatIP(args.dim)
    index.add(refs_np)
    query_counts = [int(q) for q in args.queries.split(",")]
    all_queries = unit_rows(max(query_counts), args.dim, generator).numpy()

    methods: dict[str, Callable[[np.ndarray], tuple[object, object]]] = {
        "faiss f32": lambda q: index.search(q, args.k),
        "torch f32": lambda q: torch_topk(torch.from_numpy(q), refs, args.k, args.block),
        "ours f32": lambda q: knn_dot(q, refs_np, args.k, threads=args.threads),
        "ours bf16": lambda q: knn_dot(q, refs_bf16, args.k, threads=args.threads),
        "ours f16": lambda q: knn_dot(q, refs_f16, args.k, threads=args.threads),
    }
    results: dict[tuple[int, str], np.ndarray] = {}
    for n_queries in query_counts:  # equal results first (also the warm-up)
        queries = np.ascontiguousarray(all_queries[:n_queries])
        found = {name: fn(queries) for name, fn in methods.items()}
        for name in ("torch f32", "ours f32"):
            check_same_neighbours(name, found[name], found["faiss f32"][0], queries, refs_np)
        for name, (_, indices) in found.items():
            results[(n_queries, name)] = np.asarray(indices)
    console.print(
        "checked: torch f32 and ours f32 give faiss's neighbours (scores within 1e-4) "
        f"for Q in {query_counts}"
    )
    best: dict[tuple[int, str], float] = {}
    for repeat in range(args.repeats):
        for n_queries in query_counts:
            queries = np.ascontiguousarray(all_queries[:n_queries])
            for name, fn in methods.items():
                seconds, _ = timed(lambda fn=fn, q=queries: fn(q))
                key = (n_queries, name)
                best[key] = min(best.get(key, float("inf")), seconds)
        console.print(f"repeat {repeat + 1}/{args.repeats} done")

    table = Table(title=f"knn_dot vs faiss / torch (min of {args.repeats}, seconds)")
    for column in [
        "Q",
        *methods,
        "faiss/ours f32",
        "faiss/ours bf16",
        "faiss/ours f16",
        "torch/ours f32",
        "recall faiss",
        "recall torch",
        "recall bf16",
        "recall f16",
    ]:
        table.add_column(column, justify="right")
    for n_queries in query_counts:
        t = {name: best[(n_queries, name)] for name in methods}
        truth = results[(n_queries, "ours f32")]
        table.add_row(
            str(n_queries),
            *(f"{t[name]:.4f}" for name in methods),
            f"{t['faiss f32'] / t['ours f32']:.2f}x",
            f"{t['faiss f32'] / t['ours bf16']:.2f}x",
            f"{t['faiss f32'] / t['ours f16']:.2f}x",
            f"{t['torch f32'] / t['ours f32']:.2f}x",
            f"{recall(results[(n_queries, 'faiss f32')], truth):.4f}",
            f"{recall(results[(n_queries, 'torch f32')], truth):.4f}",
            f"{recall(results[(n_queries, 'ours bf16')], truth):.4f}",
            f"{recall(results[(n_queries, 'ours f16')], truth):.4f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
