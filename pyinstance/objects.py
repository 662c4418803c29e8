"""Every collection object in a photo: the whole photo, then zoomed crops of it, each searched.

A cascade of views: the whole photo at the recipe's query side, then each half of it
along its longer side (:data:`ZOOM_CROPS`), cut from the decoded photo and described again
at the query side, so that a painting that fills a quarter of a gallery shot fills half of
a view. Each view is pooled into the recipe's query windows and searched; its candidate
is the instance of its best window, with that window as the box. A whole photo of two
paintings often matches a third that resembles their blend: its candidate is dropped
when no crop confirms it and a crop finds something else more surely.

A candidate's score is the lead of its similarity over the two things that make a match
untrustworthy: its reference's *hubness* (plain, grey or busy paintings resemble
everything, and so every patch of wall) and the best *other* instance in the same view (a
view of bare wall matches several paintings about equally). Candidates are taken best
first, each instance once; the acceptance threshold is fitted on composited gallery
scenes (:func:`calibrate_objects`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pyinstance.classify.openset import threshold_for_far
from pyinstance.data.composite import SceneComposer
from pyinstance.data.images import DecodedImage, decode_image, image_tensor, scaled_size
from pyinstance.index import InstanceIndex
from pyinstance.index.thresholds import calibrated, check_fresh
from pyinstance.models.regions import pool_boxes, window_boxes

#: The views searched after the whole photo: ``(start, end)`` fractions of its longer side.
ZOOM_CROPS = ((0.0, 0.5), (0.5, 1.0))
#: References of other instances averaged into a reference's hubness.
HUB_NEIGHBOURS = 10
#: Longest side of the paintings in a calibration scene, as a fraction of the scene's
#: (visitors photograph one or two paintings, each large in the frame).
SCENE_SCALE = (0.4, 0.8)
#: Setting of the index holding the acceptance threshold (``pyinstance calibrate --objects``).
THRESHOLD_SETTING = "objects_threshold"

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class DetectedObject:
    """One collection object found in a photo.

    Attributes:
        instance: its instance id.
        confidence: its score (see :class:`ObjectFinder`), clipped to [0, 1].
        box: ``(left, top, right, bottom)`` in the photo's pixel coordinates.
        image_id: its nearest reference image.
    """

    instance: str
    confidence: float
    box: tuple[int, int, int, int]
    image_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "confidence": self.confidence,
            "box": list(self.box),
            "image_id": self.image_id,
        }


@dataclass(frozen=True)
class Candidate:
    """The best match of one view of a photo: instance ``code``, ``score``, reference
    ``row`` and ``box`` (left, top, right, bottom pixels of the photo)."""

    code: int
    score: float
    row: int
    box: Box


def select_objects(candidates: Sequence[Candidate], threshold: float) -> list[Candidate]:
    """The candidates kept, best first: score ``>= threshold``, each instance once."""
    kept: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: -c.score):
        if candidate.score < threshold:
            break
        if candidate.code >= 0 and all(candidate.code != k.code for k in kept):
            kept.append(candidate)
    return kept


def without_blend(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates of a photo's views (the whole photo first, then its zoomed crops)
    without the whole photo's when it is a blend of the objects in it: no crop names its
    instance and a crop names another one with a higher score."""
    if len(candidates) < 2:
        return list(candidates)
    whole, crops = candidates[0], candidates[1:]
    if all(c.code != whole.code for c in crops) and any(c.score > whole.score for c in crops):
        return list(crops)
    return list(candidates)


def zoom_crops(height: int, width: int) -> list[Box]:
    """``(left, top, right, bottom)`` pixel crops of an ``height × width`` photo: one per
    :data:`ZOOM_CROPS` entry, along its longer side."""
    if height < 1 or width < 1:
        raise ValueError(f"photo: expected at least 1×1 pixels, got {height}×{width}")
    crops = []
    for start, end in ZOOM_CROPS:
        if width >= height:
            crops.append((round(start * width), 0, max(round(end * width), 1), height))
        else:
            crops.append((0, round(start * height), width, max(round(end * height), 1)))
    return crops


def to_pixels(box: Box, cells: tuple[int, int], full: tuple[int, int]) -> tuple[int, ...]:
    """A ``(top, left, bottom, right)`` cell box as ``(left, top, right, bottom)`` pixels of
    the ``full`` (height, width) photo."""
    scale_y, scale_x = full[0] / cells[0], full[1] / cells[1]
    top, left, bottom, right = box
    return (
        round(left * scale_x),
        round(top * scale_y),
        min(full[1], round(right * scale_x)),
        min(full[0], round(bottom * scale_y)),
    )


class ObjectFinder:
    """Finds every collection object in photos against ``index`` (see the module docstring).

    A view's score is ``min(s − hubness, s − s₂)``: its best window's similarity ``s`` to
    its nearest reference, less that reference's hubness (:func:`hubness`) and less the
    best similarity ``s₂`` of any other instance in the view. Clipped to [0, 1], it is the
    object's confidence.

    Args:
        index: an open index (its describer's backbone and head describe the views).
        threshold: the score an object needs; default: the index's ``objects_threshold``
            setting (see :func:`calibrate_objects`).
        zoom: also search the crops of :data:`ZOOM_CROPS` (one backbone pass each; a crop
            too small for the backbone at the query side is left out).
    """

    def __init__(self, index: InstanceIndex, *, threshold: float | None = None, zoom: bool = True):
        if not isinstance(index, InstanceIndex):
            raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
        if len(index) == 0:
            raise ValueError(f"index: {str(index.path)!r} holds no reference images")
        if threshold is None:
            threshold = index.get_setting(THRESHOLD_SETTING)
            check_fresh(index, THRESHOLD_SETTING, "one explicitly (identify --objects-threshold)")
        if threshold is None:
            raise ValueError(
                f"threshold: the index {str(index.path)!r} has no fitted objects threshold; "
                "run 'pyinstance calibrate INDEX --objects' or give one"
            )
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold: expected a number in [0, 1], got {threshold!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected a number in [0, 1], got {threshold!r}")
        if not isinstance(zoom, bool):
            raise TypeError(f"zoom: expected a bool, got {zoom!r}")
        self.index = index
        self.threshold = float(threshold)
        self.zoom = zoom
        self._image_ids = dict(zip(index.rows().tolist(), index.image_ids(), strict=True))
        self._hub_rows, self._hub_values = hubness(index)
        labels = index.labels()
        self._k = min(len(labels), int(np.bincount(labels).max()) + 1)
        self._windows = index.recipe.query_windows or ((1.0, 1),)

    def find(self, image: Any, name: str = "image") -> list[DetectedObject]:
        """The objects in one photo (path, PIL image, array or decoded image), best first;
        empty when nothing is recognised."""
        return self._objects(self.candidates(image, name))

    def find_in(
        self,
        features: torch.Tensor,
        full: tuple[int, int],
        image: Any = None,
        name: str = "image",
    ) -> list[DetectedObject]:
        """:meth:`find` from a photo's feature map and full (height, width); its crops are
        searched too when ``image`` (the photo itself) is given and :attr:`zoom` is on."""
        return self._objects(self.candidates_in(features, full, image, name))

    def _objects(self, candidates: list[Candidate]) -> list[DetectedObject]:
        instances = self.index.instances
        return [
            DetectedObject(
                instance=instances[candidate.code],
                confidence=float(np.clip(candidate.score, 0.0, 1.0)),
                box=candidate.box,
                image_id=self._image_ids.get(candidate.row),
            )
            for candidate in select_objects(candidates, self.threshold)
        ]

    def candidates(self, image: Any, name: str = "image") -> list[Candidate]:
        """The candidate of each view of one photo (the whole photo first)."""
        image = self._decoded(image)
        features, full = self.index.describer.query_features(image, name)
        return self.candidates_in(features, full, image, name)

    def candidates_in(
        self,
        features: torch.Tensor,
        full: tuple[int, int],
        image: Any = None,
        name: str = "image",
    ) -> list[Candidate]:
        """:meth:`candidates` from the whole photo's feature map (see :meth:`find_in`)."""
        whole = self._view(features, (0, 0, full[1], full[0]))
        crops: list[Candidate | None] = []
        if image is not None and self.zoom:
            pixels = image_tensor(image.image if isinstance(image, DecodedImage) else image, name)
            height, width = pixels.shape[1:]
            scale_x, scale_y = full[1] / width, full[0] / height
            for left, top, right, bottom in zoom_crops(height, width):
                if not self.index.describer.describes(bottom - top, right - left):
                    continue  # too small for the backbone: the whole photo speaks for it
                crop = pixels[:, top:bottom, left:right]
                crop_features, _ = self.index.describer.query_features(crop, name)
                box = (
                    round(left * scale_x),
                    round(top * scale_y),
                    round(right * scale_x),
                    round(bottom * scale_y),
                )
                crops.append(self._view(crop_features, box))
        found = [candidate for candidate in crops if candidate is not None]
        return found if whole is None else without_blend([whole, *found])

    def _decoded(self, image: Any) -> Any:
        if isinstance(image, (str, os.PathLike)):
            side = self.index.recipe.query_side
            return decode_image(image, lambda height, width: scaled_size(height, width, side))
        return image

    def _view(self, features: torch.Tensor, box: Box) -> Candidate | None:
        """The candidate of one view's feature map; ``box``: the view in photo pixels."""
        cells = (int(features.shape[2]), int(features.shape[3]))
        windows = window_boxes(*cells, self._windows)
        with torch.inference_mode():
            pooled = pool_boxes(features, self.index.describer.head, windows)
        descriptors = pooled[0].float().cpu().numpy()
        neighbours = self.index.search(
            self.index.postprocess_queries(descriptors[:, None, :]), self._k
        )
        labels, scores, rows = neighbours.labels, neighbours.scores, neighbours.rows
        best = int(np.argmax(scores[:, 0]))
        code = int(labels[best, 0])
        if code < 0:
            return None
        similarity = float(scores[best, 0])
        row = int(rows[best, 0])
        hub = float(self._hub_values[np.searchsorted(self._hub_rows, row)])
        other = (labels != code) & (labels >= 0)
        score = similarity - hub
        if other.any():
            score = min(score, similarity - float(scores[other].max()))
        size = (box[3] - box[1], box[2] - box[0])
        left, top, right, bottom = to_pixels(windows[best], cells, size)
        return Candidate(
            code, score, row, (box[0] + left, box[1] + top, box[0] + right, box[1] + bottom)
        )


def hubness(index: InstanceIndex) -> tuple[np.ndarray, np.ndarray]:
    """Row ids (sorted) of the live references and each one's hubness: the mean similarity
    to its :data:`HUB_NEIGHBOURS` nearest references of other instances (0 when there is
    no other instance)."""
    labels, rows = index.labels(), index.rows()
    most = int(np.bincount(labels).max())
    k = min(len(labels), HUB_NEIGHBOURS + most)
    neighbours = index.search(index.descriptors()[:, None, :], k)
    other = (neighbours.labels != labels[:, None]) & (neighbours.labels >= 0)
    ranked = np.sort(np.where(other, neighbours.scores, -np.inf), axis=1)[:, ::-1]
    ranked = ranked[:, :HUB_NEIGHBOURS]
    finite = np.isfinite(ranked)
    values = np.where(finite, ranked, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
    order = np.argsort(rows)
    return rows[order], values[order].astype(np.float32)


@dataclass(frozen=True)
class ObjectsFit:
    """The fitted acceptance threshold of :class:`ObjectFinder` and what it was fitted on:
    ``far`` is the share of ``photos`` naming an object that is not there at
    ``threshold``; ``recall`` the share of their objects named (NaN when no photo shows
    one: distractors only)."""

    threshold: float
    target_far: float
    far: float
    recall: float
    photos: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (what the index stores): a NaN ``recall`` becomes None."""
        record = asdict(self)
        if math.isnan(self.recall):
            record["recall"] = None
        return record


def calibrate_objects(
    index: InstanceIndex,
    *,
    target_far: float = 0.05,
    scenes: int = 60,
    references: int = 60,
    distractors: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    progress: bool = False,
) -> ObjectsFit:
    """Fit and store (setting ``objects_threshold``) the score an object needs.

    Three kinds of photo, whose objects are known, are searched:

    - ``scenes`` gallery scenes composited from the collection's reference photos
      (:class:`~pyinstance.data.composite.SceneComposer`): a reference on a wall, often
      another one beside it;
    - ``references`` of the reference photos themselves (an even sample), each showing
      only its own instance;
    - ``distractors``: photos of things not in the collection.

    A photo's best candidate naming an instance that is not in it is an object invented;
    the threshold is the smallest that lets at most ``target_far`` of the photos invent one.
    """
    if not isinstance(index, InstanceIndex):
        raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
    if isinstance(target_far, bool) or not isinstance(target_far, (int, float)):
        raise TypeError(f"target_far: expected a number in [0, 1), got {target_far!r}")
    if not 0.0 <= target_far < 1.0:
        raise ValueError(f"target_far: expected a number in [0, 1), got {target_far!r}")
    for name, value in (("scenes", scenes), ("references", references)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {seed!r}")
    finder = ObjectFinder(index, threshold=0.0)
    code_of = {name: code for code, name in enumerate(index.instances)}
    readable = [
        (image["source"], code_of[image["instance"]])
        for image in index.images()
        if image["source"] and os.path.isfile(image["source"])
    ]
    if (scenes or references) and not readable:
        raise ValueError("calibrate_objects: no reference file is readable")
    photos: list[tuple[Any, set[int]]] = _scenes(readable, scenes, index.recipe.query_side, seed)
    if references and readable:
        sample = np.linspace(0, len(readable) - 1, min(references, len(readable))).astype(int)
        photos += [(readable[i][0], {readable[i][1]}) for i in sample]
    photos += [(str(path), set()) for path in distractors]
    if not photos:
        raise ValueError("calibrate_objects: no photo to fit on (scenes, references, distractors)")
    false_best, true_best = [], []
    for photo, truth in tqdm(photos, desc="calibrate objects", unit="img", disable=not progress):
        candidates = finder.candidates(photo, photo if isinstance(photo, str) else "scene")
        false_best.append(max((c.score for c in candidates if c.code not in truth), default=0.0))
        for code in truth:
            true_best.append(max((c.score for c in candidates if c.code == code), default=-1.0))
    values = np.clip(np.array(false_best, dtype=np.float32), 0.0, 1.0)
    threshold = threshold_for_far(values, float(target_far))
    fit = ObjectsFit(
        threshold=threshold,
        target_far=float(target_far),
        far=float((values >= threshold).mean()),
        recall=float(np.mean(np.array(true_best) >= threshold)) if true_best else float("nan"),
        photos=len(photos),
    )
    index.set_settings(
        {
            **calibrated(index, THRESHOLD_SETTING, threshold),
            THRESHOLD_SETTING + "_fit": fit.to_dict(),
        }
    )
    return fit


def _scenes(
    references: Sequence[tuple[str, int]], count: int, side: int, seed: int
) -> list[tuple[Any, set[int]]]:
    """``count`` composited gallery scenes (longest side ``side``) and the instance codes
    hung in each: a reference drawn at random, and often another one beside it."""

    rng = np.random.default_rng(seed)
    composer = SceneComposer(size=side, scale=SCENE_SCALE, others=1)
    scenes = []
    for _ in range(count):
        first, second = rng.choice(len(references), size=2, replace=len(references) < 2)
        main, other = (_thumbnail(references[i][0], side) for i in (first, second))
        scene = composer(main, rng, [other] if first != second else [])
        truth = {references[first][1]}
        if scene.other_boxes:
            truth.add(references[second][1])
        scenes.append((scene.image, truth))
    return scenes


def _thumbnail(path: str, side: int) -> Any:
    image = decode_image(path, lambda height, width: scaled_size(height, width, side)).image
    image.thumbnail((side, side))
    return image
