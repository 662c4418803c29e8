"""thresholds.py on a stand-in index: the record stored beside a threshold, when a stored
threshold counts as stale and the message that says why, word for word."""

from __future__ import annotations

from typing import Any

import pytest

from pyinstance.index.thresholds import (
    THRESHOLD_SETTINGS,
    StaleThresholdError,
    calibrated,
    calibration_record,
    check_fresh,
    record_key,
    stale_reason,
)


class FakeIndex:
    """What thresholds.py reads of an index: ``whitened``, ``len``, settings, ``path``."""

    def __init__(self, whitened: bool, references: int, settings: dict[str, Any]) -> None:
        self.whitened = whitened
        self.references = references
        self.settings = settings
        self.path = "/data/my-index"
        self.asked: list[str] = []

    def __len__(self) -> int:
        return self.references

    def get_setting(self, key: str) -> Any:
        self.asked.append(key)
        return self.settings.get(key)


def test_threshold_settings_and_record_keys() -> None:
    assert THRESHOLD_SETTINGS == {"threshold": "", "objects_threshold": " --objects"}
    assert record_key("threshold") == "threshold_calibrated_on"
    assert record_key("objects_threshold") == "objects_threshold_calibrated_on"
    assert issubclass(StaleThresholdError, ValueError)


@pytest.mark.parametrize(("whitened", "references"), [(True, 12), (False, 3)])
def test_the_record_is_the_score_space_and_the_size(whitened: bool, references: int) -> None:
    index = FakeIndex(whitened, references, {})
    assert calibration_record(index) == {"whitened": whitened, "references": references}  # type: ignore[arg-type]
    assert calibrated(index, "objects_threshold", 0.25) == {  # type: ignore[arg-type]
        "objects_threshold": 0.25,
        "objects_threshold_calibrated_on": {"whitened": whitened, "references": references},
    }


def test_only_known_settings_are_calibrated() -> None:
    index = FakeIndex(True, 5, {})
    assert calibrated(index, "threshold", 0.5) == {  # type: ignore[arg-type]
        "threshold": 0.5,
        "threshold_calibrated_on": {"whitened": True, "references": 5},
    }
    for bad in ("thresholds", "objects", "Threshold"):
        with pytest.raises(
            ValueError, match=r"^setting: expected one of \('threshold', 'objects_threshold'\)"
        ):
            calibrated(index, bad, 0.5)  # type: ignore[arg-type]


def _settings(whitened: Any, setting: str = "threshold") -> dict[str, Any]:
    return {setting: 0.4, record_key(setting): {"whitened": whitened, "references": 7}}


@pytest.mark.parametrize("whitened", [True, False])
def test_calibrated_as_searched_now_is_fresh(whitened: bool) -> None:
    index = FakeIndex(whitened, 20, _settings(whitened))
    assert stale_reason(index, "threshold") is None  # type: ignore[arg-type]
    check_fresh(index, "threshold", "--threshold")  # type: ignore[arg-type]


def test_no_threshold_or_no_record_is_never_stale() -> None:
    no_threshold = FakeIndex(True, 20, {record_key("threshold"): {"whitened": False}})
    assert stale_reason(no_threshold, "threshold") is None  # type: ignore[arg-type]
    for record in (None, "whitened", [False], 0):
        index = FakeIndex(True, 20, {"threshold": 0.4, record_key("threshold"): record})
        assert stale_reason(index, "threshold") is None  # type: ignore[arg-type]
    # a record of another setting does not count
    other = FakeIndex(True, 20, {"threshold": 0.4, **_settings(False, "objects_threshold")})
    assert stale_reason(other, "threshold") is None  # type: ignore[arg-type]


def test_stale_once_whitened() -> None:
    index = FakeIndex(True, 20, _settings(False))
    assert stale_reason(index, "threshold") == (  # type: ignore[arg-type]
        "the index's threshold was calibrated on unwhitened descriptors (7 references) but "
        "the collection (20 references) is now searched whitened, so its similarities are "
        "on another scale; run 'pyinstance calibrate /data/my-index' again"
    )


def test_stale_once_unwhitened_names_the_objects_option() -> None:
    index = FakeIndex(False, 3, _settings(True, "objects_threshold"))
    expected = (
        "the index's objects threshold was calibrated on whitened descriptors (7 references) "
        "but the collection (3 references) is now searched unwhitened, so its similarities "
        "are on another scale; run 'pyinstance calibrate /data/my-index --objects' again"
    )
    assert stale_reason(index, "objects_threshold") == expected  # type: ignore[arg-type]
    with pytest.raises(StaleThresholdError) as raised:
        check_fresh(index, "objects_threshold", "min_similarity=...")  # type: ignore[arg-type]
    assert str(raised.value) == f"objects_threshold: {expected}, or pass min_similarity=..."


def test_a_record_without_whitened_counts_as_unwhitened() -> None:
    whitened = FakeIndex(True, 4, {"threshold": 0.4, record_key("threshold"): {}})
    assert stale_reason(whitened, "threshold") == (  # type: ignore[arg-type]
        "the index's threshold was calibrated on unwhitened descriptors (None references) but "
        "the collection (4 references) is now searched whitened, so its similarities are on "
        "another scale; run 'pyinstance calibrate /data/my-index' again"
    )
