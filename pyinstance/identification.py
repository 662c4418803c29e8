"""Identify photos against an instance index: the instance or unknown, with a confidence.

:class:`Identifier` is the main job's API edge: it resolves the classifier's name once,
fits it on the index's collection, and then, per photo, decodes (JPEG draft mode at the
size the recipe needs), describes, searches and classifies, timing each stage.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from pyinstance.classify import Prediction, Reranking, classify
from pyinstance.data.images import ImageLike, decode_image, image_tensor, scaled_size
from pyinstance.index import InstanceIndex, Neighbours
from pyinstance.index.thresholds import check_fresh
from pyinstance.models.regions import pool_windows
from pyinstance.objects import DetectedObject, ObjectFinder
from pyinstance.rerank import describe_reranker, resolve_reranker

#: Classifier used when neither the caller nor the index names one.
DEFAULT_CLASSIFIER = "nn"
#: Neighbours searched per instance shown (several references may share an instance).
_NEIGHBOURS_PER_RANK = 4


class ThresholdMismatchError(ValueError):
    """The index's stored threshold was fitted with another re-ranker (or none)."""


@dataclass(frozen=True)
class Match:
    """One ranked instance: its best reference among the neighbours and that similarity.

    Instances come in the classifier's ranking first, then by similarity.
    """

    instance: str
    score: float
    image_id: str | None
    image_path: str | None


@dataclass(frozen=True)
class Identification:
    """The answer for one photo.

    Attributes:
        image: the photo's path, or ``images[i]`` for in-memory images.
        instance: the identified instance id, or None (unknown).
        confidence: in [0, 1], what the open-set threshold compares against.
        top_k: the best instances, best first (also when the answer is unknown).
        ms: milliseconds by stage: ``decode``, ``extract``, ``search``, ``classify``,
            (``objects`` with ``multi``), ``total``.
        objects: with ``multi=True``, every collection object found in the photo, best
            first (empty when none is recognised); None otherwise.
    """

    image: str
    instance: str | None
    confidence: float
    top_k: tuple[Match, ...]
    ms: dict[str, float] = field(default_factory=dict)
    objects: tuple[DetectedObject, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``instance`` null when unknown, ``top_k`` and ``objects``
        lists of dicts; ``objects`` only with ``multi``)."""
        record = asdict(self)
        record["top_k"] = list(record["top_k"])
        if self.objects is None:
            del record["objects"]
        else:
            record["objects"] = [found.to_dict() for found in self.objects]
        return record


class Identifier:
    """Identifies photos against ``index`` with one classifier and threshold.

    Args:
        index: an open :class:`~pyinstance.index.InstanceIndex`.
        classifier: a registered classifier name or a classifier object; default: the
            index's stored ``classifier`` setting, else :data:`DEFAULT_CLASSIFIER`.
        classifier_options: keyword arguments for a named classifier.
        threshold: answers with a lower confidence are unknown; default: the index's
            stored (fitted) ``threshold``, else no rejection. ``0`` disables rejection.
        top_k: instances listed per photo.
        reranker: a verification re-ranker after the classifier: a verifier file (``pyinstance
            train`` with ``objective = "verification"``), a registered re-ranker name or a
            pair scorer object. It re-scores the first ``k`` candidates and gives the
            confidence the threshold compares against. Default: the index's stored
            ``reranker`` setting (the one its threshold was fitted with, ``pyinstance
            calibrate --rerank``), else none; ``False``: none. A re-ranker trained for
            another recipe is refused.
        reranker_options: keyword arguments for a re-ranker given by name or file.
        multi: also find every collection object in the photo (``objects`` of each
            answer, see :class:`~pyinstance.objects.ObjectFinder`); the whole photo's
            feature map serves both answers when the recipe pools query windows, and
            each zoomed crop takes one more backbone pass.
        objects_threshold: the score an object needs; default: the index's fitted
            ``objects_threshold`` (``pyinstance calibrate --objects``).
    """

    def __init__(
        self,
        index: InstanceIndex,
        *,
        classifier: str | Any | None = None,
        classifier_options: dict[str, Any] | None = None,
        threshold: float | None = None,
        top_k: int = 5,
        reranker: Any = None,
        reranker_options: dict[str, Any] | None = None,
        multi: bool = False,
        objects_threshold: float | None = None,
    ):
        from pyinstance.plugins import get_classifier

        if not isinstance(index, InstanceIndex):
            raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k: expected an int >= 1, got {top_k!r}")
        if len(index) == 0:
            raise ValueError(f"index: {str(index.path)!r} holds no reference images")
        if classifier is None:
            classifier = index.get_setting("classifier") or DEFAULT_CLASSIFIER
        if isinstance(classifier, str):
            classifier = get_classifier(classifier, **(classifier_options or {}))
        elif classifier_options:
            raise ValueError("classifier_options: only for a classifier given by name")
        stored_reranker = index.get_setting("reranker")
        if reranker is None:
            reranker = stored_reranker
        if reranker is False:
            reranker = None
        if threshold is None:
            threshold = index.get_setting("threshold")
            check_fresh(index, "threshold", "a threshold (0: none)")
            if threshold is not None and describe_reranker(reranker) != stored_reranker:
                raise ThresholdMismatchError(
                    f"threshold: the index's threshold was fitted "
                    f"{_with(stored_reranker)}, not {_with(describe_reranker(reranker))}: "
                    "its confidences differ; pass a threshold (0: none) or run pyinstance "
                    "calibrate with this re-ranker"
                )
        if threshold is not None:
            threshold = float(threshold)
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
        self.index = index
        references = index.descriptors()
        self.classifier = classifier.fit(references, index.labels())
        self.threshold = threshold
        self.top_k = int(top_k)
        self.reranker_name = describe_reranker(reranker)
        self.reranking = (
            None
            if reranker is None
            else Reranking(
                resolve_reranker(reranker, index.recipe, **(reranker_options or {})),
                references,
                index.rows(),
            )
        )
        if reranker is None and reranker_options:
            raise ValueError("reranker_options: given without a reranker")
        if not isinstance(multi, bool):
            raise TypeError(f"multi: expected a bool, got {multi!r}")
        if objects_threshold is not None and not multi:
            raise ValueError("objects_threshold: only with multi=True")
        self.finder = ObjectFinder(index, threshold=objects_threshold) if multi else None
        rerank_k = self.reranking.k if self.reranking is not None else 0
        self._k = min(
            len(index), max(int(classifier.k), self.top_k * _NEIGHBOURS_PER_RANK, rerank_k)
        )
        self._references = {image["row"]: image for image in index.images()}
        recipe = index.recipe
        single_scale = recipe.query_windows is not None or (
            recipe.query_max_side is not None and recipe.descriptors_per_image == 1
        )
        self._longest = (
            recipe.query_side if single_scale else round(max(recipe.scales) * recipe.query_side)
        )

    def identify(self, images: Sequence[ImageLike]) -> list[Identification]:
        """Identify each photo (paths, PIL images, arrays or tensors), one at a time.

        A photo that cannot be decoded is an error naming it.
        """
        return [answer for answer, _ in self.identify_described(images)]

    def identify_described(
        self, images: Sequence[ImageLike]
    ) -> list[tuple[Identification, np.ndarray]]:
        """Like :meth:`identify`, each answer with the photo's ``R × D`` query descriptors
        (for evaluation, which ranks the whole collection with them)."""
        if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
            raise TypeError(
                f"images: expected a sequence of images (paths, PIL images, arrays), got "
                f"{type(images).__name__}"
            )
        if not images:
            raise ValueError("images: empty; nothing to identify")
        return [self._one(image, i) for i, image in enumerate(images)]

    def _one(self, image: ImageLike, position: int) -> tuple[Identification, np.ndarray]:
        is_path = isinstance(image, (str, os.PathLike))
        name = str(image) if is_path else f"images[{position}]"
        start = time.perf_counter()
        # In-memory photos are checked here: described one at a time, each would be images[0].
        image = decode_image(image, self._target) if is_path else image_tensor(image, name)
        decoded = time.perf_counter()
        objects, objects_seconds = None, 0.0
        if self.finder is not None:
            queries, objects, objects_seconds = self._regions(image, name)
        else:
            queries = self.index.describe_queries([image])
        described = time.perf_counter()
        neighbours = self.index.search(queries, self._k)
        searched = time.perf_counter()
        prediction = classify(
            neighbours, queries, self.classifier, self.threshold, reranker=self.reranking
        )
        classified = time.perf_counter()
        ms = {
            "decode": decoded - start,
            "extract": described - decoded - objects_seconds,
            **({"objects": objects_seconds} if objects is not None else {}),
            "search": searched - described,
            "classify": classified - searched,
            "total": classified - start,
        }
        answer = self._answer(name, neighbours, prediction, {k: v * 1e3 for k, v in ms.items()})
        if objects is not None:
            answer = dataclasses.replace(answer, objects=tuple(objects))
        return answer, queries[0]

    def _regions(self, image: Any, name: str) -> tuple[np.ndarray, list[DetectedObject], float]:
        """Query descriptors and objects of one photo (and the seconds finding them took),
        from one feature map when the recipe pools windows (else the query is described
        as usual)."""
        assert self.finder is not None
        describer = self.index.describer
        with torch.inference_mode():
            features, full = describer.query_features(image, name)
            start = time.perf_counter()
            objects = self.finder.find_in(features, full, image, name)
            seconds = time.perf_counter() - start
            windows = describer.recipe.query_windows
            if windows is None:
                return self.index.describe_queries([image]), objects, seconds
            pooled = pool_windows(features, describer.head, windows)
        return self.index.postprocess_queries(pooled.float().cpu().numpy()), objects, seconds

    def _target(self, height: int, width: int) -> tuple[int, int]:
        return scaled_size(height, width, self._longest)

    def _answer(
        self, name: str, neighbours: Neighbours, prediction: Prediction, ms: dict[str, float]
    ) -> Identification:
        instances = neighbours.instances
        label = int(prediction.labels[0])
        codes, rows = neighbours.labels[0], neighbours.rows[0]
        ranked = {
            int(code): float(score)
            for code, score in zip(prediction.ranked[0], prediction.ranked_scores[0], strict=True)
            if code >= 0
        }
        order = list(ranked)
        order += [int(code) for code in dict.fromkeys(codes.tolist()) if code >= 0]
        matches = []
        for code in dict.fromkeys(order):
            if len(matches) == self.top_k:
                break
            hits = np.flatnonzero(codes == code)  # neighbours are sorted best first
            if hits.size == 0:  # ranked by the classifier, not among the neighbours
                matches.append(Match(instances[code], ranked[code], None, None))
                continue
            best = self._references.get(int(rows[hits[0]]))
            matches.append(
                Match(
                    instance=instances[code],
                    score=float(neighbours.scores[0, hits[0]]),
                    image_id=best["id"] if best else None,
                    image_path=best["source"] if best else None,
                )
            )
        return Identification(
            image=name,
            instance=instances[label] if label >= 0 else None,
            confidence=float(prediction.confidence[0]),
            top_k=tuple(matches),
            ms=ms,
        )


def _with(reranker: str | None) -> str:
    return "without a re-ranker" if reranker is None else f"with re-ranker {reranker!r}"


def identify(
    index: InstanceIndex | str | os.PathLike[str],
    images: Sequence[ImageLike],
    **options: Any,
) -> list[Identification]:
    """Identify ``images`` against ``index`` (an open index or its path).

    ``options`` are those of :class:`Identifier` (``classifier``, ``threshold``,
    ``top_k``, ...). For many calls, build one :class:`Identifier` and reuse it.
    """
    if isinstance(index, (str, os.PathLike)):
        with InstanceIndex.open(index) as opened:
            return Identifier(opened, **options).identify(images)
    return Identifier(index, **options).identify(images)
