"""Fit an index's open-set threshold from its own collection, and store it there.

The threshold is fitted for a target false-accept rate (see
:func:`pyinstance.classify.fit_threshold`): leave-one-out over instances with several
references, augmented views of the references of instances that have one, and photos of
things not in the collection (distractors) when given. Stored in the index, it becomes
the default of :class:`pyinstance.identification.Identifier`, together with the classifier.

When the recipe learns its post-processing from the references (a whitening fitted on the
collection), the fit gets the raw descriptors and refits it in every search on the
references searched, so that held-out references and views are as foreign to it as real
queries are (see :mod:`pyinstance.classify.openset`). The folds follow the index: a
whitening the index applies is fitted in every fold, even one holding fewer references than
its ``min_references``, and one the index skips for the collection's size is skipped.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pyinstance.classify import ThresholdFit, augment_views, fit_threshold
from pyinstance.classify.openset import PostProcessingFit
from pyinstance.data.images import ImageDecodeError, load_image
from pyinstance.index import InstanceIndex
from pyinstance.index.thresholds import calibrated
from pyinstance.postprocess import PostProcessConfig
from pyinstance.rerank import describe_reranker, resolve_reranker

#: Augmented views described per reference of an instance with a single reference.
DEFAULT_VIEWS = 4


def calibrate(
    index: InstanceIndex,
    *,
    classifier: str = "nn",
    classifier_options: dict[str, Any] | None = None,
    target_far: float = 0.05,
    views: int = DEFAULT_VIEWS,
    distractors: Sequence[str | os.PathLike[str]] = (),
    seed: int = 0,
    progress: bool = False,
    reranker: Any = None,
    reranker_options: dict[str, Any] | None = None,
) -> ThresholdFit:
    """Fit the threshold of ``classifier`` on ``index`` and store both as its defaults.

    Args:
        index: an open index (written in one commit: settings ``classifier``,
            ``classifier_options``, ``reranker``, ``threshold``, ``threshold_fit`` and
            ``threshold_calibrated_on``, what the threshold is calibrated on: whether the
            collection is searched whitened, see :mod:`pyinstance.index.thresholds`).
        classifier: a registered classifier name.
        target_far: the share of unknown photos to accept, in [0, 1).
        views: augmented views per reference of single-reference instances (0: none).
        distractors: image files of things not in the collection.
        seed: seed of the augmentations.
        progress: show progress bars.
        reranker: a verification re-ranker (a verifier file, a registered re-ranker name or
            a pair scorer, see :class:`~pyinstance.identification.Identifier`): the threshold
            is fitted on its confidence and the re-ranker stored as the index's default
            (setting ``reranker``); None: without one.
        reranker_options: keyword arguments for a re-ranker given by name or file.
    """
    from pyinstance.plugins import get_classifier

    if not isinstance(index, InstanceIndex):
        raise TypeError(f"index: expected an InstanceIndex, got {type(index).__name__}")
    if not isinstance(classifier, str):
        raise TypeError(f"classifier: expected a registered name, got {type(classifier).__name__}")
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ValueError(f"views: expected an int >= 0, got {views!r}")
    model = get_classifier(classifier, **(classifier_options or {}))
    scorer = (
        None
        if reranker is None
        else resolve_reranker(reranker, index.recipe, **(reranker_options or {}))
    )
    labels = index.labels()
    if len(labels) == 0:
        raise ValueError(f"index: {str(index.path)!r} holds no reference images")
    refit = learnt_postprocessing_fit(index, labels)
    descriptors = index.descriptors() if refit is None else _raw_rows(index.raw_descriptors())
    describe = _processed_queries(index) if refit is None else _raw_queries(index)
    view_rows, view_labels = _views(index, describe, views, seed, progress)
    distractor_rows = _describe(describe, list(distractors), "distractors", progress)
    fit = fit_threshold(
        model,
        descriptors,
        labels,
        target_far=target_far,
        views=view_rows if len(view_rows) else None,
        view_labels=view_labels if len(view_rows) else None,
        distractors=distractor_rows if len(distractor_rows) else None,
        reranker=scorer,
        refit=refit,
    )
    index.set_settings(
        {
            "classifier": classifier,
            "classifier_options": dict(classifier_options or {}),
            "reranker": describe_reranker(reranker),
            "threshold_fit": fit.to_dict(),
            **calibrated(index, "threshold", fit.threshold),
        }
    )
    return fit


#: Images -> whole-photo query descriptors as a fit compares them (``Q × R × D``).
Describe = Callable[[Sequence[Any]], np.ndarray]


def _raw_rows(raw: np.ndarray) -> np.ndarray:
    """Raw reference descriptors (``N × D`` or ``N × P × D``) as rows ``N × P·D``."""
    return np.ascontiguousarray(raw.reshape(raw.shape[0], -1), dtype=np.float32)


def _processed_queries(index: InstanceIndex) -> Describe:
    """Post-processed whole-photo query descriptors (the first of the ``R``)."""
    return lambda images: index.describe_queries(images)[:, :1]


def _raw_queries(index: InstanceIndex) -> Describe:
    """Raw whole-photo query descriptors: every scale, or with windows the first window
    (repeated to the references' ``P`` descriptors, so held-out references and views stack;
    only the first is used)."""
    per_image = index.recipe.descriptors_per_image

    def describe(images: Sequence[Any]) -> np.ndarray:
        raw = index.describer.queries(images)
        if index.recipe.query_windows is None:
            return raw
        return np.repeat(raw[:, :1], per_image, axis=1)

    return describe


def learnt_postprocessing_fit(index: InstanceIndex, labels: np.ndarray) -> PostProcessingFit | None:
    """The index's learnt post-processing refitted on a subset of its references, as
    :func:`pyinstance.classify.fit_threshold` takes it (``refit``; ``labels``: the index's
    :meth:`~InstanceIndex.labels`); None when the recipe learns nothing from them."""
    recipe = index.recipe
    config = _as_searched(recipe.postprocessing, index.whitened)
    if not recipe.postprocess or not config.learnt:
        return None
    sets = np.asarray(index.raw_descriptors(), dtype=np.float32).reshape(
        len(labels), recipe.descriptors_per_image, recipe.dim
    )
    instances = np.asarray(index.instances, dtype=object)[labels]
    scale_sets = recipe.query_windows is None

    def refit(keep: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        fitted = config.fit(sets[keep], list(instances[keep]))
        references = fitted.references(sets[keep])

        def postprocess(rows: np.ndarray) -> np.ndarray:
            queries = rows.reshape(rows.shape[0], -1, recipe.dim)
            return fitted.queries(queries, references, scale_sets=scale_sets)[:, 0]

        return _whole(references), postprocess

    return refit


def _as_searched(config: PostProcessConfig, whitened: bool) -> PostProcessConfig:
    """``config`` as the index applies it now, for refits on subsets of its references: a
    fold holds fewer references than the index, maybe fewer than the whitening's
    ``min_references``, yet the threshold is for the index's searches, so a whitening the
    index applies is fitted in every fold and one it skips is skipped in every fold."""
    if config.whiten is None or config.whiten.min_references is None:
        return config
    whiten = dataclasses.replace(config.whiten, min_references=None) if whitened else None
    return dataclasses.replace(config, whiten=whiten)


def _whole(sets: np.ndarray) -> np.ndarray:
    """``N × P × D`` post-processed sets -> one row each, as :meth:`InstanceIndex.descriptors`."""
    if sets.shape[1] == 1:
        return sets[:, 0]
    mean = sets.mean(axis=1)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


def _views(
    index: InstanceIndex, describe: Describe, count: int, seed: int, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and instance codes of views of the single-reference instances."""
    if count == 0:
        return np.empty((0, 0), np.float32), np.empty(0, np.int64)
    images = index.images()
    per_instance = Counter(image["instance"] for image in images)
    codes = {instance: code for code, instance in enumerate(index.instances)}
    rows, labels = [], []
    singles = [image for image in images if per_instance[image["instance"]] == 1]
    for position, image in enumerate(tqdm(singles, disable=not progress, desc="views")):
        try:
            photo = load_image(image["source"])
        except (ImageDecodeError, OSError):
            continue  # the reference file moved or changed since it was indexed
        described = describe(augment_views(photo, count=count, seed=seed + position))
        rows.append(_first(described))  # the whole photo's descriptor, as references have
        labels.extend([codes[image["instance"]]] * count)
    if not rows:
        return np.empty((0, 0), np.float32), np.empty(0, np.int64)
    return np.concatenate(rows), np.asarray(labels, np.int64)


def _first(described: np.ndarray) -> np.ndarray:
    """``Q × R × D`` descriptors of a describer -> one row each (``Q × R·D``)."""
    return described.reshape(described.shape[0], -1)


def _describe(
    describe: Describe,
    paths: list[str | os.PathLike[str]],
    name: str,
    progress: bool,
) -> np.ndarray:
    """Whole-photo descriptors of image files (each must decode: an error names it)."""
    rows = [
        _first(describe([load_image(path)]))
        for path in tqdm(paths, disable=not progress, desc=name)
    ]
    return np.concatenate(rows) if rows else np.empty((0, 0), np.float32)
