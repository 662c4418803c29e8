"""Manifest CSV reading details written for mutation survivors: quoted line breaks kept
verbatim, and an error in the header reported after line 1."""

from __future__ import annotations

import pytest

from pyinstance.data.manifest import Manifest, read_csv_rows


def test_a_quoted_line_break_is_kept_verbatim(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b'path,instance_id,split\r\na.jpg,"x\r\ny",reference\r\n')
    (entry,) = Manifest.read(path, check_files=False)
    assert entry.instance_id == "x\r\ny"


def test_an_error_in_the_header_is_after_line_one(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path" + "x" * 200_000 + ",instance_id,split\n")
    message = r"^manifest '.*': malformed CSV after line 1: field larger than field limit \(\d+\)$"
    with pytest.raises(ValueError, match=message):
        Manifest.read(path, check_files=False)


def test_a_missing_column_shows_the_expected_header(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("path,instance_id\na.jpg,a\n")
    with pytest.raises(
        ValueError,
        match=r": missing column\(s\) split; found path, instance_id "
        r"\(expected path,instance_id,split\[,query_set\]\)$",
    ):
        Manifest.read(path, check_files=False)


def test_a_skipped_row_keeps_its_whole_reason(tmp_path):
    # The reason itself holds ": " (in the path): only the "manifest <file>:<line>: "
    # prefix is cut.
    path = tmp_path / "manifest.csv"
    path.write_text("path,instance_id,split\n../x: y.jpg,a,reference\nb.jpg,b,query\n")
    manifest = Manifest.read(path, check_files=False, skip_bad_rows=True)
    assert [e.path.name for e in manifest] == ["b.jpg"]
    (problem,) = manifest.skipped
    assert problem.row == f"{path}:2"
    assert problem.reason == "path must be relative to the manifest's folder, got '../x: y.jpg'"


def test_every_optional_column_is_shown_in_the_expected_header(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("b\n1\n")
    with pytest.raises(
        ValueError, match=r"missing column\(s\) a; found b \(expected a\[,b\]\[,c\]\)$"
    ):
        read_csv_rows(path, "rows", ("a",), ("b", "c"))
