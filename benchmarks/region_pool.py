"""Fused top-k region pooling vs the same operation in plain torch ops, in one run.

    python benchmarks/region_pool.py            # B=32, C=2048, K=500, H=W=28, k=4
    python benchmarks/region_pool.py --quick    # small sizes, a smoke run in seconds

Plain torch: ``amax`` over classes, ``topk``, ``gather``, ``F.normalize``, ``sum`` (autograd
for the backward). Ours: ``pyinstance.ops.topk_region_pool``. Both run in the same process
with the same thread count, repeats interleaved; the table shows the min and median per
configuration and the ratio of the mins.

"forward" runs under ``torch.no_grad()`` (inference); "forward+backward" runs the forward
with autograd and ``torch.autograd.grad`` w.r.t. the features for a fixed random incoming
gradient (a fresh B×C×H×W gradient each time, as in training).

Most of plain torch's forward+backward is the B×C×H×W zero gradient of ``gather``'s
backward: fresh memory page-faulted in 4 KiB pages, then written in full, then scattered
into. Ours takes it from calloc (numpy: lazily zeroed, transparent huge pages) and writes
only the nonzeros. ``THP_MEM_ALLOC_ENABLE=1 python benchmarks/region_pool.py`` gives
torch's own allocator huge pages too (the header line shows the setting).

Peak memory (CPU) is the rise of the process's resident-set high-water mark (VmHWM,
reset through /proc/self/clear_refs before each measured call) above the resident set
before the call: what the call really touches, torch allocations included. On CUDA it is
``torch.cuda.max_memory_allocated`` above the memory allocated before the call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from pyinstance.ops import topk_region_pool


def plain_torch(
    features: torch.Tensor, scores: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same operation in plain torch ops."""
    batch, channels = features.shape[:2]
    locations = scores.amax(dim=1).flatten(1).topk(k, dim=1).indices
    gathered = features.flatten(2).gather(2, locations[:, None, :].expand(batch, channels, k))
    return F.normalize(gathered, dim=1).sum(dim=2), locations


def ours(features: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return topk_region_pool(features, scores, k)


IMPLEMENTATIONS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "plain torch": plain_torch,
    "pyinstance": ours,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory of one call above what was in use before it (MiB); None if unavailable."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_kib("VmRSS")
    fn()
    return (_rss_kib("VmHWM") - before) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per config")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch/OpenMP threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)  # one OpenMP runtime: also the kernels' threads
    device = torch.device(args.device)
    if args.quick:
        batch, channels, classes, size, k, repeats = 4, 256, 50, 14, 4, 5
    else:
        batch, channels, classes, size, k, repeats = 32, 2048, 500, 28, 4, 15
    repeats = args.repeats or repeats

    gen = torch.Generator().manual_seed(0)
    features = torch.randn(batch, channels, size, size, generator=gen).to(device)
    scores = torch.randn(batch, classes, size, size, generator=gen).to(device)
    grad_out = torch.randn(batch, channels, generator=gen).to(device)
    leaf = features.clone().requires_grad_(True)

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(features, scores, k)

        return run

    def forward_backward(fn):
        def run():
            pooled, _ = fn(leaf, scores, k)
            torch.autograd.grad(pooled, leaf, grad_out)

        return run

    # Same answer first: the timings compare equal work.
    results = {}
    for name, fn in IMPLEMENTATIONS.items():
        pooled, locations = fn(leaf, scores, k)
        (grad,) = torch.autograd.grad(pooled, leaf, grad_out)
        results[name] = (pooled.detach(), locations, grad)
    (p0, l0, g0), (p1, l1, g1) = results.values()
    assert torch.equal(l0, l1), "locations differ"
    torch.testing.assert_close(p0, p1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g0, g1, rtol=1e-4, atol=1e-6)
    del results, p0, p1, g0, g1, grad

    modes = {"forward": forward, "forward+backward": forward_backward}
    times: dict[tuple[str, str], list[float]] = {(m, n): [] for m in modes for n in IMPLEMENTATIONS}
    for make in modes.values():  # warm-up
        for fn in IMPLEMENTATIONS.values():
            make(fn)()
    for _ in range(repeats):  # interleaved: noise hits both sides alike
        for mode, make in modes.items():
            for name, fn in IMPLEMENTATIONS.items():
                run = make(fn)
                _sync(device)
                start = time.perf_counter()
                run()
                _sync(device)
                times[(mode, name)].append((time.perf_counter() - start) * 1e3)
    peaks = {
        (mode, name): peak_memory_mib(make(fn), device)
        for mode, make in modes.items()
        for name, fn in IMPLEMENTATIONS.items()
    }

    print(
        f"topk_region_pool  B={batch} C={channels} K={classes} H=W={size} k={k}  "
        f"device={device}  threads={torch.get_num_threads()}  repeats={repeats}  "
        f"isa={os.environ.get('PYINSTANCE_ISA', 'auto')}  "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}"
    )
    header = f"{'mode':<17} {'implementation':<12} {'min ms':>9} {'median ms':>10} {'speedup':>8} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    for mode in modes:
        base = min(times[(mode, "plain torch")])
        for name in IMPLEMENTATIONS:
            samples = times[(mode, name)]
            peak = peaks[(mode, name)]
            print(
                f"{mode:<17} {name:<12} {min(samples):>9.2f} {statistics.median(samples):>10.2f} "
                f"{base / min(samples):>7.2f}x {'n/a' if peak is None else f'{peak:.1f}':>9}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
