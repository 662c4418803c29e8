"""AddReport.to_dict: every field under its name, skipped files as path and reason."""

from __future__ import annotations

from pyinstance.index.describer import FileError
from pyinstance.index.report import AddReport


def test_to_dict_names_every_field() -> None:
    report = AddReport(
        added=3,
        updated=2,
        unchanged=5,
        skipped=(FileError("a.jpg", "not an image"), FileError("b.png", "too small")),
        instances=7,
        seconds=1.5,
    )
    assert report.to_dict() == {
        "added": 3,
        "updated": 2,
        "unchanged": 5,
        "skipped": [
            {"path": "a.jpg", "reason": "not an image"},
            {"path": "b.png", "reason": "too small"},
        ],
        "instances": 7,
        "seconds": 1.5,
    }


def test_defaults_are_zero_and_nothing_skipped() -> None:
    assert AddReport(added=1).to_dict() == {
        "added": 1,
        "updated": 0,
        "unchanged": 0,
        "skipped": [],
        "instances": 0,
        "seconds": 0.0,
    }
