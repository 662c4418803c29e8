"""The comparison table: every recipe, post-processing step and classifier on one manifest.

Each row is a recipe (backbone, head, scales, query side and windows, post-processing), a
classifier and optionally an open-set threshold, evaluated through the library's public
API: the raw descriptors go into an :class:`pyinstance.InstanceIndex` with the row's
recipe (``add_descriptors``, which fits the post-processing), queries are post-processed
by the index (``postprocess_queries``), searched (``search``), classified
(:func:`pyinstance.classify.classify`, threshold from
:func:`pyinstance.classify.fit_threshold` on the collection and augmented views, as
``pyinstance calibrate`` does) and measured with :mod:`pyinstance.eval` exactly as
``pyinstance evaluate`` measures (the tests check both agree).

Descriptors are cached (``--cache``, npz files keyed by what made them): each backbone is
run once over every image at scales 1, 1/√2 and 1/2 with the MAC, SPoC, GeM and R-MAC
heads pooled from the same feature maps; recipes with query windows, another query side
or a trained model are described by the library's ``Describer``; every post-processing
and classifier row is derived from those arrays.

    python -P benchmarks/quality.py [--data DIR] [--runs DIR] [--quick] [--only GROUP,...]

Writes ``quality.md`` (the table), ``quality.json`` (every number) and ``quality.png``
(P@1 crop vs gallery, micro-AP, per row) to ``--out`` (default benchmarks/results).
A row whose trained model file is missing is skipped with its reason, never an error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

import pyinstance
from pyinstance.calibration import learnt_postprocessing_fit
from pyinstance.classify import augment_views, classify, fit_threshold
from pyinstance.data import Manifest, load_image
from pyinstance.data.images import decode_image, scaled_size
from pyinstance.engine import available_engines, default_engine, make_engine
from pyinstance.eval import hits_from_labels, identification_metrics, open_set_rates
from pyinstance.eval.evaluate import QuerySpec, read_queries
from pyinstance.index import Describer, InstanceIndex
from pyinstance.models.regions import DEFAULT_WINDOWS
from pyinstance.postprocess import REDUCTIONS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("PYINSTANCE_SHARED", "/work/shared"))
#: Backbones with weights available offline, and the heads pooled from one feature map.
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
HEADS = ("gem", "mac", "spoc", "rmac")
GRID_SIDE = 448
ONE_SCALE = (1.0,)
MULTI_SCALE = (1.0, 2**-0.5, 0.5)
#: Named groups of query sets (the museum set's kinds of photo); missing sets are ignored.
GROUPS = {"crop": ("qsd1_w1", "qsd1_w3"), "gallery": ("qsd2_w2", "qsd2_w3", "qsd1_w4")}
#: Trained models: name -> (file under --runs, training logs: per stage, the first of these
#: files, relative to the model's folder, that exists). The two-stage top-k model's first
#: stage is the FCN classifier: its log is kept beside the model, or is the FCN run's.
MODELS: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "siamese": ("museum-siamese/model.pt", (("metrics.jsonl",),)),
    "fcn": ("museum-topk-fcn/model.pt", (("metrics.jsonl",),)),
    "topk": (
        "museum-topk/model.pt",
        (("metrics.jsonl",), ("stage1-metrics.jsonl", "../museum-topk-fcn/metrics.jsonl")),
    ),
}
TARGET_FAR = 0.05
TOP_K = 5  # instances listed per query, as `pyinstance evaluate`
NEIGHBOURS_PER_RANK = 4  # as the Identifier


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Spec:
    """How images are described: everything of a recipe but its post-processing.

    ``query_side`` None: queries as references; ``windows``: queries scored by their best
    of the default 19 windows; ``model``: a trained model file (its backbone and head).
    """

    backbone: str = "efficientnet_lite0"
    head: str = "gem"
    scales: tuple[float, ...] = ONE_SCALE
    max_side: int = GRID_SIDE
    query_side: int | None = None
    windows: bool = False
    model: str | None = None

    @property
    def on_grid(self) -> bool:
        """Whether the shared multi-head pass of its backbone describes it."""
        return (
            self.model is None
            and self.max_side == GRID_SIDE
            and self.query_side is None
            and not self.windows
            and self.scales in (ONE_SCALE, MULTI_SCALE)
        )

    def describer(self, engine: str, threads: int) -> Describer:
        """The library's describer of this spec (names resolved, weights pinned) running
        its networks with ``engine``."""
        fields: dict[str, Any] = {
            "scales": self.scales,
            "max_side": self.max_side,
            "query_max_side": self.query_side,
            "query_windows": DEFAULT_WINDOWS if self.windows else None,
        }
        if self.model is not None:
            describer = Describer.for_model(self.model, **fields)
        else:
            describer = Describer.for_components(self.backbone, self.head, **fields)
        describer.set_engine(engine, threads=threads)
        return describer

    @property
    def query_longest(self) -> int:
        """The longest side query photos are decoded at (as the Identifier decodes them)."""
        side = self.query_side or self.max_side
        return side if (self.windows or self.query_side) else round(max(self.scales) * side)


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    name: str
    group: str
    spec: Spec
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    classifier: str = "nn"
    classifier_options: Mapping[str, Any] = field(default_factory=dict)
    threshold: bool = False  # fit the open-set threshold on the collection
    trained: str | None = None  # a MODELS key
    quick: bool = False  # part of --quick

    @property
    def keeps_scales(self) -> bool:
        return "multiscale" in self.postprocess or "scale_weights" in self.postprocess


def _short(backbone: str) -> str:
    return backbone.replace("efficientnet_", "")


GRID_GROUP = "backbone × head × scales, without and with PCA-whitening"
WHITEN = {"whiten": {}}
#: pyinstance.DEFAULT_RECIPE: Lite0 + MAC, 3 scales averaged, queries as references, whitened.
DEFAULT = Spec(head="mac", scales=MULTI_SCALE)
DEFAULT_POSTPROCESS: dict[str, Any] = dict(pyinstance.DEFAULT_RECIPE.postprocess)
DEFAULT_NAME = "default (lite0 mac 448, 3 scales (mean) + whiten)"
#: The default before this table chose one: Lite0 + GeM, queries at 560 px, best of 19 windows.
PREVIOUS_DEFAULT = Spec(query_side=560, windows=True)
PREVIOUS_NAME = "previous default (lite0 gem, ref 448 / query 560 best of 19 windows)"
CLASSIFIERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("nn", {}),
    ("knn_vote", {}),
    *(("knn_weighted", {"transform": t}) for t in ("x", "x^2", "sqrt", "log")),
    ("mean_knn", {}),
    ("alpha_mean_knn", {}),
    ("instance_mean", {}),
)


def _with_default_whitening(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The default recipe's post-processing with ``changes`` (a step set to None: off)."""
    merged = {**DEFAULT_POSTPROCESS, **changes}
    return {step: config for step, config in merged.items() if config is not None}


def build_rows(models: Mapping[str, Path]) -> list[Row]:
    """Every row of the table, in table order (``models``: trained model files by name)."""
    rows: list[Row] = []
    for backbone in BACKBONES:
        for head in HEADS:
            for scales, label in ((ONE_SCALE, "448"), (MULTI_SCALE, "448, 3 scales (mean)")):
                spec = Spec(backbone, head, scales)
                name = f"{_short(backbone)} {head} {label}"
                quick = backbone == BACKBONES[0] and head == DEFAULT.head
                rows.append(Row(name, GRID_GROUP, spec, quick=quick))
                rows.append(Row(f"{name} + whiten", GRID_GROUP, spec, WHITEN, quick=quick))
    multi = DEFAULT  # the default's head and scales, each scale's descriptor kept
    head = DEFAULT.head
    rows.append(
        Row(
            f"lite0 {head} 3 scales, weighted sum 0.5/0.3/0.2",
            "multi-scale",
            multi,
            {"scale_weights": [0.5, 0.3, 0.2]},
        )
    )
    for reduction in REDUCTIONS:
        rows.append(
            Row(
                f"lite0 {head} 3 scales, matrix scoring {reduction}",
                "multi-scale",
                multi,
                {"multiscale": {"reduction": reduction}},
            )
        )
    rows.append(
        Row(
            f"lite0 {head} 3 scales, matrix max + whiten",
            "multi-scale",
            multi,
            {"multiscale": {"reduction": "max"}, **WHITEN},
        )
    )
    rows.append(Row("lite0 gem ref 448 / query 560", "query side", Spec(query_side=560)))
    rows.append(Row(PREVIOUS_NAME, "query side", PREVIOUS_DEFAULT, quick=True))
    rows.append(Row(f"{PREVIOUS_NAME} + whiten", "query side", PREVIOUS_DEFAULT, WHITEN))
    for label, changes, quick in (
        ("", {}, True),
        (" without whitening", {"whiten": None}, False),
        (" with whiten 256, shrinkage 0.5", {"whiten": {"dim": 256, "power": 0.5}}, False),
        (" + DBA 1", {"dba": {"k": 1}}, False),
        (" + QE 2", {"qe": {"k": 2}}, False),
        (" + α-QE 3 (α 3)", {"qe": {"k": 3, "alpha": 3.0}}, False),
        (" + DBA 1 + α-QE 3", {"dba": {"k": 1}, "qe": {"k": 3, "alpha": 3.0}}, False),
    ):
        rows.append(
            Row(
                DEFAULT_NAME + label,
                "default recipe + post-processing",
                DEFAULT,
                _with_default_whitening(changes),
                quick=quick,
            )
        )
    for changes, label in (({}, "default"), ({"whiten": None}, "default without whitening")):
        for classifier, options in CLASSIFIERS:
            shown = classifier + "".join(f" {v}" for v in options.values())
            rows.append(
                Row(
                    f"{label}, {shown}, threshold @ FAR {TARGET_FAR}",
                    "classifier + open-set threshold",
                    DEFAULT,
                    _with_default_whitening(changes),
                    classifier,
                    options,
                    threshold=True,
                    quick=classifier == "nn",
                )
            )
    for name, path in models.items():
        title = {"siamese": "Siamese (GeM, triplet)", "fcn": "FCN classifier (stage 1)"}.get(
            name, "top-k region descriptor"
        )
        model = str(path)
        variants = [("448", Spec(model=model))]
        if name == "siamese":  # the top-k head pools no query windows
            variants += [
                ("448, 3 scales (mean)", Spec(model=model, scales=MULTI_SCALE)),
                ("ref 448 / query 560 w19", Spec(model=model, query_side=560, windows=True)),
            ]
        for label, spec in variants:
            rows.append(Row(f"trained {title}, {label}", "trained", spec, trained=name))
            rows.append(
                Row(f"trained {title}, {label} + whiten", "trained", spec, WHITEN, trained=name)
            )
    return rows


def select_rows(rows: Sequence[Row], quick: bool, only: Sequence[str] | None) -> list[Row]:
    """The rows to run: ``--quick``'s subset and/or those whose group or name is in ``only``."""
    chosen = [r for r in rows if r.quick] if quick else list(rows)
    if only:
        unknown = [o for o in only if not any(o in (r.group, r.name) for r in rows)]
        if unknown:
            groups = sorted({r.group for r in rows})
            raise SystemExit(f"--only: unknown group or row {unknown}; groups: {groups}")
        chosen = [r for r in chosen if r.group in only or r.name in only]
    return chosen


def model_files(runs: Path, overrides: Mapping[str, Path | None]) -> dict[str, Path]:
    """Each trained model's file: the override, else its default under ``runs``."""
    return {name: overrides.get(name) or runs / relative for name, (relative, _) in MODELS.items()}


def training_seconds(model: Path, name: str) -> float | None:
    """Wall seconds of the training behind a model: each stage's log (``metrics.jsonl``
    lines), its largest ``seconds``, summed; None when a stage has no log."""
    total = 0.0
    for alternatives in MODELS[name][1]:
        logs = [model.parent / log for log in alternatives if (model.parent / log).is_file()]
        if not logs:
            return None
        lines = logs[0].read_text().splitlines()
        seconds = [json.loads(line).get("seconds", 0.0) for line in lines if line.strip()]
        if not seconds:
            return None
        total += max(seconds)
    return total


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """References and labelled queries of one manifest (and its extra CSV)."""

    ref_paths: list[Path]
    ref_instances: list[str]
    queries: list[QuerySpec]
    fingerprint: str

    @classmethod
    def read(cls, folder: Path) -> Dataset:
        manifest_path = folder / "manifest.csv"
        if not manifest_path.is_file():
            raise SystemExit(f"--data: no manifest.csv in {str(folder)!r}")
        extra = folder / "extra_queries.csv"
        manifest = Manifest.read(manifest_path).filter(split="reference")
        specs, problems = read_queries(manifest_path, extra if extra.is_file() else None)
        for problem in problems:
            print(f"  query row skipped: {problem}", file=sys.stderr)
        digest = hashlib.sha256(str(folder.resolve()).encode())
        for csv in (manifest_path, extra):
            if csv.is_file():
                digest.update(csv.read_bytes())
        return cls(
            list(manifest.paths),
            [str(i) for i in manifest.instance_ids],
            specs,
            digest.hexdigest()[:16],
        )


# --------------------------------------------------------------------------- descriptors


def cache_key(kind: str, payload: Mapping[str, Any], data: str) -> str:
    """A file-name-safe key of what made an array: its kind, parameters, data, version.

    A model file enters by path, size and modification time (retrained: a new key).
    """
    described = dict(payload)
    model = described.get("model")
    if model:
        stat = Path(model).stat()
        described["model"] = [model, stat.st_size, stat.st_mtime_ns]
    text = json.dumps(
        {"kind": kind, "data": data, "version": pyinstance.__version__, **described},
        sort_keys=True,
    )
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}"


class Heads(nn.Module):
    """Several pooling heads of one feature map, concatenated (``split`` takes them apart)."""

    def __init__(self, in_channels: int, names: Sequence[str]):
        super().__init__()
        self.heads = nn.ModuleDict(
            {n: pyinstance.get_head(n, in_channels=in_channels) for n in names}
        )
        self.out_dim = sum(int(h.out_dim) for h in self.heads.values())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads.values()], dim=-1)

    def split(self, out: np.ndarray) -> dict[str, np.ndarray]:
        arrays, offset = {}, 0
        for name, head in self.heads.items():
            arrays[name] = np.ascontiguousarray(out[..., offset : offset + head.out_dim])
            offset += head.out_dim
        return arrays


class Descriptors:
    """Raw descriptors of a dataset per :class:`Spec`, cached in memory and on disk."""

    def __init__(
        self,
        data: Dataset,
        cache: Path,
        views: int,
        timing_images: int,
        engine: str = "torch",
        threads: int = 1,
    ):
        self.data = data
        self.cache = cache
        self.views = views
        self.timing_images = timing_images
        self.engine = engine
        self.threads = threads
        self.seconds: dict[str, float] = {}  # wall seconds of each network pass made
        self._memory: dict[str, dict[str, np.ndarray]] = {}
        self._describers: dict[Spec, Describer] = {}

    def _cached(self, key: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if key in self._memory:
            return self._memory[key]
        path = self.cache / f"{key}.npz"
        if path.is_file():
            arrays = dict(np.load(path))
        else:
            start = time.perf_counter()
            arrays = make()
            self.seconds[key] = time.perf_counter() - start
            print(f"  {key}: {self.seconds[key]:.0f} s", flush=True)
            self.cache.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial.npz")
            np.savez(partial, **arrays)
            os.replace(partial, path)
        self._memory[key] = arrays
        return arrays

    def _key(self, kind: str, payload: Mapping[str, Any]) -> str:
        """The cache key of an array of this dataset made by this engine."""
        return cache_key(kind, {**payload, "engine": self.engine}, self.data.fingerprint)

    def describer(self, spec: Spec) -> Describer:
        if spec not in self._describers:
            self._describers[spec] = spec.describer(self.engine, self.threads)
        return self._describers[spec]

    def _queries_decoded(self, longest: int) -> list[Any]:
        target = lambda h, w: scaled_size(h, w, longest)  # noqa: E731
        return [decode_image(q.path, target) for q in self.data.queries]

    def _grid(self, backbone: str) -> dict[str, np.ndarray]:
        """Every image once through ``backbone`` at :data:`MULTI_SCALE`; each head's
        ``(N + Q) × S × D`` (references first): one feature map per image and scale (made
        by the engine), pooled by every head."""

        def make() -> dict[str, np.ndarray]:
            network = pyinstance.get_backbone(backbone).eval()
            heads = Heads(network.out_channels, HEADS).eval()
            features = make_engine(
                network, None, self.engine, output="features", threads=self.threads
            )
            target = lambda h, w: scaled_size(h, w, GRID_SIDE)  # noqa: E731
            images = [decode_image(p, target) for p in self.data.ref_paths]
            images += [decode_image(q.path, target) for q in self.data.queries]
            out = pyinstance.extract(
                images,
                network,
                heads,
                scales=MULTI_SCALE,
                max_side=GRID_SIDE,
                progress=False,
                engine=lambda pixels: heads(features(pixels)),
            )
            return heads.split(out.numpy().astype(np.float32))

        return self._cached(self._key("grid", {"backbone": backbone, "heads": HEADS}), make)

    def references(self, spec: Spec, keep_scales: bool) -> np.ndarray:
        """``N × D`` (scales averaged as the Describer does) or ``N × S × D``."""
        n = len(self.data.ref_paths)
        grid_refs = (
            spec.model is None
            and spec.max_side == GRID_SIDE
            and spec.scales in (ONE_SCALE, MULTI_SCALE)
        )
        if grid_refs:
            rows = self._grid(spec.backbone)[spec.head][:n]
            return self._scales(rows, spec.scales, keep_scales)
        payload = {**asdict(spec), "query_side": None, "windows": False, "part": "references"}

        def make() -> dict[str, np.ndarray]:
            rows, errors = self.describer(spec).references(self.data.ref_paths)
            if errors:
                raise ValueError(f"references could not be described: {errors[:3]}")
            return {"rows": rows}

        return self._cached(self._key("refs", payload), make)["rows"]

    def queries(self, spec: Spec, keep_scales: bool) -> np.ndarray:
        """Raw ``Q × R × D`` query descriptors (R: windows, or scales when kept)."""
        if spec.on_grid:
            rows = self._grid(spec.backbone)[spec.head][len(self.data.ref_paths) :]
            rows = self._scales(rows, spec.scales, keep_scales)
            return rows if keep_scales else rows[:, None]
        payload = {**asdict(spec), "part": "queries"}

        def make() -> dict[str, np.ndarray]:
            decoded = self._queries_decoded(spec.query_longest)
            return {"rows": self.describer(spec).queries(decoded)}

        return self._cached(self._key("queries", payload), make)["rows"]

    def views_of(self, spec: Spec) -> tuple[np.ndarray, np.ndarray]:
        """Raw query descriptors (whole photo) of augmented views of the references of
        single-reference instances, and their reference rows, as ``pyinstance calibrate``
        makes them (same seeds)."""
        counts: dict[str, int] = {}
        for instance in self.data.ref_instances:
            counts[instance] = counts.get(instance, 0) + 1
        singles = [i for i, inst in enumerate(self.data.ref_instances) if counts[inst] == 1]
        payload = {**asdict(spec), "views": self.views, "part": "views"}

        def make() -> dict[str, np.ndarray]:
            describer = self.describer(spec)
            rows = [
                describer.queries(
                    augment_views(
                        load_image(self.data.ref_paths[i]), count=self.views, seed=position
                    )
                )[:, :1]
                for position, i in enumerate(singles)
            ]
            return {"rows": np.concatenate(rows), "refs": np.repeat(singles, self.views)}

        arrays = self._cached(self._key("views", payload), make)
        return arrays["rows"], arrays["refs"]

    def extraction_ms(self, spec: Spec) -> float:
        """Mean ms to describe one query photo (decoded) with the spec's recipe, one at a
        time after a warm-up, over the first ``timing_images`` queries."""
        payload = {**asdict(spec), "images": self.timing_images, "part": "timing"}

        def make() -> dict[str, np.ndarray]:
            describer = self.describer(spec)
            decoded = self._queries_decoded(spec.query_longest)[: self.timing_images]
            describer.queries(decoded[:1])
            times = []
            for image in decoded:
                start = time.perf_counter()
                describer.queries([image])
                times.append((time.perf_counter() - start) * 1e3)
            return {"ms": np.array(times)}

        return float(self._cached(self._key("timing", payload), make)["ms"].mean())

    @staticmethod
    def _scales(rows: np.ndarray, scales: tuple[float, ...], keep: bool) -> np.ndarray:
        picked = rows[:, : len(scales)]  # MULTI_SCALE starts with scale 1
        if keep:
            return picked
        return pyinstance.aggregate_scales(torch.from_numpy(np.ascontiguousarray(picked))).numpy()


# --------------------------------------------------------------------------- one row


def row_recipe(row: Row, descriptors: Descriptors) -> pyinstance.Recipe:
    """The index recipe of a row: its spec's (weights pinned) plus its post-processing."""
    return descriptors.describer(row.spec).recipe.with_(postprocess=dict(row.postprocess))


def measure_row(row: Row, descriptors: Descriptors, work: Path, far: float) -> dict[str, Any]:
    """Every number of one row (see the module doc for how it goes through the library)."""
    data = descriptors.data
    recipe = row_recipe(row, descriptors)
    refs = descriptors.references(row.spec, row.keeps_scales)
    raw_queries = descriptors.queries(row.spec, row.keeps_scales)
    with tempfile.TemporaryDirectory(dir=work) as folder:
        index = InstanceIndex.create(Path(folder) / "row.idx", recipe)
        try:
            image_ids = [str(p) for p in data.ref_paths]
            index.add_descriptors(refs, data.ref_instances, image_ids, recipe)
            return _measure(row, index, raw_queries, descriptors, far) | {
                "dim": int(index.descriptors().shape[1]),
                "extraction_ms": descriptors.extraction_ms(row.spec),
                "recipe": recipe.describe(),
            }
        finally:
            index.close()


def _measure(
    row: Row, index: InstanceIndex, raw_queries: np.ndarray, descriptors: Descriptors, far: float
) -> dict[str, Any]:
    data = descriptors.data
    classifier = pyinstance.get_classifier(row.classifier, **dict(row.classifier_options))
    collection, labels = index.descriptors(), index.labels()
    threshold, fit = None, None
    if row.threshold:  # as `pyinstance calibrate`: learnt post-processing refitted per fold
        raw_views, view_refs = descriptors.views_of(row.spec)
        refit = learnt_postprocessing_fit(index, labels)
        if refit is None:
            rows, views = collection, index.postprocess_queries(raw_views)[:, 0]
        else:
            raw = index.raw_descriptors()
            rows = np.ascontiguousarray(raw.reshape(raw.shape[0], -1), dtype=np.float32)
            views = raw_views.reshape(raw_views.shape[0], -1)
        fit = fit_threshold(
            classifier,
            rows,
            labels,
            target_far=far,
            views=views,
            view_labels=labels[view_refs],
            refit=refit,
        )
        threshold = fit.threshold
    classifier.fit(collection, labels)
    k = min(len(index), max(int(classifier.k), TOP_K * NEIGHBOURS_PER_RANK))
    answers, confidences, ms = [], [], []
    for i in range(len(raw_queries)):  # one query at a time, as a visitor's photo comes
        start = time.perf_counter()
        query = index.postprocess_queries(raw_queries[i : i + 1])
        prediction = classify(index.search(query, k), query, classifier)
        ms.append((time.perf_counter() - start) * 1e3)
        answers.append(int(prediction.labels[0]))
        confidences.append(float(prediction.confidence[0]))
    queries = index.postprocess_queries(raw_queries)
    ranked = index.search(queries, len(index)).labels
    code_of = {name: code for code, name in enumerate(index.instances)}
    truth = [frozenset(code_of[i] for i in q.instance_ids if i in code_of) for q in data.queries]
    known = np.array([bool(t) for t in truth])
    answer = np.array(answers)
    confidence = np.array(confidences)
    right = np.array([a in t for a, t in zip(answer, truth, strict=True)])
    accepted = np.ones(len(answer), bool) if threshold is None else confidence >= threshold
    hits = hits_from_labels(ranked, truth)
    n_relevant = np.array([int(np.isin(labels, list(t)).sum()) for t in truth])

    ks = (1, min(TOP_K, len(index)))

    def numbers(mask: np.ndarray) -> dict[str, Any]:
        out = identification_metrics(
            hits[mask],
            n_relevant[mask],
            (right & accepted)[mask],
            confidence[mask],
            accepted[mask],
            ks=sorted(set(ks)),
        )
        known_rows = mask & known
        out["p1_answer"] = float(right[known_rows].mean()) if known_rows.any() else float("nan")
        return out

    everything = np.ones(len(answer), bool)
    sets = [q.query_set for q in data.queries]
    kinds = [q.kind or "query" for q in data.queries]
    result: dict[str, Any] = {
        "all": numbers(everything),
        "groups": {
            name: numbers(np.isin(sets, list(members)))
            for name, members in GROUPS.items()
            if any(s in members for s in sets)
        },
        "kinds": {kind: numbers(np.array(kinds) == kind) for kind in sorted(set(kinds))},
        "search_ms": float(np.mean(ms)),
        "threshold": threshold,
        "threshold_fit": None if fit is None else fit.to_dict(),
    }
    if threshold is not None:
        result["open_set"] = open_set_rates(known, accepted, right & accepted)
    return result


# --------------------------------------------------------------------------- the table


def cell(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def table_values(result: Mapping[str, Any]) -> dict[str, Any]:
    """The table's columns of one measured row."""
    groups = result["groups"]
    return {
        "P@1 crop": groups.get("crop", {}).get("p1_answer"),
        "P@1 gallery": groups.get("gallery", {}).get("p1_answer"),
        "P@1 all": result["all"]["p1_answer"],
        "mAP": result["all"]["map"],
        "micro-AP": result["all"]["micro_ap"],
        "AUROC": result["all"]["auroc_unknown"],
    }


def best_untrained(results: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best row that needs no training: P@1 over all known queries, then micro-AP,
    then mAP (rows without a threshold only: the threshold changes micro-AP)."""
    candidates = [
        r for r in results if "all" in r and r["trained"] is None and r["threshold"] is None
    ]
    if not candidates:
        return None
    return max(
        candidates, key=lambda r: (r["all"]["p1_answer"], r["all"]["micro_ap"], r["all"]["map"])
    )


def write_markdown(
    results: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], path: Path
) -> None:
    """The table (one section per group), the classifiers' open-set numbers, skipped rows."""
    columns = ["P@1 crop", "P@1 gallery", "P@1 all", "mAP", "micro-AP", "AUROC"]
    measured = [r for r in results if "all" in r]
    best = {
        c: max(
            (v for r in measured if (v := table_values(r)[c]) is not None and not math.isnan(v)),
            default=None,
        )
        for c in columns
    }
    lines = [
        "# Quality: every recipe on one manifest",
        "",
        f"Generated by `{meta['command']}` on `{meta['data']}` ({meta['references']} references,",
        f"{meta['queries']} queries, {meta['unknown_queries']} of them of objects not in the collection);",
        f"{meta['engine']} engine, {meta['torch_threads']} thread(s); {meta['seconds'] / 60:.1f} min in all"
        f" ({meta['cpu_seconds'] / 60:.1f} min of CPU), load average",
        f"{meta['load_start']:.1f} at the start and {meta['load_end']:.1f} at the end (a shared 2-core machine: times",
        "are comparable within the table only).",
        "",
        "P@1: the classifier's answer (before rejection) is right, over the known queries of",
        "the crop photos, the gallery photos, and all queries (the extra CSV's copies",
        "included); mAP over the whole ranking; micro-AP (GAP) and AUROC (known vs unknown",
        "by confidence) over all queries, the unknown ones included, with the row's",
        "threshold where it has one (else every query answered). Extraction: ms to describe",
        "one query photo; search: ms per query to post-process, search and classify; dim:",
        "the descriptor after post-processing. Best value per column in bold.",
        "",
    ]
    header = "| row | " + " | ".join(columns) + " | dim | extraction ms | search ms | training |"
    group = None
    for r in results:
        if r["group"] != group:
            group = r["group"]
            lines += ["", f"### {group}", "", header, "|---" * (len(columns) + 5) + "|"]
        if "all" not in r:
            lines.append(f"| {r['name']} | skipped: {r['skipped']} |" + " |" * (len(columns) + 3))
            continue
        values = table_values(r)
        cells = [
            (
                f"**{cell(values[c])}**"
                if values[c] is not None and values[c] == best[c]
                else cell(values[c])
            )
            for c in columns
        ]
        training = "–" if r.get("training_s") is None else f"{r['training_s'] / 60:.0f} min"
        lines.append(
            f"| {r['name']} | "
            + " | ".join(cells)
            + f" | {r['dim']} | {cell(r['extraction_ms'], 0)} | {cell(r['search_ms'], 2)} | {training} |"
        )
    thresholded = [r for r in measured if r["threshold"] is not None]
    if thresholded:
        lines += [
            "",
            f"### Open-set rejection (threshold fitted for FAR {meta['far']} on the collection: "
            f"leave-instance-out plus {meta['views']} augmented views per reference, as `pyinstance calibrate`)",
            "",
            "| row | threshold | fit FAR | fit FRR | unknowns accepted (FAR) | known rejected (FRR) | misidentified |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in thresholded:
            fit, rates = r["threshold_fit"], r["open_set"]
            lines.append(
                f"| {r['name']} | {cell(r['threshold'])} | {cell(fit['far'])} | {cell(fit['frr'])} | "
                f"{cell(rates['far'])} | {cell(rates['frr'])} | {cell(rates['misidentification'])} |"
            )
    chosen = best_untrained(results)
    if chosen is not None:
        lines += [
            "",
            f"Best row without training (P@1 all, then micro-AP, then mAP): **{chosen['name']}**.",
        ]
    lines += _comparison(measured)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, "\n".join(lines) + "\n")


def _comparison(measured: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines comparing the default recipe with the previous default and the best trained
    row (those measured)."""
    by_name = {r["name"]: r for r in measured}
    default = by_name.get(DEFAULT_NAME)
    if default is None:
        return []
    trained = [r for r in measured if r["trained"] is not None]
    others = [(PREVIOUS_NAME, by_name.get(PREVIOUS_NAME))]
    if trained:
        best = max(trained, key=lambda r: (r["all"]["p1_answer"], r["all"]["micro_ap"]))
        others.append((f"the best trained row ({best['name']})", best))
    lines = [
        "",
        "| against the default | Δ P@1 crop | Δ P@1 gallery | Δ P@1 all | Δ mAP | Δ micro-AP |",
    ]
    lines.append("|---|---|---|---|---|---|")
    mine = table_values(default)
    for label, other in others:
        if other is None:
            continue
        theirs = table_values(other)
        deltas = [
            "–" if mine[c] is None or theirs[c] is None else f"{theirs[c] - mine[c]:+.3f}"
            for c in ("P@1 crop", "P@1 gallery", "P@1 all", "mAP", "micro-AP")
        ]
        lines.append(f"| {label} | " + " | ".join(deltas) + " |")
    return lines


def write_plot(results: Sequence[Mapping[str, Any]], path: Path) -> None:
    """P@1 crop vs gallery (one point per row, coloured by group) and micro-AP per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in results if "all" in r]
    groups = list(dict.fromkeys(r["group"] for r in measured))
    colours = plt.get_cmap("tab10")
    figure, (scatter, bars) = plt.subplots(
        1, 2, figsize=(15, max(6, 0.19 * len(measured) + 1)), gridspec_kw={"width_ratios": [1, 1.3]}
    )
    for g, group in enumerate(groups):
        members = [table_values(r) for r in measured if r["group"] == group]
        scatter.scatter(
            [m["P@1 crop"] for m in members], [m["P@1 gallery"] for m in members],
            color=colours(g % 10), label=group, alpha=0.75,
        )  # fmt: skip
    scatter.set_xlabel("P@1 crop photos")
    scatter.set_ylabel("P@1 gallery photos")
    scatter.set_title("P@1: crops vs gallery shots (one point per row)")
    scatter.grid(alpha=0.3)
    scatter.legend(fontsize=7, loc="lower left")
    names = [r["name"] for r in measured]
    values = [table_values(r)["micro-AP"] for r in measured]
    bars.barh(
        range(len(names)), values, color=[colours(groups.index(r["group"]) % 10) for r in measured]
    )
    bars.set_yticks(range(len(names)), names, fontsize=6)
    bars.invert_yaxis()
    low = min(v for v in values if v is not None)
    bars.set_xlim(max(0.0, low - 0.05), 1.0)
    bars.set_xlabel("micro-AP (unknown queries included)")
    bars.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.png")
    figure.savefig(partial, dpi=110)
    plt.close(figure)
    os.replace(partial, path)


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------- main


def run(
    rows: Sequence[Row], descriptors: Descriptors, work: Path, far: float
) -> list[dict[str, Any]]:
    """Measure each row; a trained row whose model file is missing, or a row that fails
    (e.g. a classifier needing more neighbours than the collection holds, a head that
    cannot pool query windows), is recorded as skipped with the reason, not raised."""
    results = []
    for row in rows:
        record: dict[str, Any] = {
            "name": row.name,
            "group": row.group,
            "classifier": row.classifier,
            "classifier_options": dict(row.classifier_options),
            "postprocess": dict(row.postprocess),
            "spec": asdict(row.spec),
            "trained": row.trained,
            "threshold": None,
        }
        if row.spec.model is not None and not Path(row.spec.model).is_file():
            record["skipped"] = f"model file {row.spec.model} not found"
            print(f"skipped {row.name}: {record['skipped']}", flush=True)
            results.append(record)
            continue
        start = time.perf_counter()
        try:
            record |= measure_row(row, descriptors, work, far)
        except Exception as error:  # noqa: BLE001 (one row's failure must not lose the table)
            record["skipped"] = f"failed: {type(error).__name__}: {error}"
            print(f"skipped {row.name}: {record['skipped']}", flush=True)
            results.append(record)
            continue
        if row.trained is not None:
            record["training_s"] = training_seconds(Path(row.spec.model or ""), row.trained)
        values = table_values(record)
        print(
            f"{row.name}: "
            + ", ".join(f"{k} {cell(v)}" for k, v in values.items())
            + f" ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
        results.append(record)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "museum",
                        help="folder with manifest.csv (and extra_queries.csv); default %(default)s")  # fmt: skip
    parser.add_argument("--runs", type=Path, default=Path(os.environ.get("PYINSTANCE_RUNS", ROOT / "runs")),
                        help="folder of training runs holding the trained models; default %(default)s")  # fmt: skip
    for name, (relative, _) in MODELS.items():
        parser.add_argument(
            f"--{name}", type=Path, help=f"{name} model file (default RUNS/{relative})"
        )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder; default %(default)s"
    )
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "quality-cache",
                        help="descriptor cache; default %(default)s")  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="a subset (Lite0 + GeM, default recipe, nn)"
    )
    parser.add_argument("--only", help="comma-separated groups or row names")
    parser.add_argument("--far", type=float, default=TARGET_FAR, help="target false-accept rate")
    parser.add_argument(
        "--views", type=int, help="augmented views per reference (default 4, --quick 1)"
    )
    parser.add_argument(
        "--timing-images", type=int, help="query photos timed per recipe (default 6, --quick 2)"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1,
        help="torch and onnxruntime threads (default: the cores, %(default)s)",
    )  # fmt: skip
    parser.add_argument("--engine", choices=available_engines(), default=default_engine(),
                        help="inference engine of every network pass; default %(default)s")  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads: expected at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    # numpy's BLAS on one thread: its products here are small, and on a loaded machine
    # spinning BLAS threads made each whitening fit 10-50 times slower
    threadpool_limits(1, user_api="blas")
    views = args.views if args.views is not None else (1 if args.quick else 4)
    timing = args.timing_images if args.timing_images is not None else (2 if args.quick else 6)
    if views < 1 or timing < 1:
        raise SystemExit("--views and --timing-images: expected at least 1")
    models = model_files(args.runs, {name: getattr(args, name) for name in MODELS})
    rows = select_rows(build_rows(models), args.quick, args.only.split(",") if args.only else None)
    load_start = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), time.process_time()
    data = Dataset.read(args.data)
    descriptors = Descriptors(data, args.cache, views, timing, args.engine, args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    print(
        f"{len(rows)} rows on {args.data}: {len(data.ref_paths)} references, {len(data.queries)} queries",
        flush=True,
    )
    results = run(rows, descriptors, args.cache, args.far)
    meta = {
        "command": "python -P benchmarks/quality.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data": str(args.data),
        "references": len(data.ref_paths),
        "queries": len(data.queries),
        "unknown_queries": sum(1 for q in data.queries if not q.instance_ids),
        "torch_threads": torch.get_num_threads(),
        "engine": args.engine,
        "load_start": load_start,
        "load_end": os.getloadavg()[0],
        "far": args.far,
        "views": views,
        "timing_images": timing,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started,
        "extraction_seconds": descriptors.seconds,
        "best_untrained": (best_untrained(results) or {}).get("name"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    _atomic_write(
        args.out / "quality.json",
        json.dumps(_json_safe({"meta": meta, "rows": results}), indent=1) + "\n",
    )
    write_markdown(results, meta, args.out / "quality.md")
    write_plot(results, args.out / "quality.png")
    print(f"done in {meta['seconds'] / 60:.1f} min -> {args.out}/quality.{{md,json,png}}")


if __name__ == "__main__":
    main()
