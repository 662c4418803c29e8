"""End-to-end latency: a 12-megapixel JPEG on disk -> the identified instance.

Ours (``pyinstance.Identifier``: JPEG draft-mode decode, the fastest installed engine,
``knn_dot`` search, classifier) against the plain pipeline of the same recipe (Pillow full
decode, antialiased resize, eager torch backbone + windows, numpy matmul + max + argmax),
both on an index of the museum references plus random references up to ``--references``,
at each thread count, interleaved; plus throughput with 4 queries in flight. The answers of
both are checked equal before anything is timed.

    python benchmarks/latency.py                 # 10,000 references, 1 and 2 threads
    python benchmarks/latency.py --quick         # smoke run (CI)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pyinstance.data import Manifest
from pyinstance.data.images import image_tensor, normalize, resize, scaled_size
from pyinstance.identification import Identifier
from pyinstance.index import DEFAULT_RECIPE, InstanceIndex
from pyinstance.models.regions import pool_windows


def museum() -> Path:
    """``$PYINSTANCE_SHARED/data/museum``, else beside the repository, else /work/shared."""
    repo = Path(__file__).resolve().parents[1]
    roots = [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    for root in [*roots, repo.parent / "shared", Path("/work/shared")]:
        if (root / "data" / "museum" / "manifest.csv").is_file():
            return root / "data" / "museum"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


PHONE = (4032, 3024)


def phone_jpegs(entries: list, folder: Path) -> list[Path]:
    """The query photos upscaled to 12 megapixels and saved as a phone would (quality 92)."""
    paths = []
    for number, entry in enumerate(entries):
        image = Image.open(entry.path).convert("RGB")
        size = PHONE if image.width >= image.height else PHONE[::-1]
        path = folder / f"phone{number}.jpg"
        image.resize(size, Image.Resampling.BICUBIC).save(path, quality=92)
        paths.append(path)
    return paths


def build_index(folder: Path, manifest: Manifest, references: int) -> InstanceIndex:
    """The museum references, then random unit descriptors up to ``references`` rows."""
    index, _ = InstanceIndex.build(folder / "index", manifest.root / "manifest.csv", progress=True)
    extra = references - len(index)
    rng = np.random.default_rng(0)
    for start in range(0, max(extra, 0), 1000):
        rows = rng.standard_normal((min(1000, extra - start), index.recipe.dim), np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        ids = [f"random-{start + i}" for i in range(len(rows))]
        index.add_descriptors(rows, ids, ids, index.recipe)
    return index


class Plain:
    """The same recipe with Pillow, eager torch and numpy: what one writes without us."""

    def __init__(self, index: InstanceIndex):
        self.backbone, self.head = index.describer.backbone, index.describer.head
        self.recipe = index.recipe
        self.references = np.ascontiguousarray(index.descriptors(), dtype=np.float32)
        self.labels = index.labels()
        self.instances = index.instances

    def __call__(self, path: Path) -> tuple[str, dict[str, float]]:
        start = time.perf_counter()
        pixels = image_tensor(Image.open(path).convert("RGB"))
        size = scaled_size(*pixels.shape[1:], self.recipe.query_side)
        batch = normalize(
            resize(pixels, size)[None], self.backbone.input_mean, self.backbone.input_std
        )
        decoded = time.perf_counter()
        with torch.inference_mode():
            windows = pool_windows(self.backbone(batch), self.head, self.recipe.query_windows)
        described = time.perf_counter()
        scores = (self.references @ windows[0].numpy().T).max(axis=1)
        best = int(np.argmax(scores))
        searched = time.perf_counter()
        ms = {
            "decode": decoded - start,
            "extract": described - decoded,
            "search": searched - described,
            "total": searched - start,
        }
        return self.instances[self.labels[best]], {k: v * 1e3 for k, v in ms.items()}


def ours(identifier: Identifier, path: Path) -> tuple[str | None, dict[str, float]]:
    (answer,) = identifier.identify([path])
    return answer.instance, answer.ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--references", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=6, help="12 MP photos timed")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (min kept)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 queries, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.repeats, args.threads = 2, 1, [1]
    manifest = Manifest.read(museum() / "manifest.csv")
    entries = [e for e in manifest if e.split == "query"][: args.queries]
    assert DEFAULT_RECIPE.query_windows is not None, "the plain pipeline mirrors a windowed recipe"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        photos = phone_jpegs(entries, folder)
        index = build_index(folder, manifest, args.references)
        plain = Plain(index)
        print(f"{len(index)} references; engine {index.describer.set_engine('auto')}")
        rows = []
        for threads in args.threads:
            torch.set_num_threads(threads)
            index.describer.set_engine("auto", threads=threads)
            identifier = Identifier(index, threshold=0)
            for photo in photos:  # equal answers before timing (and a warm-up)
                assert ours(identifier, photo)[0] == plain(photo)[0], photo
            times: dict[str, list[dict[str, float]]] = {"ours": [], "plain": []}
            for _ in range(args.repeats):
                for photo in photos:
                    times["ours"].append(ours(identifier, photo)[1])
                    times["plain"].append(plain(photo)[1])
            with ThreadPoolExecutor(4) as pool:
                start = time.perf_counter()
                list(pool.map(identifier.identify, [[p] for p in photos * 2]))
                throughput = 2 * len(photos) / (time.perf_counter() - start)
            rows.append((threads, times, throughput))
        index.close()
    print(f"\nEnd to end from a {PHONE[0]}×{PHONE[1]} JPEG, median ms per query by stage:")
    print(
        "| threads | pipeline | decode | extract | search | total | plain ÷ ours | q/s, 4 in flight |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for threads, times, throughput in rows:
        median = {
            who: {
                k: statistics.median(t[k] for t in runs)
                for k in ("decode", "extract", "search", "total")
            }
            for who, runs in times.items()
        }
        ratio = median["plain"]["total"] / median["ours"]["total"]
        for who in ("ours", "plain"):
            m = median[who]
            extra = f"{ratio:.2f}× | {throughput:.2f}" if who == "ours" else " | "
            print(
                f"| {threads} | {who} | {m['decode']:.1f} | {m['extract']:.1f} | "
                f"{m['search']:.1f} | {m['total']:.1f} | {extra} |"
            )


if __name__ == "__main__":
    main()
