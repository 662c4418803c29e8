"""Which recipe identifies museum paintings best: backbones, heads, sizes, scales, query windows.

Off-the-shelf (no training) recipes measured on the museum development set
(``manifest.csv`` + ``extra_queries.csv``, see ``/work/shared/data/README.md``):

    python benchmarks/recipes.py extract   # CNN passes, cached per (backbone, max_side)
    python benchmarks/recipes.py evaluate  # every recipe from the caches -> results/recipes.{json,md}
    python benchmarks/recipes.py latency   # per-query time by stage on one CPU thread

``extract`` runs every image once per (backbone, max_side) and keeps, from that one
feature map, the GeM, MAC, SPoC and R-MAC descriptors and (Lite0) the GeM descriptors of
each window of several window layouts (:func:`pyinstance.models.regions.pool_windows`);
the caches are ``npz`` files under ``--cache``. ``evaluate`` scores references with
``pyinstance.ops.knn_dot`` (a query with windows scores a reference by its best window)
and reports P@1 per kind of query, micro-AP with the not-in-collection queries counted,
and the acceptance threshold for 5 % false accepts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import pyinstance
from pyinstance.data import Manifest
from pyinstance.data.images import image_tensor, load_image, normalize, resize, scaled_size
from pyinstance.models.regions import DEFAULT_WINDOWS, pool_windows
from pyinstance.ops import knn_dot

DATA = Path("/work/shared/data/museum")
CACHE = Path("/work/cache")
RESULTS = Path(__file__).parent / "results"
GLOBAL_HEADS = ("gem", "mac", "spoc", "rmac")
#: Window layouts tried on queries: (fraction of each side, grid count) pairs.
LAYOUTS: dict[str, tuple[tuple[float, int], ...]] = {
    "w5": ((1.0, 1), (0.7, 2)),
    "w10": ((1.0, 1), (0.75, 3)),
    "w19": DEFAULT_WINDOWS,
    "w30": ((1.0, 1), (0.8, 2), (0.6, 3), (0.4, 4)),
}
#: (backbone, max_side, images) feature maps extracted, most useful first; Lite0 also keeps
#: window descriptors. ``queries``: the queries only (their references come from another size).
FEATURE_RUNS: tuple[tuple[str, int, str], ...] = (
    ("efficientnet_lite0", 448, "all"),
    ("efficientnet_lite0", 640, "queries"),
    ("efficientnet_lite0", 640, "all"),
    ("efficientnet_lite1", 448, "all"),
    ("efficientnet_lite2", 448, "all"),
    ("efficientnet_lite0", 560, "queries"),
    ("efficientnet_lite0", 314, "all"),
    ("efficientnet_lite1", 640, "queries"),
    ("efficientnet_lite1", 640, "all"),
    ("efficientnet_lite2", 640, "all"),
)
#: (first stage, second stage, margins below which the second stage answers).
CASCADES: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("lite0 gem 448", "lite0 gem ref 448 / query w19 640", (0.02, 0.05, 0.1)),
    ("lite0 gem 448", "lite0 gem ref 448 / query 640", (0.02, 0.05, 0.1)),
)
GALLERY_SETS = ("qsd2_w2", "qsd2_w3", "qsd1_w4")  # wall, frame, neighbours: the hard kind
FALSE_ACCEPT = 0.05


# -- data --------------------------------------------------------------------------------
@dataclass
class Museum:
    """The museum set in a fixed order: references, queries, extra queries."""

    ref_paths: list[Path]
    ref_labels: list[str]
    query_paths: list[Path]
    query_labels: list[str]
    query_sets: list[str]
    extra_paths: list[Path]
    extra_labels: list[str]  # ";"-separated instance ids, "" for not in the collection
    extra_kinds: list[str]

    @classmethod
    def read(cls, root: Path) -> Museum:
        manifest = Manifest.read(root / "manifest.csv")
        refs = manifest.filter(split="reference")
        queries = manifest.filter(split="query")
        extra_paths, extra_labels, extra_kinds = [], [], []
        for line in (root / "extra_queries.csv").read_text().splitlines()[1:]:
            path, ids, kind, _ = line.split(",")
            extra_paths.append(root / path)
            extra_labels.append("" if kind == "not_in_collection" else ids)
            extra_kinds.append(kind)
        return cls(
            refs.paths,
            refs.instance_ids,
            queries.paths,
            queries.instance_ids,
            [s or "" for s in queries.query_sets],
            extra_paths,
            extra_labels,
            extra_kinds,
        )

    @property
    def all_paths(self) -> list[Path]:
        return self.ref_paths + self.query_paths + self.extra_paths

    def split(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, q = len(self.ref_paths), len(self.query_paths)
        return array[:r], array[r : r + q], array[r + q :]


# -- extraction ------------------------------------------------------------------------------
class ManyHeads(nn.Module):
    """Every descriptor of one feature map, concatenated: global heads, then windows (GeM)."""

    def __init__(
        self,
        in_channels: int,
        heads: Sequence[str],
        layouts: dict[str, tuple[tuple[float, int], ...]],
    ):
        super().__init__()
        self.in_channels = in_channels
        self.heads = nn.ModuleDict(
            {n: pyinstance.get_head(n, in_channels=in_channels) for n in heads}
        )
        self.layouts = layouts
        windows = sum(count * count for layout in layouts.values() for _, count in layout)
        self.out_dim = in_channels * (len(heads) + windows)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = [head(features) for head in self.heads.values()]
        parts += [
            pool_windows(features, self.heads["gem"], layout).flatten(1)
            for layout in self.layouts.values()
        ]
        return torch.cat(parts, dim=1)

    def split(self, out: torch.Tensor) -> dict[str, np.ndarray]:
        """The concatenated output back into one array per head / window layout."""
        dim = self.in_channels
        arrays: dict[str, np.ndarray] = {}
        offset = 0
        for name in self.heads:
            arrays[name] = out[:, offset : offset + dim].numpy()
            offset += dim
        for name, layout in self.layouts.items():
            count = sum(c * c for _, c in layout)
            windows = out[:, offset : offset + count * dim].reshape(len(out), count, dim)
            arrays[name] = windows.to(torch.float16).numpy()
            offset += count * dim
        return arrays


def cache_path(cache: Path, backbone: str, side: int, images: str = "all") -> Path:
    suffix = "" if images == "all" else f"_{images}"
    return cache / "recipes" / f"museum_{backbone}_{side}{suffix}.npz"


def extract_run(museum: Museum, backbone_name: str, side: int, images: str, cache: Path) -> Path:
    """One CNN pass per image at ``side``; every head's descriptors saved to an npz.

    References get the global heads; queries (and extras) also the windows of every layout
    (Lite0 only). Window arrays hold the query rows only.
    """
    path = cache_path(cache, backbone_name, side, images)
    if path.is_file() or cache_path(cache, backbone_name, side).is_file():
        return path
    backbone = pyinstance.get_backbone(backbone_name)
    heads = GLOBAL_HEADS if (backbone_name, side) == ("efficientnet_lite0", 448) else ("gem",)
    layouts = LAYOUTS if backbone_name == "efficientnet_lite0" else {}
    query_paths = museum.query_paths + museum.extra_paths
    started = time.perf_counter()
    query_heads = ManyHeads(backbone.out_channels, heads, layouts)
    queries_only = cache_path(cache, backbone_name, side, "queries")
    if queries_only.is_file():  # a queries-only run already made them: add the references
        arrays = {k: v for k, v in np.load(queries_only).items() if k != "seconds"}
    else:
        arrays = query_heads.split(
            pyinstance.extract(query_paths, backbone, query_heads, max_side=side, progress=False)[
                :, 0
            ]
        )
    if images == "all":
        ref_heads = ManyHeads(backbone.out_channels, heads, {})
        refs = ref_heads.split(
            pyinstance.extract(
                museum.ref_paths, backbone, ref_heads, max_side=side, progress=False
            )[:, 0]
        )
        for name in heads:
            arrays[name] = np.concatenate([refs[name], arrays[name]])
    seconds = time.perf_counter() - started
    arrays["seconds"] = np.array(seconds)
    _save_npz(path, arrays)
    print(f"{backbone_name} {side}px ({images}): done in {seconds:.0f} s -> {path}", flush=True)
    return path


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, **arrays)
    partial.replace(path)


def save_baseline(museum: Museum, cache: Path) -> Path:
    """The plain Lite0 + GeM 448 px descriptors, in a layout other tools can read."""
    source = np.load(cache_path(cache, "efficientnet_lite0", 448))
    ref, query, extra = museum.split(source["gem"])
    path = cache / "museum_lite0_gem448.npz"
    _save_npz(
        path,
        {
            "ref": ref,
            "ref_labels": np.array(museum.ref_labels),
            "ref_paths": np.array([str(p) for p in museum.ref_paths]),
            "query": query,
            "query_labels": np.array(museum.query_labels),
            "query_sets": np.array(museum.query_sets),
            "query_paths": np.array([str(p) for p in museum.query_paths]),
            "extra": extra,
            "extra_labels": np.array(museum.extra_labels),
            "extra_kinds": np.array(museum.extra_kinds),
            "extra_paths": np.array([str(p) for p in museum.extra_paths]),
        },
    )
    return path


# -- recipes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How references and queries are described, from cached feature-map runs."""

    name: str
    backbone: str = "efficientnet_lite0"
    head: str = "gem"
    ref_sides: tuple[int, ...] = (448,)  # several: scales aggregated (mean, L2)
    query_sides: tuple[int, ...] = (448,)
    windows: str | None = None  # a LAYOUTS key: queries described by their windows
    group: str = ""

    @property
    def short(self) -> str:
        return self.backbone.replace("efficientnet_", "")


@dataclass
class Scores:
    """Per query: ranked instances and their scores (best first), from one recipe."""

    top: list[list[str]]
    values: np.ndarray  # Q × K, descending
    extras: dict[str, float] = field(default_factory=dict)


def load_descriptors(recipe: Recipe, cache: Path, museum: Museum) -> tuple[np.ndarray, np.ndarray]:
    """(references N×D, queries Q×R×D) of a recipe; R = 1 without windows."""
    refs = _aggregate(
        [
            museum.split(np.load(cache_path(cache, recipe.backbone, s))[recipe.head])[0]
            for s in recipe.ref_sides
        ]
    )
    key = recipe.windows or recipe.head
    parts = []
    for side in recipe.query_sides:
        parts.append(_query_rows(cache, recipe.backbone, side, key, museum))
    if recipe.windows is None:
        queries = _aggregate(parts)[:, None]
    else:
        queries = np.concatenate(parts, axis=1).astype(np.float32)  # windows of every size
    return refs, queries


def _query_rows(cache: Path, backbone: str, side: int, key: str, museum: Museum) -> np.ndarray:
    """Queries then extra queries of one cached run (a full run or a queries-only one)."""
    full = cache_path(cache, backbone, side)
    loaded = np.load(full if full.is_file() else cache_path(cache, backbone, side, "queries"))[key]
    if len(loaded) == len(museum.all_paths):  # every image: drop the references
        return loaded[len(museum.ref_paths) :]
    return loaded


def has_queries(cache: Path, backbone: str, side: int) -> bool:
    return any(cache_path(cache, backbone, side, i).is_file() for i in ("all", "queries"))


def _aggregate(parts: Sequence[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0], dtype=np.float32)
    stacked = torch.from_numpy(np.stack(parts, axis=1).astype(np.float32))
    return pyinstance.aggregate_scales(stacked).numpy()


def rank(refs: np.ndarray, queries: np.ndarray, labels: Sequence[str], k: int = 5) -> Scores:
    """Instances ranked per query; a reference scores by the query's best window."""
    count, windows, dim = queries.shape
    scores, indices = knn_dot(
        np.ascontiguousarray(queries.reshape(count * windows, dim)), refs, len(refs)
    )
    full = np.full((count * windows, len(refs)), -np.inf, dtype=np.float32)
    np.put_along_axis(full, indices, scores, axis=1)
    best = full.reshape(count, windows, len(refs)).max(axis=1)
    by_instance: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        by_instance.setdefault(label, []).append(row)
    names = list(by_instance)
    per_instance = np.stack([best[:, rows].max(axis=1) for rows in by_instance.values()], axis=1)
    order = np.argsort(-per_instance, axis=1, kind="stable")[:, :k]
    return Scores(
        [[names[j] for j in row] for row in order], np.take_along_axis(per_instance, order, axis=1)
    )


# -- metrics -------------------------------------------------------------------------------
def micro_ap(confidences: np.ndarray, correct: np.ndarray, known: int) -> float:
    """GAP: predictions by decreasing confidence, precision at each correct one, / known."""
    order = np.argsort(-confidences, kind="stable")
    hits = correct[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / known)


def threshold_for(unknown_confidences: np.ndarray, rate: float) -> float:
    """Smallest threshold that accepts at most ``rate`` of the unknowns (accept: conf > t)."""
    ordered = np.sort(unknown_confidences)[::-1]
    allowed = math.floor(rate * len(ordered))
    return float(ordered[allowed]) if allowed < len(ordered) else float("-inf")


@dataclass
class Outcome:
    """Per query (queries, then extras): the ranked instances and the two confidences.

    ``left_*``: the same for each of the dev queries once its own painting is removed from
    the collection: stand-ins for unknown objects, to set thresholds.
    """

    top: list[list[str]]
    top1: np.ndarray
    margin: np.ndarray
    left_top1: np.ndarray
    left_margin: np.ndarray
    escalated: float = 0.0  # cascade: fraction of queries that took the second stage


def run_recipe(recipe: Recipe, cache: Path, museum: Museum) -> Outcome:
    refs, queries = load_descriptors(recipe, cache, museum)
    ranked = rank(refs, queries, museum.ref_labels)
    left_top1, left_margin = [], []
    for i, label in enumerate(museum.query_labels):
        keep = [r for r, ref_label in enumerate(museum.ref_labels) if ref_label != label]
        again = rank(
            np.ascontiguousarray(refs[keep]),
            queries[i : i + 1],
            [museum.ref_labels[r] for r in keep],
            k=2,
        )
        left_top1.append(again.values[0, 0])
        left_margin.append(again.values[0, 0] - again.values[0, 1])
    return Outcome(
        ranked.top,
        ranked.values[:, 0],
        ranked.values[:, 0] - ranked.values[:, 1],
        np.array(left_top1),
        np.array(left_margin),
    )


def cascade(first: Outcome, second: Outcome, min_margin: float) -> Outcome:
    """The first stage's answer, or the second's where the first's margin is below ``min_margin``."""
    up = first.margin < min_margin
    left_up = first.left_margin < min_margin
    return Outcome(
        [b if u else a for a, b, u in zip(first.top, second.top, up, strict=True)],
        np.where(up, second.top1, first.top1),
        np.where(up, second.margin, first.margin),
        np.where(left_up, second.left_top1, first.left_top1),
        np.where(left_up, second.left_margin, first.left_margin),
        escalated=float(up[: len(first.left_top1)].mean()),
    )


def report(
    name: str, meta: dict[str, object], outcome: Outcome, museum: Museum
) -> dict[str, object]:
    """P@1 per kind of query, micro-AP with the unknowns, thresholds for 5 % false accepts."""
    truths = [{q} for q in museum.query_labels] + [
        set(ids.split(";")) if ids else set() for ids in museum.extra_labels
    ]
    kinds = ["gallery" if s in GALLERY_SETS else "crop" for s in museum.query_sets]
    kinds += museum.extra_kinds
    correct = np.array([top[0] in truth for top, truth in zip(outcome.top, truths, strict=True)])

    def p_at_1(selected: Sequence[str]) -> float:
        rows = [i for i, kind in enumerate(kinds) if kind in selected]
        return float(correct[rows].mean())

    result: dict[str, object] = {
        "recipe": name,
        **meta,
        "p1_crops": p_at_1(["crop"]),
        "p1_gallery": p_at_1(["gallery"]),
        "p1_overall": p_at_1(["crop", "gallery"]),
        "p1_multiple": p_at_1(["multiple_paintings"]),
        "p1_synthetic": p_at_1(["synthetic_MultiplyHue", "synthetic_UnnamedImpulseNoise"]),
        "wrong": [
            museum.query_paths[i].name for i in range(len(museum.query_paths)) if not correct[i]
        ],
        "escalated": outcome.escalated,
    }
    dev = [i for i, k in enumerate(kinds) if k in ("crop", "gallery", "not_in_collection")]
    unknown_rows = [i for i, k in enumerate(kinds) if k == "not_in_collection"]
    known = len(museum.query_labels)
    for confidence_name in ("top1", "margin"):
        confidence = getattr(outcome, confidence_name)
        result[f"micro_ap_{confidence_name}"] = micro_ap(confidence[dev], correct[dev], known)
        # unknowns: the 4 real ones + every dev query with its own painting removed
        unknown = np.concatenate(
            [confidence[unknown_rows], getattr(outcome, f"left_{confidence_name}")]
        )
        threshold = threshold_for(unknown, FALSE_ACCEPT)
        accepted = confidence[: len(museum.query_labels)] > threshold
        result[f"threshold_{confidence_name}_fa5"] = threshold
        result[f"accepted_right_{confidence_name}_fa5"] = float(
            (accepted & correct[: len(museum.query_labels)]).mean()
        )
        result[f"unknowns_accepted_{confidence_name}"] = int(
            (confidence[unknown_rows] > threshold).sum()
        )
    result["unknowns_for_threshold"] = len(unknown_rows) + len(outcome.left_top1)
    return result


def _meta(recipe: Recipe) -> dict[str, object]:
    return {
        "group": recipe.group,
        "backbone": recipe.short,
        "head": recipe.head,
        "ref_sides": list(recipe.ref_sides),
        "query_sides": list(recipe.query_sides),
        "windows": recipe.windows,
    }


def recipes() -> list[Recipe]:
    out = []
    for backbone in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        for side in (448, 640):
            short = backbone.replace("efficientnet_", "")
            out.append(
                Recipe(f"{short} gem {side}", backbone, "gem", (side,), (side,), group="global")
            )
    for head in ("mac", "spoc", "rmac"):  # extracted at 448 px only
        out.append(Recipe(f"lite0 {head} 448", head=head, group="heads"))
    for side in (448, 640):
        small = {448: 314, 640: 448}[side]
        out.append(
            Recipe(
                f"lite0 gem {side}+{small}",
                ref_sides=(side, small),
                query_sides=(side, small),
                group="multi-scale",
            )
        )
    out.append(Recipe("lite0 gem 560", ref_sides=(560,), query_sides=(560,), group="global"))
    for ref_side in (314, 448):  # queries larger than references: the object is small in them
        for query_side in (448, 560, 640):
            if query_side > ref_side:
                out.append(
                    Recipe(
                        f"lite0 gem ref {ref_side} / query {query_side}",
                        ref_sides=(ref_side,),
                        query_sides=(query_side,),
                        group="cross-scale",
                    )
                )
    out.append(
        Recipe(
            "lite1 gem ref 448 / query 640",
            "efficientnet_lite1",
            ref_sides=(448,),
            query_sides=(640,),
            group="cross-scale",
        )
    )
    out.append(
        Recipe(
            "lite0 gem ref 448 / query 640+448",
            ref_sides=(448,),
            query_sides=(640, 448),
            group="cross-scale",
        )
    )
    for layout in LAYOUTS:
        for query_side in (448, 560, 640):
            for ref_side in sorted({448, query_side}):
                out.append(
                    Recipe(
                        f"lite0 gem ref {ref_side} / query {layout} {query_side}",
                        ref_sides=(ref_side,),
                        query_sides=(query_side,),
                        windows=layout,
                        group="windows",
                    )
                )
    return out


# -- latency ---------------------------------------------------------------------------------
def latency(
    museum: Museum, cache: Path, repeats: int, threads: int, sides: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Median ms per query by stage (decode, CNN, pooling, search), Lite0 + GeM, 287 references.

    CPU time of the calling thread (``time.thread_time``, one torch thread), which a loaded
    machine inflates far less than wall time; ``wall`` is the wall-clock total.

    Search is ``knn_dot`` (k = 5 per query row) and, with windows, the merge of the windows'
    lists into one score per reference (its best window): exact, as a reference's best
    window lists it among that window's top k.
    """
    torch.set_num_threads(threads)
    backbone = pyinstance.get_backbone("efficientnet_lite0").eval()
    head = pyinstance.get_head("gem", in_channels=backbone.out_channels).eval()
    gallery = [
        p for p, s in zip(museum.query_paths, museum.query_sets, strict=True) if s in GALLERY_SETS
    ]
    sample = gallery[:: max(1, len(gallery) // repeats)][:repeats]
    refs = museum.split(np.load(cache_path(cache, "efficientnet_lite0", 448))["gem"])[0]
    refs = np.ascontiguousarray(refs, dtype=np.float32)
    out: dict[str, dict[str, float]] = {}
    for side in sides:
        for windows in (None, "w19", "w30"):
            stages: dict[str, list[float]] = {
                s: [] for s in ("decode", "cnn", "pool", "search", "wall")
            }
            for path in sample:
                with torch.inference_mode():
                    wall = time.perf_counter()
                    t0 = time.thread_time()
                    image = image_tensor(load_image(path))
                    image = resize(image, scaled_size(*image.shape[1:], side))
                    pixels = normalize(image[None], backbone.input_mean, backbone.input_std)
                    t1 = time.thread_time()
                    features = backbone(pixels)
                    t2 = time.thread_time()
                    if windows is None:
                        described = head(features)
                    else:
                        described = pool_windows(features, head, LAYOUTS[windows])[0]
                    t3 = time.thread_time()
                    scores, indices = knn_dot(described.numpy(), refs, 5, threads=threads)
                    best = np.full(len(refs), -np.inf, dtype=np.float32)
                    np.maximum.at(best, indices.ravel(), scores.ravel())
                    _ = np.argsort(-best)[:5]
                    t4 = time.thread_time()
                wall = time.perf_counter() - wall
                for stage, seconds in zip(
                    stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, wall), strict=True
                ):
                    stages[stage].append(seconds * 1000)
            name = f"lite0 gem {side}" + (f" {windows}" if windows else "")
            out[name] = {stage: statistics.median(values) for stage, values in stages.items()}
            out[name]["total"] = sum(out[name][s] for s in ("decode", "cnn", "pool", "search"))
            print(name, {k: round(v, 1) for k, v in out[name].items()}, flush=True)
    return out


# -- report ---------------------------------------------------------------------------------
NOTES_MARKER = "<!-- notes: kept when the tables are regenerated -->"


def write_markdown(results: list[dict[str, object]], latency_ms: dict | None, path: Path) -> None:
    """The results tables; hand-written notes below :data:`NOTES_MARKER` are kept."""
    notes = ""
    if path.is_file() and NOTES_MARKER in path.read_text():
        notes = path.read_text().split(NOTES_MARKER, 1)[1]
    lines = [
        "# Recipes on the museum set (off the shelf, no training)",
        "",
        "Generated by `python benchmarks/recipes.py evaluate` (P@1 per kind of query: crops =",
        "qsd1_w1 + qsd1_w3 (27), gallery shots = qsd2_w2 + qsd2_w3 + qsd1_w4 (36), overall = the",
        "63 dev queries; multiple = 5 photos with two paintings (right if either); synthetic = 30",
        "hue-shifted / noisy copies; micro-AP over the 63 dev queries + 4 not-in-collection",
        "photos, one prediction each, by the named confidence; '@5% FA': the share of the 63",
        "dev queries answered right *and* accepted at the threshold that accepts 5 % of the",
        "unknowns (the 4 real ones + the 63 dev queries with their own painting removed); last",
        "column: how many of the 4 real unknowns that threshold accepts).",
        "",
        "| recipe | crops | gallery | overall | multiple | synthetic | micro-AP top1 | micro-AP margin "
        "| right & accepted @5% FA (top1 / margin) | real unknowns accepted (top1 / margin) | escalated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['recipe']} | {r['p1_crops']:.3f} | {r['p1_gallery']:.3f} | {r['p1_overall']:.3f} | "
            f"{r['p1_multiple']:.3f} | {r['p1_synthetic']:.3f} | {r['micro_ap_top1']:.3f} | "
            f"{r['micro_ap_margin']:.3f} | {r['accepted_right_top1_fa5']:.3f} / "
            f"{r['accepted_right_margin_fa5']:.3f} | {r['unknowns_accepted_top1']} / "
            f"{r['unknowns_accepted_margin']} | {r['escalated']:.2f} |"
        )
    if latency_ms:
        lines += [
            "",
            "## Latency per query (ms, median CPU time of one thread, 287 references)",
            "",
            "Measured with `python benchmarks/recipes.py latency --threads 1` on a shared 2-core",
            "machine under a load of about 20: CPU times are inflated by contention (shared caches)",
            "and wall times far more; compare rows with each other, not with other machines.",
            "",
            "| recipe | decode+resize | CNN | pooling | search | total CPU | wall |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, t in latency_ms.items():
            lines.append(
                f"| {name} | {t['decode']:.0f} | {t['cnn']:.0f} | {t['pool']:.0f} | "
                f"{t['search']:.1f} | {t['total']:.0f} | {t['wall']:.0f} |"
            )
    path.write_text("\n".join(lines) + "\n\n" + NOTES_MARKER + (notes or "\n"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("extract", "evaluate", "latency"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--sides", type=int, nargs="+", default=[448, 560, 640])
    parser.add_argument(
        "--runs", nargs="*", help="extract only these runs, as backbone:max_side:images"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    museum = Museum.read(args.data)
    if args.command == "extract":
        runs = FEATURE_RUNS
        if args.runs:
            runs = tuple(r for r in FEATURE_RUNS if f"{r[0]}:{r[1]}:{r[2]}" in args.runs)
        for backbone, side, images in runs:
            extract_run(museum, backbone, side, images, args.cache)
            if (backbone, side) == ("efficientnet_lite0", 448):
                print("baseline descriptors ->", save_baseline(museum, args.cache))
    elif args.command == "evaluate":
        available = [
            r
            for r in recipes()
            if all(cache_path(args.cache, r.backbone, s).is_file() for s in r.ref_sides)
            and all(has_queries(args.cache, r.backbone, s) for s in r.query_sides)
        ]
        outcomes = {r.name: run_recipe(r, args.cache, museum) for r in available}
        results = [report(r.name, _meta(r), outcomes[r.name], museum) for r in available]
        for first, second, margins in CASCADES:
            if first in outcomes and second in outcomes:
                for min_margin in margins:
                    results.append(
                        report(
                            f"cascade: {first}, then {second} if margin < {min_margin}",
                            {
                                "group": "cascade",
                                "first": first,
                                "second": second,
                                "min_margin": min_margin,
                            },
                            cascade(outcomes[first], outcomes[second], min_margin),
                            museum,
                        )
                    )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "recipes.json").write_text(json.dumps(results, indent=1) + "\n")
        timings = RESULTS / "recipes_latency.json"
        latency_ms = json.loads(timings.read_text()) if timings.is_file() else None
        write_markdown(results, latency_ms, RESULTS / "recipes.md")
        print((RESULTS / "recipes.md").read_text())
    else:
        path = RESULTS / "recipes_latency.json"
        timings = json.loads(path.read_text()) if path.is_file() else {}
        timings.update(latency(museum, args.cache, args.repeats, args.threads, args.sides))
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps(timings, indent=1) + "\n")


if __name__ == "__main__":
    main()
