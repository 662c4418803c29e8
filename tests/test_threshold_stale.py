"""A calibrated threshold goes stale when the collection's whitening switches on or off.

The default recipe whitens from WHITEN_MIN_REFERENCES references on; every commit that
changes the collection refits, so crossing that size in either direction changes the
similarities a stored threshold compares against.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyinstance.calibration import calibrate
from pyinstance.cli import main
from pyinstance.identification import Identifier
from pyinstance.index import DEFAULT_RECIPE, InstanceIndex, StaleThresholdError
from pyinstance.index.recipe import WHITEN_MIN_REFERENCES
from pyinstance.index.thresholds import calibrated, record_key, stale_reason
from pyinstance.objects import ObjectFinder
from tests.index.conftest import DIM, tiny_recipe

PER_INSTANCE = 4
#: The default recipe's post-processing on a tiny descriptor dimension.
RECIPE = tiny_recipe().with_(postprocess=DEFAULT_RECIPE.postprocess)


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Descriptors with a common direction and an anisotropic spread, as a network's are."""
    x = 2.0 + rng.standard_normal((n, DIM)) * np.geomspace(1.0, 0.05, DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _add(index: InstanceIndex, start: int, count: int, seed: int) -> None:
    rows = range(start, start + count)
    index.add_descriptors(
        _rows(np.random.default_rng(seed), count),
        [f"i{row // PER_INSTANCE}" for row in rows],
        [f"im{row}" for row in rows],
        index.recipe,
    )


def _index(tmp_path: Path, references: int) -> InstanceIndex:
    index = InstanceIndex.create(tmp_path / "index", RECIPE)
    _add(index, 0, references, seed=0)
    return index


def _remove_last(index: InstanceIndex, count: int) -> None:
    for row in range(len(index) - count, len(index)):
        index.remove(image=f"im{row}")


@pytest.mark.parametrize(
    ("start", "change"),
    [
        (WHITEN_MIN_REFERENCES - 1, +1),  # unwhitened -> whitened
        (WHITEN_MIN_REFERENCES, -1),  # whitened -> unwhitened
    ],
)
def test_crossing_the_whitening_size_makes_the_threshold_stale(
    tmp_path: Path, start: int, change: int
) -> None:
    with _index(tmp_path, start) as index:
        was_whitened = start >= WHITEN_MIN_REFERENCES
        assert index.whitened is was_whitened
        fit = calibrate(index, target_far=0.05, views=0)
        assert index.get_setting(record_key("threshold")) == {
            "whitened": was_whitened,
            "references": start,
        }
        assert Identifier(index).threshold == pytest.approx(fit.threshold)
        assert index.info()["stale_thresholds"] == {}

        if change > 0:
            _add(index, start, change, seed=1)
        else:
            _remove_last(index, -change)
        assert index.whitened is not was_whitened
        reason = index.info()["stale_thresholds"]["threshold"]
        then, now = ("whitened", "unwhitened") if was_whitened else ("unwhitened", "whitened")
        assert f"calibrated on {then} descriptors ({start} references)" in reason
        assert f"({start + change} references) is now searched {now}" in reason
        assert f"pyinstance calibrate {index.path}'" in reason
        with pytest.raises(StaleThresholdError, match=r"^threshold: the index's threshold .*"):
            Identifier(index)
        # a threshold of the caller's own, or none, is still taken
        assert Identifier(index, threshold=0.3).threshold == 0.3
        assert Identifier(index, threshold=0).threshold == 0.0
        # calibrating again makes it fresh
        calibrate(index, target_far=0.05, views=0)
        assert index.info()["stale_thresholds"] == {}
        assert Identifier(index).threshold is not None


@pytest.mark.parametrize(
    ("start", "change"),
    [
        (WHITEN_MIN_REFERENCES + 4, +4),  # whitened before and after
        (WHITEN_MIN_REFERENCES + 4, -4),  # down to the size that still whitens
        (WHITEN_MIN_REFERENCES - 9, +8),  # unwhitened before and after
        (WHITEN_MIN_REFERENCES - 5, -4),
    ],
)
def test_a_collection_that_stays_on_one_side_keeps_its_threshold(
    tmp_path: Path, start: int, change: int
) -> None:
    with _index(tmp_path, start) as index:
        fit = calibrate(index, target_far=0.05, views=0)
        if change > 0:
            _add(index, start, change, seed=1)
        else:
            _remove_last(index, -change)
        assert index.info()["stale_thresholds"] == {}
        assert stale_reason(index, "threshold") is None
        assert Identifier(index).threshold == pytest.approx(fit.threshold)


def test_a_threshold_without_a_record_is_taken_as_it_is(tmp_path: Path) -> None:
    with _index(tmp_path, WHITEN_MIN_REFERENCES - 1) as index:
        index.set_setting("threshold", 0.4)  # stored by hand (or by an older version)
        _add(index, WHITEN_MIN_REFERENCES - 1, 1, seed=1)
        assert index.whitened
        assert index.info()["stale_thresholds"] == {}
        assert Identifier(index).threshold == 0.4


def test_a_stale_objects_threshold_is_refused_by_the_finder(tmp_path: Path) -> None:
    with _index(tmp_path, WHITEN_MIN_REFERENCES) as index:
        index.set_settings(calibrated(index, "objects_threshold", 0.2))
        assert ObjectFinder(index).threshold == 0.2
        _remove_last(index, 1)
        stale = index.info()["stale_thresholds"]
        assert list(stale) == ["objects_threshold"]
        assert f"pyinstance calibrate {index.path} --objects'" in stale["objects_threshold"]
        with pytest.raises(StaleThresholdError, match=r"^objects_threshold: the index's objects"):
            ObjectFinder(index)
        assert ObjectFinder(index, threshold=0.25).threshold == 0.25


def test_only_calibrated_thresholds_get_a_record(tmp_path: Path) -> None:
    with _index(tmp_path, 8) as index, pytest.raises(ValueError, match="^setting: expected one"):
        calibrated(index, "classifier", 0.5)


def test_a_recipe_without_whitening_never_goes_stale(tmp_path: Path) -> None:
    with InstanceIndex.create(tmp_path / "index", tiny_recipe()) as index:
        _add(index, 0, WHITEN_MIN_REFERENCES + 1, seed=0)
        calibrate(index, target_far=0.05, views=0)
        _remove_last(index, 2)
        assert not index.whitened
        assert index.info()["stale_thresholds"] == {}


def test_index_info_and_remove_say_the_threshold_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _index(tmp_path, WHITEN_MIN_REFERENCES) as index:
        calibrate(index, target_far=0.05, views=0)
        path = str(index.path)
    code = main(["index", "remove", path, "--image", f"im{WHITEN_MIN_REFERENCES - 1}", "--json"])
    removed = json.loads(capsys.readouterr().out)
    assert code == 0 and "now searched unwhitened" in removed["stale_thresholds"]["threshold"]
    assert main(["index", "info", path]) == 0
    out = capsys.readouterr().out
    assert "stale threshold" in out and "calibrate" in out
    assert main(["index", "info", path, "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["stale_thresholds"]) == {"threshold"}


@pytest.mark.parametrize(
    ("references", "same_as"),
    [
        (WHITEN_MIN_REFERENCES, {"whiten": {}}),  # whitened: every fold whitens
        (WHITEN_MIN_REFERENCES - 1, {}),  # skipped: no fold whitens
    ],
)
def test_calibration_folds_search_as_the_index_does_at_the_whitening_size(
    tmp_path: Path, references: int, same_as: dict
) -> None:
    """Leave-out folds hold fewer references than ``min_references`` near the boundary;
    the threshold must still be fitted on the similarities the index's searches give."""
    fits = []
    for name, recipe in (("default", RECIPE), ("plain", tiny_recipe().with_(postprocess=same_as))):
        with InstanceIndex.create(tmp_path / name, recipe) as index:
            _add(index, 0, references, seed=0)
            fits.append(calibrate(index, target_far=0.05, views=0).to_dict())
    assert fits[0] == fits[1]
