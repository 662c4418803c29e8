"""Manifest answers written for mutation survivors: query-set filtering, slices keeping the
skipped rows, ``repr``, and long lists of missing files cut after ten names."""

from __future__ import annotations

import re

import pytest

from pyinstance.data.manifest import Manifest


def _write(tmp_path, rows: list[str]):  # noqa: ANN001, ANN202
    path = tmp_path / "manifest.csv"
    path.write_text("path,instance_id,split,query_set\n" + "\n".join(rows) + "\n")
    return path


def test_filter_by_query_set_keeps_only_that_set(tmp_path):
    path = _write(
        tmp_path,
        ["r.jpg,a,reference,-", "q1.jpg,a,query,phone", "q2.jpg,b,query,scan", "q3.jpg,b,query,"],
    )
    manifest = Manifest.read(path, check_files=False)
    assert [e.path.name for e in manifest.filter(query_set="phone")] == ["q1.jpg"]
    assert [e.path.name for e in manifest.filter(split="query", query_set="scan")] == ["q2.jpg"]
    assert len(manifest.filter(query_set="none-such")) == 0


def test_a_slice_keeps_the_skipped_rows_and_the_root(tmp_path):
    path = _write(tmp_path, ["a.jpg,a,reference,", ",b,reference,", "c.jpg,c,query,"])
    manifest = Manifest.read(path, check_files=False, skip_bad_rows=True)
    assert [str(problem) for problem in manifest.skipped] == [f"{path}:3: empty path"]
    part = manifest[1:]
    assert isinstance(part, Manifest) and [e.path.name for e in part] == ["c.jpg"]
    assert part.skipped == manifest.skipped and part.root == tmp_path


def test_repr_names_the_count_and_the_folder(tmp_path):
    manifest = Manifest.read(_write(tmp_path, ["a.jpg,a,reference,"]), check_files=False)
    assert repr(manifest) == f"Manifest(1 images under {str(tmp_path)!r})"


@pytest.mark.parametrize(
    ("count", "tail"),
    [(10, "9.jpg"), (11, "9.jpg, ... and 1 more"), (13, "9.jpg, ... and 3 more")],
)
def test_missing_files_are_listed_up_to_ten(tmp_path, count, tail):
    path = _write(tmp_path, [f"{i}.jpg,a,reference," for i in range(count)])
    listed = ", ".join(f"{i}.jpg" for i in range(9))
    with pytest.raises(FileNotFoundError, match=re.escape(f": {listed}, {tail}") + "$"):
        Manifest.read(path)
