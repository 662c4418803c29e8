"""fit_threshold() on a collection whose whitening is learnt from its own references."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.classify import NearestNeighbour, fit_threshold
from pyinstance.classify.openset import _Collection  # the search fit_threshold runs
from pyinstance.postprocess import PostProcessConfig

DIM, INSTANCES, VIEWS = 48, 30, 3


def _photos(rng, n):
    """Descriptors sharing a strong common direction and anisotropic spread, as a network's do."""
    scales = np.geomspace(1.0, 0.05, DIM)
    x = 2.0 + rng.standard_normal((n, DIM)) * scales
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _collection(seed=0):
    rng = np.random.default_rng(seed)
    references = _photos(rng, INSTANCES)
    labels = np.arange(INSTANCES)
    view_labels = labels.repeat(VIEWS)
    views = references[view_labels] + 0.003 * rng.standard_normal((view_labels.size, DIM))
    views = (views / np.linalg.norm(views, axis=1, keepdims=True)).astype(np.float32)
    foreign = _photos(rng, 200)
    return references, labels, views, view_labels, foreign


CONFIG = PostProcessConfig.from_dict({"whiten": {}})


def _whitening(references, keep):
    fitted = CONFIG.fit(references[keep][:, None], [str(i) for i in np.flatnonzero(keep)])
    refs = fitted.references(references[keep][:, None])
    return refs[:, 0], lambda rows: fitted.queries(rows[:, None], refs, scale_sets=True)[:, 0]


def _accepted(threshold, references, queries):
    refs, whiten = _whitening(references, np.ones(len(references), dtype=bool))
    prediction = _Collection(refs, np.arange(len(refs)), None, None).classify(
        NearestNeighbour(), np.ones(len(refs), dtype=bool), whiten(queries)
    )
    return prediction.confidence >= threshold


def test_in_sample_whitening_puts_references_on_a_simplex():
    references = _collection()[0]
    refs, _ = _whitening(references, np.ones(INSTANCES, dtype=bool))
    cosine = refs @ refs.T / np.outer(*(2 * [np.linalg.norm(refs, axis=1)]))
    off = cosine[~np.eye(INSTANCES, dtype=bool)]
    assert np.allclose(off, -1 / (INSTANCES - 1), atol=1e-4)


@pytest.mark.parametrize("target_far", [0.0, 0.05])
def test_refitting_the_whitening_per_fold_rejects_foreign_photos(target_far):
    references, labels, views, view_labels, foreign = _collection()
    fit = fit_threshold(
        NearestNeighbour(),
        references,
        labels,
        views=views,
        view_labels=view_labels,
        target_far=target_far,
        refit=lambda keep: _whitening(references, keep),
    )
    foreign_far = _accepted(fit.threshold, references, foreign).mean()
    known_frr = 1 - _accepted(fit.threshold, references, views).mean()
    assert foreign_far <= target_far + 0.05
    assert known_frr <= 0.1
    assert fit.unknown == {"leave_instance_out": INSTANCES * (1 + VIEWS), "distractors": 0}


def test_whitened_in_sample_the_fit_accepts_foreign_photos():
    """What the refit prevents: references and views whitened with the whole collection's
    state make held-out instances look foreign to everything, so the threshold is too low."""
    references, labels, views, view_labels, foreign = _collection()
    refs, whiten = _whitening(references, np.ones(INSTANCES, dtype=bool))
    fit = fit_threshold(
        NearestNeighbour(), refs, labels, views=whiten(views), view_labels=view_labels
    )
    assert _accepted(fit.threshold, references, foreign).mean() > 0.5


def test_refit_must_be_callable():
    references, labels, *_ = _collection()
    with pytest.raises(TypeError, match="refit"):
        fit_threshold(NearestNeighbour(), references, labels, refit="whiten")
