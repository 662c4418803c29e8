"""What the verification re-ranker adds per query: re-ranking the top k on one thread.

    python benchmarks/rerank.py                         # D=1280, R=19 windows, N=287, k=10
    python benchmarks/rerank.py --model runs/museum-verify/verifier.pt
    python benchmarks/rerank.py --quick                 # fewer repeats, a smoke run

One query at a time (the service's case), one thread. The anchor, measured in the same
run with repeats interleaved, is what identification already does after describing the
photo: the exact search of its R window descriptors (``knn_dot``, best window per
reference) and the ``nn`` classifier. The re-ranker's part is
:meth:`pyinstance.classify.Reranking.rerank` over the classifier's answer: looking the k
candidates up, the verification network on the k pairs, the new ranking. The target of
issue 17 is at most 20 ms for k = 10 on one core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pyinstance.classify import NearestNeighbour, Reranking
from pyinstance.index import Neighbours
from pyinstance.ops import knn_dot
from pyinstance.rerank import VerificationNet, VerificationReranker, VerifierFile


def unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    rows = rng.normal(size=shape).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def search(windows: np.ndarray, refs: np.ndarray, codes: np.ndarray, k: int) -> Neighbours:
    """The index's search of one query: k-NN per window, a reference scored by its best."""
    scores, rows = knn_dot(windows, refs, k, threads=1)
    best = np.full(refs.shape[0], -np.inf, np.float32)
    np.maximum.at(best, rows.ravel(), scores.ravel())
    order = np.argsort(-best, kind="stable")[:k]
    names = tuple(str(c) for c in range(int(codes.max()) + 1))
    return Neighbours(best[order][None], order[None], codes[order][None], names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained verifier file (default: an untrained one)")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--windows", type=int, default=19)
    parser.add_argument("--references", type=int, default=287)
    parser.add_argument("--k", type=int, default=10, help="candidates re-ranked")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="30 repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 30 if args.quick else args.repeats
    if args.model:
        scorer = VerificationReranker(model=args.model, k=args.k, threads=1)
        dim = scorer.net.dim
    else:
        import tempfile
        from pathlib import Path

        from pyinstance.index import DEFAULT_RECIPE

        dim = args.dim
        net = VerificationNet(dim)
        folder = Path(tempfile.mkdtemp())
        path = VerifierFile(
            net.options(), net.state_dict(), args.k, DEFAULT_RECIPE.with_(dim=dim).to_dict()
        ).save(folder / "verifier.pt")
        scorer = VerificationReranker(model=path, threads=1)
    rng = np.random.default_rng(0)
    refs = unit(rng, args.references, dim)
    codes = np.arange(args.references, dtype=np.int64)
    classifier = NearestNeighbour(k=1).fit(refs, codes)
    stage = Reranking(scorer, refs)
    found = min(args.references, max(args.k, 20))
    queries = [unit(rng, 1, args.windows, dim) for _ in range(16)]

    anchor, reranking = [], []
    for repeat in range(repeats + 5):
        query = queries[repeat % len(queries)]
        start = time.perf_counter()
        neighbours = search(query[0], refs, codes, found)
        prediction = classifier.predict(neighbours, query)
        searched = time.perf_counter()
        stage.rerank(query, neighbours, prediction)
        done = time.perf_counter()
        if repeat >= 5:  # warm-up
            anchor.append((searched - start) * 1e3)
            reranking.append((done - searched) * 1e3)

    print(
        f"re-ranking the top {args.k} of one query on one thread (D={dim}, R={args.windows}, "
        f"N={args.references}, {repeats} repeats, "
        f"{'model ' + args.model if args.model else 'untrained network'})"
    )
    print(f"{'':34}{'min ms':>9}{'median ms':>11}")
    for name, times in (("search + nn classifier (anchor)", anchor), ("re-ranking", reranking)):
        print(f"{name:34}{min(times):9.3f}{statistics.median(times):11.3f}")
    ratio = statistics.median(reranking) / statistics.median(anchor)
    print(f"re-ranking / anchor (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
