"""Classifiers and open-set rejection on the museum set (real photos), per classifier.

Descriptors: EfficientNet-Lite0 + GeM at 448 px (single scale) of the 287 references, the
63 real queries, the 24 synthetic queries of one painting in the collection, the 4 photos of
paintings not in the collection and 2 synthetic copies of them (``unknown``; photos of two
paintings are left out), and ``--views``
augmented views per reference (:func:`pyinstance.classify.augment_views`). They are cached
in ``--cache`` (an .npz; the views beside it) and reused by later runs.

Per classifier (built-in defaults):

- P@1 without rejection per query kind: ``crops`` (qsd1_w1, qsd1_w3), ``gallery``
  (qsd2_w2, qsd2_w3, qsd1_w4), ``synthetic`` (hue-shifted / noisy copies of queries);
- a threshold fitted by :func:`pyinstance.classify.fit_threshold` for ``--far`` on the
  collection (leave-instance-out on the references and views, views as known queries),
  with the FAR/FRR it reaches there;
- at that threshold on the real queries: the known queries answered right (accepted and
  correct) per kind, and the not-in-collection photos rejected.

    python benchmarks/classify_museum.py [--views 3] [--far 0.05] [--cache FILE]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np

import pyinstance
from pyinstance.classify import augment_views, fit_threshold, reject
from pyinstance.data import Manifest, load_image
from pyinstance.index.neighbours import Neighbours
from pyinstance.ops import knn_dot

CLASSIFIERS = ("nn", "knn_vote", "knn_weighted", "mean_knn", "alpha_mean_knn", "instance_mean")
KINDS = {"qsd1_w1": "crops", "qsd1_w3": "crops", "qsd2_w2": "gallery", "qsd2_w3": "gallery"}
KINDS["qsd1_w4"] = "gallery"


def museum() -> Path:
    for candidate in (os.environ.get("PYINSTANCE_SHARED"), "/work/shared"):
        if candidate and (Path(candidate) / "data" / "museum").is_dir():
            return Path(candidate) / "data" / "museum"
    raise SystemExit("shared/data/museum not found (set PYINSTANCE_SHARED)")


def describe(images: list, label: str) -> np.ndarray:
    start = time.perf_counter()
    out = pyinstance.extract(images, "efficientnet_lite0", "gem", max_side=448, progress=False)
    print(f"  {label}: {len(images)} images in {time.perf_counter() - start:.0f} s")
    return out[:, 0].numpy()


def cached(path: Path, make) -> dict[str, np.ndarray]:
    """The arrays saved at ``path``, or ``make()``'s, saved there atomically."""
    if path.is_file():
        return dict(np.load(path))
    data = make()
    temporary = path.with_suffix(".tmp.npz")
    np.savez(temporary, **data)
    os.replace(temporary, path)
    return data


def load(root: Path, views: int, cache: Path) -> dict[str, np.ndarray]:
    manifest = Manifest.read(root / "manifest.csv")
    refs = manifest.filter(split="reference")
    code = {name: i for i, name in enumerate(refs.instance_ids)}

    def photos() -> dict[str, np.ndarray]:
        queries = manifest.filter(split="query")
        with (root / "extra_queries.csv").open(newline="") as handle:
            extra = [row for row in csv.DictReader(handle) if ";" not in row["instance_ids"]]
        print("describing (EfficientNet-Lite0 + GeM, 448 px):")
        return {
            "refs": describe(refs.paths, "references"),
            "ref_codes": np.arange(len(code)),
            "queries": describe(queries.paths + [root / row["path"] for row in extra], "queries"),
            "query_codes": np.array(
                [code[i] for i in queries.instance_ids]
                + [code.get(row["instance_ids"], -1) for row in extra]
            ),
            "query_kinds": np.array(
                [KINDS[s] for s in queries.query_sets]
                + ["synthetic" if row["instance_ids"] in code else "unknown" for row in extra]
            ),
        }

    def augmented() -> dict[str, np.ndarray]:
        images = [
            view
            for path in refs.paths
            for view in augment_views(load_image(path), count=views, seed=1)
        ]
        return {
            "views": describe(images, "augmented views"),
            "view_codes": np.repeat(np.arange(len(code)), views),
        }

    data = {k: v for k, v in cached(cache, photos).items() if not k.startswith("view")}
    if views:
        data |= cached(cache.with_name(f"{cache.stem}-views{views}.npz"), augmented)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--views", type=int, default=3, help="augmented views per reference (0: none)"
    )
    parser.add_argument("--far", type=float, default=0.05, help="target false-accept rate")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/pyinstance-classify-museum.npz"))
    args = parser.parse_args()
    data = load(museum(), args.views, args.cache)
    refs, codes = data["refs"], data["ref_codes"]
    queries, truth, kinds = data["queries"], data["query_codes"], data["query_kinds"]
    names = tuple(map(str, codes))
    known_kinds = ("crops", "gallery", "synthetic")
    counts = {kind: int((kinds == kind).sum()) for kind in (*known_kinds, "unknown")}
    print(
        f"\nqueries: {counts}; references: {len(codes)}; views: {len(data['views'])}; "
        f"target FAR {args.far}"
    )
    header = (
        f"{'classifier':<15}" + "".join(f"{'P@1 ' + k:>14}" for k in known_kinds)
        + f"{'threshold':>10}{'fit FAR':>8}{'fit FRR':>8}"
        + "".join(f"{'right ' + k:>16}" for k in known_kinds) + f"{'unknown rej.':>13}"
    )  # fmt: skip
    print(header)
    for name in CLASSIFIERS:
        classifier = pyinstance.get_classifier(name)
        fit = fit_threshold(
            classifier, refs, codes, target_far=args.far,
            views=data.get("views"), view_labels=data.get("view_codes"),
        )  # fmt: skip
        k = max(classifier.k, 1)
        scores, index = knn_dot(queries, refs, k)
        prediction = classifier.predict(Neighbours(scores, index, codes[index], names), queries)
        answered = reject(prediction, fit.threshold).labels
        row = f"{name:<15}"
        for kind in known_kinds:
            mask = kinds == kind
            row += f"{(prediction.labels[mask] == truth[mask]).mean():>14.3f}"
        frr = "-" if fit.frr is None else f"{fit.frr:.3f}"
        row += f"{fit.threshold:>10.3f}{fit.far:>8.3f}{frr:>8}"
        for kind in known_kinds:
            mask = kinds == kind
            row += f"{(answered[mask] == truth[mask]).mean():>16.3f}"
        unknown = kinds == "unknown"
        row += f"{int((answered[unknown] == -1).sum()):>9d} / {int(unknown.sum())}"
        print(row)


if __name__ == "__main__":
    main()
