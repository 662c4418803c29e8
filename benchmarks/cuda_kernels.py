"""CUDA kernels against plain torch on the same GPU: knn_dot and triplet_mine.

Exits at once (status 0) on a machine without a CUDA device or a pyinstance built without
CUDA. Otherwise, on one GPU, every contender's result is checked before it is timed:

- knn_dot (float32, bfloat16, float16 references) against torch's matmul + topk over the
  whole score matrix (blocked when it would not fit in 4 GiB): the k scores equal torch's
  float32 ones (|difference| <= 1e-4 for float32; recall@k reported for the half types) and
  every returned index has its reported score (recomputed in float64).
- triplet_mine (batch_hard, semihard, hard_negative) against the vectorised torch miners of
  benchmarks/mining.py run on the GPU: the same (anchor, positive) pairs and equally similar
  negatives.

Times are CUDA-event times, minimum of interleaved repeats after a warm-up; ratios are
torch / ours (above 1: ours faster).

    python benchmarks/cuda_kernels.py            # N = 1,000,000 references, D = 256
    python benchmarks/cuda_kernels.py --quick    # seconds
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mining import check_same, clustered, torch_batch_hard, torch_hard_negative, torch_semihard

import pyinstance
from pyinstance.ops import knn_dot, triplet_mine

BLOCK_BYTES = 4 * 2**30


def cuda_ready() -> bool:
    return bool(pyinstance.HAS_CUDA) and torch.cuda.is_available()


def gpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """Minimum CUDA-event time of ``repeats`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def torch_knn(queries: torch.Tensor, refs: torch.Tensor, k: int) -> tuple[torch.Tensor, ...]:
    """Plain torch on the GPU: scores by matmul, topk; blocked over references if large."""
    block = max(k, BLOCK_BYTES // (4 * queries.shape[0]))
    if refs.shape[0] <= block:
        return (queries @ refs.T).topk(k, dim=1)
    best_s = torch.full((queries.shape[0], k), -torch.inf, device=queries.device)
    best_i = torch.zeros((queries.shape[0], k), dtype=torch.int64, device=queries.device)
    for start in range(0, refs.shape[0], block):
        s, i = (queries @ refs[start : start + block].T).topk(k, dim=1)
        best_s, order = torch.cat([best_s, s], dim=1).topk(k, dim=1)
        best_i = torch.gather(torch.cat([best_i, i + start], dim=1), 1, order)
    return best_s, best_i


def check_knn(name: str, found, expected: torch.Tensor, queries, refs, atol: float) -> None:
    scores, indices = (t.cpu() for t in found)
    q64, r64 = queries.cpu().double(), refs.cpu().double()
    true = torch.einsum("qd,qkd->qk", q64, r64[indices.long()])
    off_index = (true - scores.double()).abs().max().item()
    off_score = (scores.double() - expected.cpu().double()).abs().max().item()
    if max(off_index, off_score) > atol:
        raise SystemExit(
            f"{name}: neighbours differ (scores off by {off_score:.2e}, index scores off by "
            f"{off_index:.2e}); not timing"
        )


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    a, b = found.cpu().tolist(), truth.cpu().tolist()
    return sum(len(set(x) & set(y)) for x, y in zip(a, b, strict=True)) / truth.numel()


def bench_knn(n: int, dim: int, k: int, query_counts: list[int], repeats: int) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    refs = torch.nn.functional.normalize(torch.randn(n, dim, device="cuda", generator=g), dim=1)
    half = {"bf16": refs.bfloat16(), "f16": refs.half()}
    print(f"\nknn_dot  N={n:,} D={dim} k={k}  (ms, CUDA events, min of {repeats})")
    print(
        f"{'Q':>6}{'torch f32':>11}{'ours f32':>10}{'ours bf16':>11}{'ours f16':>10}"
        f"{'torch/ours':>12}{'recall bf16':>13}{'recall f16':>12}"
    )
    for q in query_counts:
        queries = torch.nn.functional.normalize(
            torch.randn(q, dim, device="cuda", generator=g), dim=1
        )
        expected = torch_knn(queries, refs, k)
        ours = knn_dot(queries, refs, k)
        check_knn(f"knn_dot f32 Q={q}", ours, expected[0], queries, refs, 1e-4)
        halves = {name: knn_dot(queries, r, k) for name, r in half.items()}
        contenders = {
            "torch": lambda q=queries: torch_knn(q, refs, k),
            "f32": lambda q=queries: knn_dot(q, refs, k),
            **{name: (lambda q=queries, r=r: knn_dot(q, r, k)) for name, r in half.items()},
        }
        ms = {name: gpu_ms(fn, 1) for name, fn in contenders.items()}  # warm-up
        for _ in range(repeats - 1):
            for name, fn in contenders.items():
                ms[name] = min(ms[name], gpu_ms(fn, 1))
        print(
            f"{q:>6}{ms['torch']:>11.3f}{ms['f32']:>10.3f}{ms['bf16']:>11.3f}{ms['f16']:>10.3f}"
            f"{ms['torch'] / ms['f32']:>11.2f}x"
            f"{recall(halves['bf16'][1], ours[1]):>13.4f}{recall(halves['f16'][1], ours[1]):>12.4f}"
        )


def bench_mining(sizes: list[int], dim: int, repeats: int) -> None:
    plain = {
        "batch_hard": torch_batch_hard,
        "semihard": torch_semihard,
        "hard_negative": torch_hard_negative,
    }
    print(f"\ntriplet_mine  D={dim}, 4 images/class  (ms, CUDA events, min of {repeats})")
    print(f"{'strategy':<14}{'B':>7}{'torch':>10}{'ours':>10}{'torch/ours':>12}")
    for strategy, torch_fn in plain.items():
        for b in sizes:
            x_cpu, labels_cpu = clustered(b, dim)
            x, labels = x_cpu.cuda(), labels_cpu.cuda()
            ours = triplet_mine(x, labels, strategy=strategy)
            theirs = torch_fn(x, labels)
            check_same(
                f"{strategy} B={b} torch",
                tuple(t.cpu() for t in theirs),
                tuple(t.cpu() for t in ours),
                x_cpu,
            )
            t_ours = gpu_ms(
                lambda x=x, y=labels, s=strategy: triplet_mine(x, y, strategy=s), repeats
            )
            t_torch = gpu_ms(lambda x=x, y=labels, f=torch_fn: f(x, y), repeats)
            print(f"{strategy:<14}{b:>7}{t_torch:>10.3f}{t_ours:>10.3f}{t_torch / t_ours:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not cuda_ready():
        print("cuda_kernels: no CUDA device (or pyinstance built without CUDA); skipped")
        return
    if args.quick:
        args.n, args.repeats = 50_000, 3
    print(
        f"pyinstance {pyinstance.__version__}, torch {torch.__version__}, "
        f"{torch.cuda.get_device_name()}"
    )
    bench_knn(args.n, args.dim, args.k, [1, 16, 1000], args.repeats)
    bench_mining([256, 1024] if args.quick else [256, 1024, 4096], args.dim, args.repeats)


if __name__ == "__main__":
    main()
