"""metadata.py's checks at their limits, and how CSV and JSON files name the instance."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pyinstance
from pyinstance.index.metadata import (
    MAX_FIELDS,
    MAX_KEY_LENGTH,
    MAX_TEXT_LENGTH,
    check_fields,
    read_metadata_file,
)


def test_limits_are_inclusive() -> None:
    assert (MAX_FIELDS, MAX_KEY_LENGTH, MAX_TEXT_LENGTH) == (32, 64, 4000)
    fields = {f"f{i}": i for i in range(32)}
    assert check_fields("a", fields, allow_none=False) == fields
    with pytest.raises(ValueError, match=r"^metadata of 'a': 33 fields, at most 32 allowed"):
        check_fields("a", fields | {"one": 1}, allow_none=False)
    assert check_fields("a", {"k" * 64: "v"}, allow_none=False) == {"k" * 64: "v"}
    with pytest.raises(ValueError, match=r"^metadata of 'a': field names must be non-empty str"):
        check_fields("a", {"k" * 65: "v"}, allow_none=False)
    assert check_fields("a", {"t": "x" * 4000}, allow_none=False) == {"t": "x" * 4000}
    with pytest.raises(ValueError, match=r"^metadata of 'a': 't' longer than 4000 characters"):
        check_fields("a", {"t": "x" * 4001}, allow_none=False)


@pytest.mark.parametrize("key", ["", "   ", "tab\there", "new\nline", "\x1f", 3, None])
def test_bad_field_names(key: object) -> None:
    with pytest.raises(ValueError, match=r"^metadata of 'a': field names must be non-empty str"):
        check_fields("a", {key: "v"}, allow_none=True)


def test_field_names_may_hold_spaces_and_any_printable_text() -> None:
    fields = {"year made": 1901, " x": "é", "~": ""}
    assert check_fields("a", fields, allow_none=False) == fields


def test_values_kept_as_given_and_none_only_when_deleting() -> None:
    fields = {"s": "text", "i": 3, "f": 2.5, "b": False, "neg": -1e300}
    checked = check_fields("a", fields, allow_none=False)
    assert checked == fields and type(checked["b"]) is bool and type(checked["i"]) is int
    assert check_fields("a", {"s": None, "t": "x"}, allow_none=True) == {"s": None, "t": "x"}
    for bad in (None, float("inf"), float("-inf"), float("nan"), [1], {"a": 1}, b"x"):
        with pytest.raises(ValueError, match=r"^metadata of 'a': 's' must be a str, a finite"):
            check_fields("a", {"s": bad}, allow_none=False)
    with pytest.raises(ValueError, match=r"\(null deletes it\), got inf"):
        check_fields("a", {"s": float("inf")}, allow_none=True)
    with pytest.raises(
        ValueError, match=r"^metadata of 'b': expected an object of fields, got list"
    ):
        check_fields("b", ["s"], allow_none=False)


def test_csv_uses_the_first_id_column_and_drops_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "m.CSV"
    # a byte-order mark, id columns in another order, an unnamed trailing column
    path.write_text("\ufeffid,title,instance,\n7,Youth,a,\n8,,b,x\n", encoding="utf-8")
    assert read_metadata_file(path) == {"a": {"id": "7", "title": "Youth"}, "b": {"id": "8"}}
    other = tmp_path / "n.csv"
    other.write_text("instance_id,instance,year\nx,y,1\n", encoding="utf-8")
    assert read_metadata_file(other) == {"x": {"instance": "y", "year": "1"}}
    empty_id = tmp_path / "e.csv"
    empty_id.write_text("id,title\n ,T\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"an entry has no instance id$"):
        read_metadata_file(empty_id)
    header_only = tmp_path / "h.csv"
    header_only.write_text("", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"no instance column \(one of instance_id, instance, id\)"
    ):
        read_metadata_file(header_only)


def test_json_lists_use_the_first_id_key(tmp_path: Path) -> None:
    path = tmp_path / "m.Json"
    path.write_text(
        json.dumps([{"instance": "a", "id": 7, "t": "x"}, {"instance_id": "b", "instance": "c"}])
    )
    assert read_metadata_file(path) == {"a": {"id": 7, "t": "x"}, "b": {"instance": "c"}}
    path.write_text(json.dumps([{"instance": "a"}, {"title": "T"}]))
    with pytest.raises(ValueError, match=r"an object has no instance_id / instance / id key$"):
        read_metadata_file(path)
    path.write_text(json.dumps([{"id": 5}]))
    with pytest.raises(ValueError, match=r"an entry has no instance id$"):
        read_metadata_file(path)
    path.write_text(json.dumps({"a": {}, "b": {"n": 1}}))
    assert read_metadata_file(path) == {"a": {}, "b": {"n": 1}}
    path.write_text(json.dumps([{"id": "a"}, 3]))
    with pytest.raises(
        ValueError, match=r"expected an object \{id: fields\} or a list of objects$"
    ):
        read_metadata_file(path)
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match=r"is not valid JSON"):
        read_metadata_file(path)


def test_a_folder_is_no_metadata_file(tmp_path: Path) -> None:
    (tmp_path / "m.csv").mkdir()
    with pytest.raises(FileNotFoundError, match=r"^metadata: no such file"):
        read_metadata_file(tmp_path / "m.csv")


def test_text_with_a_lone_surrogate_is_refused_naming_the_field(tmp_path: Path) -> None:
    # JSON's "\ud800" decodes to a lone surrogate, which UTF-8 (and so SQLite) cannot store
    path = tmp_path / "m.json"
    path.write_text('{"a": {"title": "Youth \\ud800"}}', encoding="ascii")
    with pytest.raises(
        ValueError,
        match=r"^metadata of 'a': 'title' is not valid Unicode text \(a lone surrogate\)$",
    ):
        read_metadata_file(path)
    with pytest.raises(ValueError, match=r"^metadata of 'a': field names must be non-empty str"):
        check_fields("a", {"t\udc80": "x"}, allow_none=True)
    assert check_fields("a", {"t\u00e9": "\U0001f600 ok"}, allow_none=False) == {
        "t\u00e9": "\U0001f600 ok"
    }


def test_a_quoted_csv_cell_keeps_its_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b'instance_id,title\r\na,"two\r\nlines"\r\nb,"one\nbreak"\r\n')
    assert read_metadata_file(path) == {
        "a": {"title": "two\r\nlines"},
        "b": {"title": "one\nbreak"},
    }


def test_errors_in_a_json_list_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"instance": "a"}, {"title": "T"}]))
    with pytest.raises(ValueError, match=rf"^metadata: {re.escape(repr(str(path)))}: an object"):
        read_metadata_file(path)
    path.write_text(json.dumps([3]))
    with pytest.raises(ValueError, match=rf"^metadata: {re.escape(repr(str(path)))}: expected"):
        read_metadata_file(path)


READ_UNDER_ASCII_LOCALE = """
import locale, sys
from pyinstance.index.metadata import read_metadata_file
print(locale.getpreferredencoding(False))
print(ascii([read_metadata_file(path) for path in sys.argv[1:]]))
"""


def test_files_are_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Under ``LC_ALL=C`` without UTF-8 mode Python's default encoding is ASCII."""
    as_json = tmp_path / "m.json"
    as_json.write_text('{"mona": {"title": "Musée — Joconde"}}', encoding="utf-8")
    as_csv = tmp_path / "m.csv"
    as_csv.write_text("instance_id,title\nmona,Musée — Joconde\n", encoding="utf-8")
    environment = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONUTF8": "0",
        "PYTHONCOERCECLOCALE": "0",
        # the subprocess imports the same pyinstance as this test
        "PYTHONPATH": str(Path(pyinstance.__file__).parents[1]),
    }
    result = subprocess.run(
        [sys.executable, "-P", "-c", READ_UNDER_ASCII_LOCALE, str(as_json), str(as_csv)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    encoding, answers = result.stdout.splitlines()
    assert encoding == "ANSI_X3.4-1968"  # the locale really is ASCII
    expected = {"mona": {"title": "Musée — Joconde"}}
    assert answers == ascii([expected, expected])
