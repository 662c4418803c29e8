"""Triplet mining: pyinstance.ops.triplet_mine vs pytorch-metric-learning and plain torch.

One run, same thread count for every contender, interleaved repeats, minimum time per
config. D = 256, 4 images per class (clustered, L2-normalised). Peak memory is the growth of
the process's resident set while one call runs (Linux VmHWM after resetting it through
/proc/self/clear_refs, minus VmRSS before the call), in MiB.

Every contender's triplets are checked before timing: the same (anchor, positive) pairs and,
per pair, negatives of the same similarity (|difference| <= 1e-5; an index swapped inside a
near-tie passes, a different choice stops the run). pytorch-metric-learning is compared
where it does the same work: BatchHardMiner against batch_hard, and on the "semihard/drop"
rows TripletMarginMiner (semihard, margin 2: every negative below its positive, on
similarities in [-1, 1]) reduced to the hardest of them per (anchor, positive) pair, which
is what triplet_mine(strategy="semihard", semihard_fallback="drop") returns. The plain
"semihard" rows (pairs without such a negative fall back to the easiest negative) have no
pml counterpart.

    python benchmarks/mining.py            # the full issue-4 table (several minutes)
    python benchmarks/mining.py --quick    # seconds: small sizes, smoke test
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import pyinstance
from pyinstance.ops import triplet_mine

INF = float("inf")


# --- data ---------------------------------------------------------------------------------


def clustered(
    n: int, dim: int, per_class: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    classes = (n + per_class - 1) // per_class
    centres = torch.nn.functional.normalize(torch.randn(classes, dim, generator=g), dim=1)
    labels = (torch.arange(n) // per_class).long()
    x = centres[labels] + 0.7 * torch.randn(n, dim, generator=g) / dim**0.5 * 2
    return torch.nn.functional.normalize(x, dim=1).contiguous(), labels


# --- plain torch contenders (vectorised over the B×B similarity matrix) -------------------


def torch_hardest(x: torch.Tensor, labels: torch.Tensor):
    sim = x @ x.T
    same = labels[:, None] == labels[None, :]
    pos = same.clone()
    pos.fill_diagonal_(False)
    return sim, same, pos, sim.masked_fill(same, -INF).argmax(dim=1)


def torch_batch_hard(x: torch.Tensor, labels: torch.Tensor):
    sim, same, pos, hardest_neg = torch_hardest(x, labels)
    hardest_pos = sim.masked_fill(~pos, INF).argmin(dim=1)
    anchors = torch.nonzero(pos.any(dim=1) & ~same.all(dim=1)).flatten()
    return anchors, hardest_pos[anchors], hardest_neg[anchors]


def torch_hard_negative(x: torch.Tensor, labels: torch.Tensor):
    _, _, pos, hardest_neg = torch_hardest(x, labels)
    pa, pp = torch.nonzero(pos, as_tuple=True)
    return pa, pp, hardest_neg[pa]


def torch_semihard(x: torch.Tensor, labels: torch.Tensor, drop: bool = False):
    sim, same, pos, _ = torch_hardest(x, labels)
    pa, pp = torch.nonzero(pos, as_tuple=True)
    rows = sim[pa]
    below = ~same[pa] & (rows < sim[pa, pp][:, None])
    chosen = rows.masked_fill(~below, -INF).argmax(dim=1)
    found = below.any(dim=1)
    if drop:
        return pa[found], pp[found], chosen[found]
    easiest = sim.masked_fill(same, INF).argmin(dim=1)
    return pa, pp, torch.where(found, chosen, easiest[pa])


def hardest_per_pair(x: torch.Tensor, triplets) -> tuple[torch.Tensor, ...]:
    """Of every (a, p, n), keep per (a, p) pair the negative most similar to the anchor."""
    a, p, n = triplets
    sim_an = (x @ x.T)[a, n]
    order = sim_an.argsort(descending=True, stable=True)
    order = order[(a[order] * x.shape[0] + p[order]).argsort(stable=True)]
    key = a[order] * x.shape[0] + p[order]
    first = torch.ones_like(key, dtype=torch.bool)
    first[1:] = key[1:] != key[:-1]
    chosen = order[first]
    return a[chosen], p[chosen], n[chosen]


def check_same(name: str, found, expected, x: torch.Tensor) -> None:
    """Stop unless ``found`` has ``expected``'s (a, p) pairs and, per pair, equally similar
    positives and negatives (sorted by anchor, positive, negative similarity)."""
    x64 = x.double()

    def table(triplets) -> np.ndarray:
        a, p, n = (t.long() for t in triplets)
        sim_ap = (x64[a] * x64[p]).sum(dim=1)
        sim_an = (x64[a] * x64[n]).sum(dim=1)
        rows = np.stack([a.numpy(), p.numpy(), sim_ap.numpy(), sim_an.numpy()], axis=1)
        return rows[np.lexsort((rows[:, 3], rows[:, 1], rows[:, 0]))]

    got, want = table(found), table(expected)
    if got.shape != want.shape or not (
        np.array_equal(got[:, 0], want[:, 0])
        and np.allclose(got[:, 2:], want[:, 2:], rtol=0, atol=1e-5)
    ):
        raise SystemExit(
            f"{name}: triplets differ from ours ({len(got)} vs {len(want)}); not timing"
        )


def torch_offline(
    x: torch.Tensor, labels: torch.Tensor, n_pos: int, n_neg: int, n_triplets: int, block: int = 256
):
    """Blocked: per block of anchors, the block×N similarities, masked top-k, combinations."""
    out_a, out_p, out_n = [], [], []
    for a0 in range(0, x.shape[0], block):
        sim = x[a0 : a0 + block] @ x.T
        rows = torch.arange(a0, a0 + sim.shape[0])
        same = labels[rows][:, None] == labels[None, :]
        neg_v, neg_i = sim.masked_fill(same, -INF).topk(n_neg, dim=1)
        pos_mask = same
        pos_mask[torch.arange(sim.shape[0]), rows] = False
        pos_v, pos_i = sim.masked_fill(~pos_mask, -INF).topk(n_pos, dim=1)
        pos_v = pos_v.masked_fill(pos_v == -INF, INF)  # missing positives never win
        score = (neg_v[:, None, :] - pos_v[:, :, None]).flatten(1)
        best_v, best = score.topk(n_triplets, dim=1)
        keep = best_v > -INF
        a = rows[:, None].expand_as(best)[keep]
        out_a.append(a)
        out_p.append(pos_i.gather(1, best // n_neg)[keep])
        out_n.append(neg_i.gather(1, best % n_neg)[keep])
    return torch.cat(out_a), torch.cat(out_p), torch.cat(out_n)


# --- measurement --------------------------------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_mib(fn: Callable[[], object]) -> float | None:
    """RSS growth while fn runs (Linux); None where the high-water mark cannot be reset.

    Freed heap is first returned to the system (glibc malloc_trim), so memory a previous
    call left in the allocator's free lists does not hide this call's peak.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    before = _status("VmRSS")
    result = fn()
    peak = _status("VmHWM")
    del result
    return max(0, peak - before) / 2**20


def time_interleaved(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {name: INF for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: t * 1e3 for name, t in best.items()}


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test in seconds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--offline-n", type=int, default=100_000)
    parser.add_argument("--offline-repeats", type=int, default=2)
    parser.add_argument("--skip-offline", action="store_true")
    args = parser.parse_args()

    from pytorch_metric_learning import __version__ as pml_version
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.miners import BatchHardMiner, TripletMarginMiner

    torch.set_num_threads(args.threads)
    sizes = [64, 256] if args.quick else [256, 1024, 4096]
    repeats = 2 if args.quick else args.repeats
    pml_semihard_max = 1024  # 4096: 50 M triplets of B×B×B masks, out of memory
    ours_kw = {"threads": args.threads}
    info = pyinstance.build_info()
    print(
        f"pyinstance {pyinstance.__version__} (ISA {info['cpu']['isa_active']}), torch {torch.__version__}, "
        f"pytorch-metric-learning {pml_version}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, D={args.dim}, 4 images/class, min of {repeats} interleaved repeats"
    )
    print(
        "peak = resident-set growth during one call (VmHWM - VmRSS before, after malloc_trim), MiB\n"
    )

    header = f"{'strategy':<14}{'B':>7}{'ours ms':>10}{'pml ms':>10}{'torch ms':>10}{'pml/ours':>10}{'torch/ours':>11}{'peak ours':>11}{'peak torch':>11}"
    print(header)
    print("-" * len(header))
    pml_hard = BatchHardMiner(distance=CosineSimilarity())
    # margin 2 on similarities in [-1, 1]: every negative less similar than the positive
    pml_below = TripletMarginMiner(
        margin=2.0, type_of_triplets="semihard", distance=CosineSimilarity()
    )
    plain = {
        "batch_hard": torch_batch_hard,
        "semihard": torch_semihard,
        "semihard/drop": lambda x, labels: torch_semihard(x, labels, drop=True),
        "hard_negative": torch_hard_negative,
    }
    ours_options = {"semihard/drop": {"strategy": "semihard", "semihard_fallback": "drop"}}
    for strategy in ("batch_hard", "semihard", "semihard/drop", "hard_negative"):
        for b in sizes:
            x, labels = clustered(b, args.dim)
            options = ours_options.get(strategy, {"strategy": strategy})
            contenders: dict[str, Callable[[], object]] = {
                "ours": lambda x=x, labels=labels, o=options: triplet_mine(
                    x, labels, **o, **ours_kw
                ),
                "torch": lambda x=x, labels=labels, s=strategy: plain[s](x, labels),
            }
            if strategy == "batch_hard":
                contenders["pml"] = lambda x=x, labels=labels: pml_hard(x, labels)
            elif strategy == "semihard/drop" and b <= pml_semihard_max:
                contenders["pml"] = lambda x=x, labels=labels: hardest_per_pair(
                    x, pml_below(x, labels)
                )
            ours = contenders["ours"]()  # equal results first (also the warm-up)
            for name, fn in contenders.items():
                check_same(f"{strategy} B={b} {name}", fn(), ours, x)
            ms = time_interleaved(contenders, repeats)
            ours_peak = peak_mib(contenders["ours"])
            torch_peak = peak_mib(contenders["torch"])
            pml_ms = ms.get("pml")
            print(
                f"{strategy:<14}{b:>7}{fmt(ms['ours'], 2):>10}{fmt(pml_ms, 2):>10}{fmt(ms['torch'], 2):>10}"
                f"{fmt(None if pml_ms is None else pml_ms / ms['ours']):>10}{fmt(ms['torch'] / ms['ours']):>11}"
                f"{fmt(ours_peak):>11}{fmt(torch_peak):>11}"
            )

    # batch_all with a uniform subset: bounded memory whatever the number of violators.
    b = sizes[-1]
    x, labels = clustered(b, args.dim)
    kw = {"strategy": "batch_all", "margin": 0.1, "max_triplets": 100_000, "seed": 0, **ours_kw}
    triplet_mine(x, labels, **kw)
    ms = time_interleaved({"ours": lambda: triplet_mine(x, labels, **kw)}, max(1, repeats // 2))
    peak = peak_mib(lambda: triplet_mine(x, labels, **kw))
    counts = (
        triplet_mine(x, labels, **{**kw, "max_triplets": None})[0].numel() if args.quick else None
    )
    print(
        f"{'batch_all':<14}{b:>7}{fmt(ms['ours'], 2):>10}{'-':>10}{'-':>10}{'-':>10}{'-':>11}{fmt(peak):>11}{'-':>11}"
        f"   max_triplets=100000 (pml TripletMarginMiner 'all' needs B³ masks: not run)"
        + (f"; {counts} violating in total" if counts is not None else "")
    )

    if args.skip_offline:
        return
    n = 2_000 if args.quick else args.offline_n
    n_pos, n_neg, n_triplets = 5, 20, 20
    x, labels = clustered(n, args.dim, seed=1)
    contenders = {
        "ours": lambda: triplet_mine(
            x,
            labels,
            strategy="offline",
            n_pos=n_pos,
            n_neg=n_neg,
            n_triplets=n_triplets,
            **ours_kw,
        ),
        "torch": lambda: torch_offline(x, labels, n_pos, n_neg, n_triplets),
    }
    check_same(f"offline N={n} torch", contenders["torch"](), contenders["ours"](), x)
    ms = time_interleaved(contenders, 1 if args.quick else args.offline_repeats)
    ours_peak = peak_mib(contenders["ours"])
    torch_peak = peak_mib(contenders["torch"])
    print(
        f"{'offline':<14}{n:>7}{fmt(ms['ours'], 0):>10}{'-':>10}{fmt(ms['torch'], 0):>10}{'-':>10}"
        f"{fmt(ms['torch'] / ms['ours']):>11}{fmt(ours_peak):>11}{fmt(torch_peak):>11}"
        f"   n_pos={n_pos} n_neg={n_neg} n_triplets={n_triplets}; torch blocked by 256 anchors"
    )


if __name__ == "__main__":
    main()
