"""instance_mean: one averaged, re-normalised descriptor per instance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinstance.classify import InstanceMean
from pyinstance.index.neighbours import Neighbours


def _no_neighbours(q: int, instances: int = 3) -> Neighbours:
    empty = np.zeros((q, 0))
    return Neighbours(
        empty.astype(np.float32), empty.astype(np.int64), empty.astype(np.int64),
        tuple(f"i{c}" for c in range(instances)),
    )  # fmt: skip


def test_means_are_renormalised_averages():
    s = np.sqrt(0.5)
    descriptors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]], np.float32)
    classifier = InstanceMean(top=2).fit(descriptors, np.array([0, 0, 1, 1]))
    assert classifier.means.numpy() == pytest.approx(np.array([[s, s, 0], [0, 0, 1]]))
    queries = np.array([[1, 0, 0], [0, 0.6, 0.8]], np.float32)
    p = classifier.predict(_no_neighbours(2), queries)
    assert p.labels.tolist() == [0, 1]
    assert p.ranked.tolist() == [[0, 1], [1, 0]]
    assert p.confidence.tolist() == pytest.approx([s, 0.8])
    assert p.ranked_scores == pytest.approx(np.array([[s, 0.0], [0.8, 0.6 * s]]))


def test_ignored_rows_and_absent_codes_are_never_ranked():
    descriptors = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    classifier = InstanceMean(top=5).fit(descriptors, np.array([2, 0, -1]))
    p = classifier.predict(_no_neighbours(1), np.array([[-1, 0]], np.float32))
    assert p.ranked.tolist() == [[0, 2]]  # code 1 has no reference; row 2 is ignored
    assert p.labels.tolist() == [0] and p.confidence.tolist() == [0.0]  # similarity -1 vs 0


def test_multi_region_queries_take_the_best_region():
    classifier = InstanceMean().fit(np.eye(3, dtype=np.float32), np.array([0, 1, 2]))
    regions = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.6, 0.8]]])
    p = classifier.predict(_no_neighbours(1), regions)
    assert p.ranked.tolist()[0] == [1, 2, 0]
    assert p.ranked_scores[0].tolist() == pytest.approx([1.0, 0.8, 0.0])


def test_fit_works_on_a_memory_map_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr("pyinstance.classify.instance_mean.CHUNK_ROWS", 3)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((10, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 10)
    path = tmp_path / "d.f32"
    data.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(10, 4))
    means = InstanceMean().fit(mapped, labels).means.numpy()
    for code in range(3):
        mean = data[labels == code].mean(axis=0)
        assert means[code] == pytest.approx(mean / np.linalg.norm(mean), abs=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="top: expected an integer >= 1"):
        InstanceMean(top=0)
    with pytest.raises(RuntimeError, match="call fit"):
        InstanceMean().predict(_no_neighbours(1), np.zeros((1, 3), np.float32))
    classifier = InstanceMean().fit(np.eye(3, dtype=np.float32), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="expected dimension D=3"):
        classifier.predict(_no_neighbours(1), np.zeros((1, 4), np.float32))
    with pytest.raises(TypeError, match="neighbours: expected"):
        classifier.predict(None, np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="average to zero"):
        InstanceMean().fit(np.array([[1, 0], [-1, 0]], np.float32), np.array([0, 0]))


def test_default_top_ranks_five_instances():
    classifier = InstanceMean().fit(np.eye(8, dtype=np.float32), np.arange(8))
    p = classifier.predict(_no_neighbours(1, 8), np.eye(8, dtype=np.float32)[:1])
    assert p.ranked.shape == (1, 5) and p.ranked[0, 0] == 0


def test_means_of_disagreeing_references_are_unit_length():
    # Two references 150 degrees apart: their sum is 0.52 long, shorter than one.
    angle = np.deg2rad(75)
    descriptors = np.array(
        [[np.cos(angle), np.sin(angle)], [np.cos(angle), -np.sin(angle)], [0, 1]], np.float32
    )
    means = InstanceMean().fit(descriptors, np.array([0, 0, 1])).means.numpy()
    assert means == pytest.approx(np.array([[1, 0], [0, 1]]), abs=1e-6)


def test_confidence_is_the_similarity_clipped_to_0_1():
    classifier = InstanceMean(top=2).fit(np.eye(2, dtype=np.float32), np.array([0, 1]))
    # Queries need not be unit length: 3x the first mean, and one opposite to both means.
    queries = np.array([[3, 0], [-1, -1]], np.float32)
    p = classifier.predict(_no_neighbours(2, 2), queries)
    assert p.confidence.tolist() == [1.0, 0.0]
    assert p.ranked_scores.tolist() == [[3.0, 0.0], [-1.0, -1.0]]


def test_float64_and_one_dimensional_descriptors():
    classifier = InstanceMean().fit(np.array([[1.0], [-1.0]]), np.array([0, 1]))
    p = classifier.predict(_no_neighbours(1, 2), np.array([[-0.5]], np.float64))
    assert p.labels.tolist() == [1] and p.confidence.tolist() == [0.5]
    assert p.ranked.tolist() == [[1, 0]]
