"""Effect of each post-processing method on the museum set (EfficientNet-Lite0 + GeM, 448 px).

Descriptors: ``--cache`` (an ``.npz`` with ``ref``, ``ref_labels``, ``query``,
``query_labels``, ``query_sets``; default ``/work/cache/museum_lite0_gem448.npz``) when it
exists, else extracted here from ``shared/data/museum`` (one thread, a few minutes) and
written to ``--cache`` if that is given. The queries are the manifest's queries plus the
``not_in_collection`` and ``multiple_paintings`` rows of ``extra_queries.csv`` (when the
cache has no ``extra`` arrays, those are extracted here).

Retrieval: exact dot-product k-NN over all references. Identification for micro-AP: the
top-1 reference's instance, its score as the confidence, every query answered (no
threshold), so a confident answer to an unknown painting lowers micro-AP.

Columns: P@1 on the crops (``qsd1_w1``, ``qsd1_w3``) and on the gallery shots
(``qsd2_w2``, ``qsd2_w3``, ``qsd1_w4``) of the manifest, mAP over all known queries,
micro-AP over all queries.

With ``--multiscale`` every image is also described at scales 1, 1/√2 and 1/2 (of 448
px) and the multi-scale rows compare sum aggregation with the similarity-matrix scores.

    python -P benchmarks/postprocess.py [--cache PATH] [--multiscale]
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pyinstance
from pyinstance.data import Manifest
from pyinstance.eval import count_relevant, hits_from_labels, identification_metrics
from pyinstance.ops import knn_dot
from pyinstance.postprocess import (
    REDUCTIONS,
    DatabaseAugmentation,
    PCAWhitening,
    QueryExpansion,
    ScaleAggregation,
    multiscale_search,
)

CROP_SETS = ("qsd1_w1", "qsd1_w3")
GALLERY_SETS = ("qsd2_w2", "qsd2_w3", "qsd1_w4")
EXTRA_KINDS = ("not_in_collection", "multiple_paintings")
DEFAULT_CACHE = Path("/work/cache/museum_lite0_gem448.npz")
MULTI_SCALES = (1.0, 2**-0.5, 0.5)


def museum_dir() -> Path:
    candidates = (
        [Path(os.environ["PYINSTANCE_SHARED"])] if "PYINSTANCE_SHARED" in os.environ else []
    )
    candidates += [Path(__file__).resolve().parents[1] / ".." / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "data" / "museum").is_dir():
            return candidate / "data" / "museum"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


def extract(paths: list[Path], scales: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """N×D descriptors at scale 1, or N×S×D at several scales."""
    descriptors = pyinstance.extract(
        [str(path) for path in paths],
        "efficientnet_lite0",
        "gem",
        scales=scales,
        max_side=448,
        progress=False,
    )
    descriptors = descriptors.numpy().astype(np.float32)
    return descriptors[:, 0] if scales == (1.0,) else descriptors


def extra_rows(museum: Path) -> tuple[list[Path], list[str], list[str]]:
    """Paths, kinds and ``;``-joined instance ids of the extra queries kept here."""
    with (museum / "extra_queries.csv").open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["kind"] in EXTRA_KINDS]
    return (
        [museum / row["path"] for row in rows],
        [row["kind"] for row in rows],
        [row["instance_ids"] or "" for row in rows],
    )


def load(cache: Path, write: bool, multiscale: bool) -> dict[str, np.ndarray]:
    museum = museum_dir()
    data: dict[str, np.ndarray] = {}
    changed = not cache.is_file()
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            data = {key: stored[key] for key in stored.files}
        print(f"descriptors from {cache}: {', '.join(f'{k}{v.shape}' for k, v in data.items())}")
    else:
        manifest = Manifest.read(museum / "manifest.csv")
        references, queries = manifest.filter(split="reference"), manifest.filter(split="query")
        print(f"{cache} not found: extracting {len(references) + len(queries)} images")
        data["ref"], data["ref_labels"] = (
            extract(references.paths),
            np.array(references.instance_ids),
        )
        data["query"], data["query_labels"] = extract(queries.paths), np.array(queries.instance_ids)
        data["query_sets"] = np.array([s or "" for s in queries.query_sets])
    if "extra" not in data or "extra_labels" not in data:
        paths, kinds, labels = extra_rows(museum)
        changed = True
        print(f"extracting {len(paths)} extra queries ({', '.join(EXTRA_KINDS)})")
        data["extra"], data["extra_kinds"], data["extra_labels"] = (
            extract(paths),
            np.array(kinds),
            np.array(labels),
        )
    if multiscale and "ref_ms" not in data:
        manifest = Manifest.read(museum / "manifest.csv")
        references, queries = manifest.filter(split="reference"), manifest.filter(split="query")
        if (
            list(data["ref_labels"]) != references.instance_ids
            or list(data["query_labels"]) != queries.instance_ids
        ):
            raise SystemExit(f"{cache}: rows are not in manifest order; cannot add scales to it")
        paths = {
            "ref_ms": references.paths,
            "query_ms": queries.paths,
            "extra_ms": extra_rows(museum)[0],
        }
        changed = True
        print(f"extracting every image at scales {MULTI_SCALES}")
        for key, images in paths.items():
            data[key] = extract(images, MULTI_SCALES)
    if write and changed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_name(cache.name + ".tmp.npz")
        np.savez(temporary, **data)
        temporary.replace(cache)
    return data


def dot_search(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every reference ranked for each query by dot product, and the top-1 scores."""
    scores, order = knn_dot(np.ascontiguousarray(queries), references, references.shape[0])
    return order, scores[:, 0]


def evaluate(order: np.ndarray, confidence: np.ndarray, labels: dict[str, Any]) -> dict[str, float]:
    """The table's columns for full rankings ``order`` and top-1 ``confidence``."""
    hits = hits_from_labels(labels["refs"][order], labels["queries"])
    counts = count_relevant(labels["queries"], labels["refs"])
    correct = hits[:, 0]
    metrics = identification_metrics(hits, counts, correct, confidence, np.ones_like(correct))
    group = labels["groups"]
    return {
        "crop": float(hits[np.isin(group, CROP_SETS), 0].mean()),
        "gallery": float(hits[np.isin(group, GALLERY_SETS), 0].mean()),
        "map": metrics["map"],
        "micro_ap": metrics["micro_ap"],
    }


def single_scale_rows(
    queries: np.ndarray, refs: np.ndarray, labels: dict[str, Any], threads: int
) -> list[tuple[str, dict[str, float]]]:
    rows = [("baseline", evaluate(*dot_search(queries, refs), labels))]
    for dim, power, ridge in [(128, 1.0, 0.0), (256, 0.5, 0.0), (256, 1.0, 0.1), (286, 0.5, 0.0)]:
        whitening = PCAWhitening.fit(refs, dim=dim, power=power, ridge=ridge)
        search = dot_search(whitening.apply(queries), whitening.apply(refs))
        rows.append((f"PCA-w refs d={dim} power={power} ridge={ridge}", evaluate(*search, labels)))
    for k in (1, 2, 3):
        augmented = DatabaseAugmentation(k=k).apply(refs, threads=threads)
        rows.append((f"DBA k={k}", evaluate(*dot_search(queries, augmented), labels)))
    for k, alpha in [(1, 0.0), (2, 0.0), (3, 3.0), (5, 3.0)]:
        expanded = QueryExpansion(k=k, alpha=alpha).apply(queries, refs, threads=threads)
        name = f"AQE k={k}" if alpha == 0 else f"alpha-QE k={k} alpha={alpha}"
        rows.append((name, evaluate(*dot_search(expanded, refs), labels)))
    augmented = DatabaseAugmentation(k=1).apply(refs, threads=threads)
    expanded = QueryExpansion(k=3, alpha=3.0).apply(queries, augmented, threads=threads)
    rows.append(("DBA k=1 + alpha-QE k=3", evaluate(*dot_search(expanded, augmented), labels)))
    return rows


def multi_scale_rows(
    queries: np.ndarray, refs: np.ndarray, labels: dict[str, Any]
) -> list[tuple[str, dict[str, float]]]:
    scales = ", ".join(f"{scale:.2f}" for scale in MULTI_SCALES)
    rows = []
    for weights in ([1.0, 1.0, 1.0], [1.0, 1.0, 0.0]):
        aggregation = ScaleAggregation(weights)
        search = dot_search(aggregation.apply(queries), aggregation.apply(refs))
        rows.append((f"scales {scales}: sum, weights {weights}", evaluate(*search, labels)))
    for reduction in REDUCTIONS:
        scores, order = multiscale_search(queries, refs, refs.shape[0], reduction)
        rows.append((f"scales {scales}: matrix {reduction}", evaluate(order, scores[:, 0], labels)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="descriptor .npz to read/write")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--multiscale", action="store_true", help=f"also rows at scales {MULTI_SCALES}"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.cache or DEFAULT_CACHE, args.cache is not None, args.multiscale)

    refs = np.ascontiguousarray(data["ref"], dtype=np.float32)
    queries = np.concatenate([data["query"], data["extra"]]).astype(np.float32)
    query_labels: list[object] = list(data["query_labels"])
    for kind, ids in zip(data["extra_kinds"], data["extra_labels"], strict=True):
        query_labels.append(None if kind == "not_in_collection" else set(str(ids).split(";")))
    labels = {
        "refs": np.asarray(data["ref_labels"]).astype(str),
        "queries": query_labels,
        "groups": np.concatenate([data["query_sets"].astype(str), data["extra_kinds"].astype(str)]),
    }
    print(
        f"{refs.shape[0]} references (D={refs.shape[1]}), {queries.shape[0]} queries "
        f"({int(np.isin(labels['groups'], CROP_SETS).sum())} crops, "
        f"{int(np.isin(labels['groups'], GALLERY_SETS).sum())} gallery shots, "
        f"{data['extra'].shape[0]} extra)"
    )

    rows = single_scale_rows(queries, refs, labels, args.threads)
    if args.multiscale:
        multi = np.concatenate([data["query_ms"], data["extra_ms"]]).astype(np.float32)
        rows += multi_scale_rows(multi, data["ref_ms"].astype(np.float32), labels)

    print("\n| method | P@1 crop | P@1 gallery | mAP | micro-AP |\n|---|---|---|---|---|")
    for name, row in rows:
        print(
            f"| {name} | {row['crop']:.3f} | {row['gallery']:.3f} | {row['map']:.3f} | {row['micro_ap']:.3f} |"
        )


if __name__ == "__main__":
    main()
