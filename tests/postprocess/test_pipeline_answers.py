"""The pipeline's answers on small collections worked out by hand: DBA at its smallest
collections, a skipped whitening stored beside learnt scale weights, the skip reason."""

from __future__ import annotations

import numpy as np
import pytest

from pyinstance.postprocess import (
    DatabaseAugmentation,
    FittedPostProcessing,
    PostProcessConfig,
    WhiteningConfig,
)
from pyinstance.postprocess.pipeline import scale_weights_state

from .conftest import unit_sets

# Three unit references in the plane: x0·x1 = 0.8, x1·x2 = 0.6, x0·x2 = 0.
PLANE = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_dba_augments_a_collection_of_two_references() -> None:
    """k = 1 (cut from 3): each reference plus half the other (rank weight 1/2)."""
    fitted = PostProcessConfig(dba=DatabaseAugmentation(k=3)).fit(PLANE[:2, None], ["a", "b"])
    got = fitted.references(PLANE[:2, None])
    want = _unit(np.array([PLANE[0] + PLANE[1] / 2, PLANE[1] + PLANE[0] / 2]))
    np.testing.assert_allclose(got[:, 0], want, rtol=0, atol=1e-6)


def test_dba_k_is_cut_to_every_other_reference() -> None:
    """k = 5 on three references is k = 2: rank weights 2/3 and 1/3, nearest first."""
    fitted = PostProcessConfig(dba=DatabaseAugmentation(k=5)).fit(PLANE[:, None], list("abc"))
    got = fitted.references(PLANE[:, None])
    x0, x1, x2 = PLANE
    want = _unit(
        np.array(
            [
                x0 + 2 / 3 * x1 + 1 / 3 * x2,  # x1 (0.8) before x2 (0)
                x1 + 2 / 3 * x0 + 1 / 3 * x2,  # x0 (0.8) before x2 (0.6)
                x2 + 2 / 3 * x1 + 1 / 3 * x0,  # x1 (0.6) before x0 (0)
            ]
        )
    )
    np.testing.assert_allclose(got[:, 0], want, rtol=0, atol=1e-6)


def test_a_skipped_whitening_is_restored_with_its_learnt_scale_weights() -> None:
    config = PostProcessConfig(whiten=WhiteningConfig(min_references=5), scale_weights="learnt")
    references = unit_sets(4, p=2, d=6, seed=7)
    fitted = config.fit(references, ["a", "a", "b", "b"])
    assert fitted.whitening is None and fitted.whitening_skipped is not None
    restored = FittedPostProcessing.from_state(
        config, fitted.state_bytes(), scale_weights_state(fitted.aggregation)
    )
    assert restored.whitening_skipped == fitted.whitening_skipped
    np.testing.assert_array_equal(restored.aggregation.weights, fitted.aggregation.weights)
    np.testing.assert_array_equal(restored.references(references), fitted.references(references))


def test_the_skip_reason_says_how_many_are_held_and_needed() -> None:
    config = WhiteningConfig(min_references=5)
    assert config.skip_reason(4) == (
        "whitening skipped: the collection holds 4 reference image(s), fewer than "
        "min_references 5; descriptors are not whitened until it holds that many"
    )
    assert config.skip_reason(5) is None and WhiteningConfig().skip_reason(0) is None


def test_a_stored_whitening_keeps_its_ridge_beside_learnt_scale_weights() -> None:
    config = PostProcessConfig(whiten=WhiteningConfig(ridge=0.25), scale_weights="learnt")
    references = unit_sets(6, p=2, d=5, seed=11)
    fitted = config.fit(references, ["a", "a", "b", "b", "c", "c"])
    restored = FittedPostProcessing.from_state(
        config, fitted.state_bytes(), scale_weights_state(fitted.aggregation)
    )
    assert restored.whitening.ridge == 0.25 and restored.whitening.method == "pca"
    np.testing.assert_array_equal(restored.aggregation.weights, fitted.aggregation.weights)
    np.testing.assert_array_equal(restored.references(references), fitted.references(references))


def test_references_that_are_not_sets_are_named_with_their_layout() -> None:
    flat = np.eye(3, dtype=np.float32)
    for config in (PostProcessConfig(), PostProcessConfig(scale_weights="learnt")):
        with pytest.raises(
            ValueError, match=r"^references: expected a \(N, P, D\) array, got shape \(3, 3\)$"
        ):
            config.fit(flat, ["a", "a", "b"])
