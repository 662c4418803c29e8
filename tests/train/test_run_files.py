"""A run's files and seeded batches, answer by answer: checkpoints (written atomically, the
recipe compared key by key), the metrics log and plot, the P×K and triplet batches, the
view generators."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.train.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from pyinstance.train.metrics import CURVES, _finite, write_metrics
from pyinstance.train.sampler import PKSampler, triplet_batches
from pyinstance.train.views import view_generator

# -- checkpoints ------------------------------------------------------------------------------

RECIPE = {"backbone": "b", "head": "gem", "head_params": {"p": 3}, "trainable_from": None}


def test_a_checkpoint_round_trips_its_state(tmp_path: Path):
    path = tmp_path / "sub" / "checkpoint.pt"
    state = {"weights": torch.arange(4.0), "step": 7, "history": [{"loss": 0.5}], "name": "x"}
    save_checkpoint(path, RECIPE, state)
    loaded = load_checkpoint(path, dict(reversed(list(RECIPE.items()))))  # key order is free
    assert torch.equal(loaded["weights"], state["weights"])
    assert {k: v for k, v in loaded.items() if k != "weights"} == {
        "step": 7,
        "history": [{"loss": 0.5}],
        "name": "x",
    }
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == FORMAT == "pyinstance-checkpoint"
    assert payload["version"] == VERSION == 1
    assert payload["recipe"] == json.dumps(RECIPE, sort_keys=True)
    assert sorted(os.listdir(path.parent)) == ["checkpoint.pt"]  # no temporary left


def test_the_recipe_is_stored_as_canonical_json(tmp_path: Path):
    """Sorted keys at every level: the same recipe gives the same bytes, however its dicts
    were built."""
    save_checkpoint(tmp_path / "c.pt", {"b": 1, "a": {"d": 2, "c": [3]}}, {})
    stored = torch.load(tmp_path / "c.pt", weights_only=True)["recipe"]
    assert stored == '{"a": {"c": [3], "d": 2}, "b": 1}'


def test_a_tuple_in_the_recipe_matches_its_saved_list(tmp_path: Path):
    save_checkpoint(tmp_path / "c.pt", {"levels": (1, 2)}, {"step": 1})
    assert load_checkpoint(tmp_path / "c.pt", {"levels": [1, 2]}) == {"step": 1}


def test_a_checkpoint_is_replaced_whole(tmp_path: Path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, RECIPE, {"step": 1})
    save_checkpoint(path, RECIPE, {"step": 2})
    assert load_checkpoint(path, RECIPE) == {"step": 2}
    assert os.listdir(tmp_path) == ["c.pt"]


def test_another_recipe_is_refused_naming_every_difference(tmp_path: Path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"a": 1, "b": "x", "c": [1]}, {"step": 1})
    with pytest.raises(CheckpointMismatchError) as error:
        load_checkpoint(path, {"a": 1, "b": "y", "d": 2, "c": [1]})
    message = str(error.value)
    assert "(b: checkpoint 'x', config 'y'; d: checkpoint None, config 2)" in message
    assert message.startswith(f"checkpoint: {str(path)!r} comes from another recipe")


def save_payload(path: Path, payload) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "is not a pyinstance training checkpoint"),
        ({"format": "other", "version": 1}, "is not a pyinstance training checkpoint"),
        ({"version": 1}, "is not a pyinstance training checkpoint"),
        ({"format": FORMAT, "version": 2, "recipe": "{}"}, "has layout version 2, expected 1"),
        ({"format": FORMAT, "recipe": "{}"}, "has layout version None, expected 1"),
    ],
)
def test_foreign_or_newer_files_are_refused(tmp_path: Path, payload, message):
    path = tmp_path / "c.pt"
    save_payload(path, payload)
    with pytest.raises(ValueError, match=message) as error:
        load_checkpoint(path, {})
    assert not isinstance(error.value, CheckpointMismatchError)


def test_missing_and_damaged_checkpoints_are_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="^checkpoint: no such file"):
        load_checkpoint(tmp_path / "none.pt", {})
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="^checkpoint: cannot read"):
        load_checkpoint(tmp_path / "bad.pt", {})


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_are_one_json_line_per_epoch_with_null_for_non_finite(tmp_path: Path):
    epochs = [
        {"epoch": 1, "loss": 0.5, "p_at_1": float("nan"), "active_triplets": 3},
        {"epoch": 2, "loss": float("inf"), "note": "x", "p_at_1": -float("inf")},
    ]
    write_metrics(tmp_path / "run", epochs)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert lines == [
        '{"active_triplets": 3, "epoch": 1, "loss": 0.5, "p_at_1": null}',
        '{"epoch": 2, "loss": null, "note": "x", "p_at_1": null}',
    ]
    assert _finite({"a": 1.0, "b": 2, "c": None}) == {"a": 1.0, "b": 2, "c": None}


def test_the_plot_draws_each_curve_with_its_points(tmp_path: Path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    original = Axes.plot

    def spy(self, xs, ys, **kwargs):
        drawn.append((self.get_title(), list(xs), list(ys), kwargs.get("marker")))
        return original(self, xs, ys, **kwargs)

    monkeypatch.setattr(Axes, "plot", spy)
    epochs = [
        {"epoch": 1, "loss": 0.9, "active_triplets": 4, "p_at_1": None},
        {"epoch": 2, "loss": 0.5, "active_triplets": 2},
        {"epoch": 3, "loss": 0.4, "active_triplets": 1, "p_at_1": 0.75},
    ]
    write_metrics(tmp_path, epochs)
    assert [key for key, _ in CURVES] == ["loss", "active_triplets", "p_at_1"]
    # titles are set after plotting: the spy sees the axis untitled; order gives the curve
    assert [(xs, ys, marker) for _, xs, ys, marker in drawn] == [
        ([1, 2, 3], [0.9, 0.5, 0.4], "o"),
        ([1, 2, 3], [4, 2, 1], "o"),
        ([3], [0.75], "o"),
    ]
    image = Image.open(tmp_path / "metrics.png")
    assert image.format == "PNG" and image.size == (960, 256)  # 12 × 3.2 inches at 80 dpi


def test_a_curve_without_values_is_left_empty(tmp_path: Path):
    write_metrics(tmp_path, [{"epoch": 1, "loss": 1.0}])
    assert Image.open(tmp_path / "metrics.png").format == "PNG"
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"epoch": 1, "loss": 1.0}


# -- batches ----------------------------------------------------------------------------------


def test_pk_batches_hold_distinct_instances_with_their_photos_cycled():
    labels = [0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4]
    photos = {c: [i for i, label in enumerate(labels) if label == c] for c in set(labels)}
    sampler = PKSampler(labels, instances=2, views=3, seed=4)
    for epoch in range(3):
        batches = sampler.epoch(epoch)
        assert [len(b) for b in batches] == [6, 9]  # 5 instances: 2 + 3 (the single joins)
        seen = []
        for batch in batches:
            for start in range(0, len(batch), 3):
                views = batch[start : start + 3]
                label = labels[views[0]]
                seen.append(label)
                members = photos[label]
                assert {labels[v] for v in views} == {label}
                if len(members) >= 3:  # distinct photos while there are enough
                    assert len(set(views)) == 3
                else:  # cycled in order: the first photo again after the last
                    assert views[len(members) :] == views[: 3 - len(members)]
                    assert set(views) == set(members)
        assert sorted(seen) == [0, 1, 2, 3, 4]


def test_pk_batches_of_an_exact_multiple_keep_their_size():
    sampler = PKSampler([0, 1, 2, 3, 4, 5], instances=3, views=1, seed=0)
    assert [len(b) for b in sampler.epoch(0)] == [3, 3]
    assert len(sampler) == 2
    two = PKSampler([5, 9], instances=2, views=2, seed=1)
    assert len(two) == 1 and sorted(two.epoch(0)[0]) == [0, 0, 1, 1]


def test_a_last_batch_of_two_instances_stays_apart():
    sampler = PKSampler(list(range(7)), instances=5, views=1)
    assert [len(b) for b in sampler.epoch(0)] == [5, 2]
    assert [len(b) for b in PKSampler(list(range(6)), instances=5, views=1).epoch(0)] == [6]


def test_pk_batches_depend_on_seed_and_epoch_only():
    labels = list(range(20))
    first = PKSampler(labels, 4, 1, seed=2)
    assert first.epoch(3) == PKSampler(labels, 4, 1, seed=2).epoch(3)
    assert len({str(first.epoch(e)) for e in range(4)}) == 4
    assert first.epoch(0) != PKSampler(labels, 4, 1, seed=3).epoch(0)
    rng = np.random.default_rng([2, 0])
    assert [int(x) for x in first.epoch(0)[0]] == [int(x) for x in rng.permutation(20)[:4]]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (([[0, 1]], 2, 2), "^labels: expected a non-empty 1-D"),
        (([0, 1], 2, 0), "^views"),
        (([0, 1], 2, 1, -1), "^seed"),
        (([0, 1], 1, 1), "^instances"),
        (([3, 3], 2, 1), "^labels: expected at least 2 instances, got 1"),
    ],
)
def test_bad_sampler_arguments_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        PKSampler(*arguments[:3], seed=arguments[3] if len(arguments) > 3 else 0)


def test_the_views_of_one_instance_may_be_one():
    assert PKSampler([0, 1], 2, 1).epoch(0)[0] in ([0, 1], [1, 0])
    with pytest.raises(ValueError, match="^epoch"):
        PKSampler([0, 1], 2, 1).epoch(-1)


def test_triplet_batches_are_a_seeded_permutation_of_whole_triplets():
    anchors, positives, negatives = torch.arange(7), torch.arange(7) + 10, torch.arange(7) + 20
    batches = triplet_batches((anchors, positives, negatives), 3, seed=5, epoch=2)
    assert [len(b) for b in batches] == [9, 9, 3]
    order = np.random.default_rng([5, 2, 1]).permutation(7)
    flat = [i for b in batches for i in b]
    assert flat == [v for a in order for v in (a, a + 10, a + 20)]
    assert all(type(i) is int for i in flat)
    assert batches != triplet_batches((anchors, positives, negatives), 3, seed=5, epoch=3)
    assert triplet_batches((anchors, positives, negatives), 7, seed=5, epoch=2) == [flat]


def test_bad_triplet_batch_arguments_are_named():
    triplets = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    assert triplet_batches(triplets, 1, seed=0, epoch=0) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="^per_batch"):
        triplet_batches(triplets, 0, seed=0, epoch=0)
    with pytest.raises(ValueError, match="^seed"):
        triplet_batches(triplets, 1, seed=-1, epoch=0)


# -- views ------------------------------------------------------------------------------------


def test_a_view_generator_is_seeded_by_all_four_numbers():
    draws = {
        key: view_generator(*key).random()
        for key in [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)]
    }
    assert len(set(draws.values())) == 5
    assert view_generator(3, 1, 4, 1).random() == np.random.default_rng([3, 1, 4, 1]).random()
    assert not math.isnan(draws[(0, 0, 0, 0)])


def test_the_default_seed_is_zero():
    labels = list(range(12))
    assert PKSampler(labels, 3, 1).epoch(0) == PKSampler(labels, 3, 1, seed=0).epoch(0)
    assert PKSampler(labels, 3, 1).epoch(0) != PKSampler(labels, 3, 1, seed=1).epoch(0)


def test_empty_or_single_labels_are_refused_with_their_reason():
    with pytest.raises(ValueError, match="^labels: expected a non-empty 1-D sequence, got"):
        PKSampler([], 2, 1)
    with pytest.raises(ValueError, match="^labels: expected at least 2 instances, got 1"):
        PKSampler([7], 2, 1)


def test_the_curves_stand_side_by_side_titled_and_labelled(tmp_path: Path, monkeypatch):
    from matplotlib.figure import Figure

    seen, grids = [], []
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        for axis in self.axes:
            box = axis.get_position()
            seen.append((axis.get_title(), axis.get_xlabel(), round(box.x0, 3), round(box.y0, 3)))
            lines = axis.xaxis.get_gridlines() + axis.yaxis.get_gridlines()
            grids.append({(line.get_visible(), line.get_alpha()) for line in lines})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    write_metrics(tmp_path, [{"epoch": 1, "loss": 1.0, "active_triplets": 2, "p_at_1": 0.5}])
    assert [(title, label) for title, label, _, _ in seen] == [
        ("loss", "epoch"),
        ("active triplets", "epoch"),
        ("validation P@1", "epoch"),
    ]
    lefts, bottoms = [x for _, _, x, _ in seen], {y for _, _, _, y in seen}
    assert lefts == sorted(lefts) and len(set(lefts)) == 3 and len(bottoms) == 1  # one row
    assert grids == [{(True, 0.3)}] * 3  # a faint grid on each


def test_the_plot_is_a_png_whatever_the_default_format(tmp_path: Path):
    import matplotlib

    with matplotlib.rc_context({"savefig.format": "svg"}):
        write_metrics(tmp_path, [{"epoch": 1, "loss": 1.0}])
    assert Image.open(tmp_path / "metrics.png").format == "PNG"
