"""Instance metadata: a few named fields per instance (title, author, ...), checked and read
from CSV or JSON files.

A field value is a str, a finite number or a bool; in an update ``None`` deletes the field.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Limits of one instance's metadata.
MAX_FIELDS = 32
MAX_KEY_LENGTH = 64
MAX_TEXT_LENGTH = 4000
#: Columns of a metadata CSV that name the instance (the first one present is used).
ID_COLUMNS = ("instance_id", "instance", "id")

FieldValue = str | int | float | bool
Metadata = dict[str, FieldValue]


def check_fields(instance: str, fields: Any, *, allow_none: bool) -> dict[str, FieldValue | None]:
    """``fields`` checked as one instance's metadata (``None`` values only when
    ``allow_none``: an update deleting them); raises ``ValueError`` naming what is wrong."""
    where = f"metadata of {instance!r}"
    if not isinstance(fields, Mapping):
        raise ValueError(f"{where}: expected an object of fields, got {type(fields).__name__}")
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"{where}: {len(fields)} fields, at most {MAX_FIELDS} allowed")
    checked: dict[str, FieldValue | None] = {}
    for key, value in fields.items():
        if (
            not isinstance(key, str)
            or not key.strip()
            or len(key) > MAX_KEY_LENGTH
            or any(ord(c) < 32 for c in key)
            or not _is_text(key)
        ):
            raise ValueError(
                f"{where}: field names must be non-empty str of at most {MAX_KEY_LENGTH} "
                f"printable characters, got {str(key)[:80]!r}"
            )
        if value is None and allow_none:
            checked[key] = None
        elif isinstance(value, str):
            if len(value) > MAX_TEXT_LENGTH:
                raise ValueError(f"{where}: {key!r} longer than {MAX_TEXT_LENGTH} characters")
            if not _is_text(value):
                raise ValueError(f"{where}: {key!r} is not valid Unicode text (a lone surrogate)")
            checked[key] = value
        elif isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
            checked[key] = value
        else:
            raise ValueError(
                f"{where}: {key!r} must be a str, a finite number or a bool"
                + (" (null deletes it)" if allow_none else "")
                + f", got {value!r}"[:120]
            )
    return checked


def _is_text(text: str) -> bool:
    """Whether ``text`` can be stored: UTF-8 cannot encode a lone surrogate (``"\\ud800"``
    in JSON decodes to one)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_metadata_file(path: str | os.PathLike[str]) -> dict[str, Metadata]:
    """Metadata per instance id from a CSV or JSON file.

    CSV: a header with an ``instance_id`` (or ``instance``, ``id``) column; every other
    column is a field, empty cells are left out (e.g. the museum's ``instances.csv``:
    ``instance_id,author,title``). JSON: ``{"<id>": {field: value}}`` or a list of objects
    each with an ``instance_id`` (or ``instance``, ``id``) key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata: no such file {str(path)!r}")
    if path.suffix.lower() == ".json":
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"metadata: {str(path)!r} is not valid JSON ({error})") from error
        entries = _json_entries(content, path)
    elif path.suffix.lower() == ".csv":
        entries = _csv_entries(path)
    else:
        raise ValueError(f"metadata: {str(path)!r}: expected a .csv or .json file")
    out: dict[str, Metadata] = {}
    for instance, fields in entries:
        if not isinstance(instance, str) or not instance.strip():
            raise ValueError(f"metadata: {str(path)!r}: an entry has no instance id")
        if instance in out:
            raise ValueError(f"metadata: {str(path)!r}: instance {instance!r} appears twice")
        out[instance] = check_fields(instance, fields, allow_none=False)  # type: ignore[assignment]
    return out


def _csv_entries(path: Path) -> list[tuple[str, dict[str, Any]]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        key = next((c for c in ID_COLUMNS if c in columns), None)
        if key is None:
            raise ValueError(
                f"metadata: {str(path)!r}: no instance column (one of {', '.join(ID_COLUMNS)}) "
                f"in the header {columns}"
            )
        return [
            (row[key], {c: v for c, v in row.items() if c != key and c and v not in (None, "")})
            for row in reader
        ]


def _json_entries(content: Any, path: Path) -> list[tuple[str, Any]]:
    if isinstance(content, dict):
        return list(content.items())
    if isinstance(content, list) and all(isinstance(item, dict) for item in content):
        entries = []
        for item in content:
            key = next((c for c in ID_COLUMNS if c in item), None)
            if key is None:
                raise ValueError(
                    f"metadata: {str(path)!r}: an object has no {' / '.join(ID_COLUMNS)} key"
                )
            entries.append((item[key], {k: v for k, v in item.items() if k != key}))
        return entries
    raise ValueError(
        f"metadata: {str(path)!r}: expected an object {{id: fields}} or a list of objects"
    )
