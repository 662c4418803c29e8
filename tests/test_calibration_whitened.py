"""calibrate() on an index whose recipe whitens with a state learnt from its references."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pyinstance.calibration import calibrate
from pyinstance.classify import NearestNeighbour
from pyinstance.index import InstanceIndex
from tests.index.conftest import DIM, tiny_recipe

INSTANCES = 12


def _photos(rng: np.random.Generator, n: int) -> np.ndarray:
    """Descriptors sharing a strong common direction and anisotropic spread, as a network's do."""
    x = 2.0 + rng.standard_normal((n, DIM)) * np.geomspace(1.0, 0.05, DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _confidence(index: InstanceIndex, raw: np.ndarray) -> np.ndarray:
    """The nn classifier's confidence for raw query descriptors, as identification gets it."""
    queries = index.postprocess_queries(raw)
    model = NearestNeighbour().fit(index.descriptors(), index.labels())
    return model.predict(index.search(queries, 1), queries[:, 0]).confidence


def test_a_whitened_index_gets_a_threshold_that_rejects_foreign_photos(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = InstanceIndex.create(
        tmp_path / "index", tiny_recipe().with_(postprocess={"whiten": {}})
    )
    index.add_descriptors(
        _photos(rng, INSTANCES),
        [f"i{i}" for i in range(INSTANCES)],
        [f"im{i}" for i in range(INSTANCES)],
        index.recipe,
    )
    fit = calibrate(index, target_far=0.0, views=0)
    foreign = _confidence(index, _photos(rng, 200))
    assert fit.unknown == {"leave_instance_out": INSTANCES, "distractors": 0}
    assert (foreign >= fit.threshold).mean() <= 0.1
    assert index.get_setting("threshold") == fit.threshold
