"""Manifest CSV loading on the real shared sets, and every malformed-manifest error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyinstance.data import Manifest


def test_opencv_pairs(shared_data: Path) -> None:
    manifest = Manifest.read(shared_data / "opencv-pairs" / "manifest.csv")
    assert len(manifest) == 16
    references = manifest.filter(split="reference")
    queries = manifest.filter(split="query")
    assert len(references) == 9 and len(queries) == 7
    assert set(queries.instance_ids) < set(references.instance_ids)
    assert all(path.is_file() for path in manifest.paths)
    assert manifest[0].path.name == "box.png" and manifest[0].query_set is None
    assert isinstance(manifest[:3], Manifest) and len(manifest[:3]) == 3


def test_museum_query_sets(shared_data: Path) -> None:
    manifest = Manifest.read(shared_data / "museum" / "manifest.csv")
    references = manifest.filter(split="reference")
    queries = manifest.filter(split="query")
    assert (len(references), len(queries)) == (287, 63)
    assert all(q is None for q in references.query_sets)
    assert all(q is not None for q in queries.query_sets)
    hard = queries.filter(query_set="qsd2_w2")
    assert 0 < len(hard) < len(queries) and all(e.split == "query" for e in hard)
    assert len({e.instance_id for e in queries}) == 43


def _write(folder: Path, text: str, images: tuple[str, ...] = ("a.jpg", "b.jpg")) -> Path:
    for name in images:
        (folder / name).write_bytes(b"")
    path = folder / "manifest.csv"
    path.write_text(text)
    return path


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="manifest"):
        Manifest.read(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) split; found path, instance_id"):
        Manifest.read(_write(tmp_path, "path,instance_id\na.jpg,x\n"))
    with pytest.raises(ValueError, match=r"manifest\.csv:3: split must be one of"):
        Manifest.read(_write(tmp_path, "path,instance_id,split\na.jpg,x,query\nb.jpg,y,train\n"))
    with pytest.raises(ValueError, match=r"manifest\.csv:2: empty instance_id"):
        Manifest.read(_write(tmp_path, "path,instance_id,split\na.jpg,,query\n"))
    with pytest.raises(ValueError, match="duplicate paths: a.jpg"):
        Manifest.read(
            _write(tmp_path, "path,instance_id,split\na.jpg,x,query\na.jpg,x,reference\n")
        )
    with pytest.raises(ValueError, match="relative"):
        Manifest.read(_write(tmp_path, "path,instance_id,split\n../a.jpg,x,query\n"))
    missing = _write(tmp_path, "path,instance_id,split\na.jpg,x,query\nc.jpg,x,reference\n")
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\) not found.*c\.jpg"):
        Manifest.read(missing)
    assert len(Manifest.read(missing, check_files=False)) == 2
    manifest = Manifest.read(
        _write(tmp_path, "path,instance_id,split,query_set\na.jpg,x,query,-\n")
    )
    assert manifest[0].query_set is None
    with pytest.raises(ValueError, match="split: expected one of"):
        manifest.filter(split="train")


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    path = tmp_path / "excel.csv"
    path.write_bytes("path,instance_id,split\na.jpg,Mona Lisa é,query\n".encode("utf-8-sig"))
    manifest = Manifest.read(path)
    assert manifest[0].instance_id == "Mona Lisa é" and manifest[0].split == "query"


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "utf-16-le"])
def test_other_encodings_name_the_file(tmp_path: Path, encoding: str) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    path = tmp_path / f"{encoding}.csv"
    path.write_bytes("path,instance_id,split\na.jpg,café,query\n".encode(encoding))
    with pytest.raises(ValueError, match=rf"manifest '.*{encoding}\.csv'.*UTF-8"):
        Manifest.read(path)


def test_over_long_field_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    path = tmp_path / "long.csv"
    path.write_text("path,instance_id,split\na.jpg,x,query\na.jpg," + "y" * 200_000 + ",query\n")
    with pytest.raises(
        ValueError, match=r"manifest '.*long\.csv': malformed CSV after line 2.*field"
    ):
        Manifest.read(path)


def test_symlink_leading_outside_the_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"")
    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "innocent.jpg").symlink_to(outside)
    (collection / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
    for name in ("innocent.jpg", "elsewhere/secret.jpg"):
        path = collection / "manifest.csv"
        path.write_text(f"path,instance_id,split\n{name},x,query\n")
        with pytest.raises(ValueError, match=rf"manifest\.csv:2: '{name}' leads outside"):
            Manifest.read(path)
    inside = collection / "inside.jpg"
    inside.write_bytes(b"")
    (collection / "alias.jpg").symlink_to(inside)  # a link that stays inside is fine
    path.write_text("path,instance_id,split\nalias.jpg,x,query\n")
    assert Manifest.read(path)[0].path == collection / "alias.jpg"


def test_a_file_reached_through_a_linked_folder_is_a_duplicate(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"")
    (tmp_path / "linked").symlink_to(tmp_path / "images", target_is_directory=True)
    path = tmp_path / "manifest.csv"
    path.write_text("path,instance_id,split\nimages/a.jpg,x,reference\nlinked/a.jpg,x,query\n")
    with pytest.raises(ValueError, match=r"duplicate paths: images/a\.jpg = linked/a\.jpg"):
        Manifest.read(path)


def test_unknown_queries_only_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path, "path,instance_id,split\na.jpg,,query\nb.jpg,x,reference\n")
    with pytest.raises(ValueError, match=r"manifest\.csv:2: empty instance_id"):
        Manifest.read(path)
    manifest = Manifest.read(path, unknown_queries=True)
    assert manifest.instance_ids == [None, "x"] and manifest[0].row.endswith("manifest.csv:2")
    reference = _write(tmp_path, "path,instance_id,split\na.jpg,,reference\n")
    with pytest.raises(ValueError, match="empty instance_id"):  # references always need one
        Manifest.read(reference, unknown_queries=True)


def test_bad_rows_skipped_when_asked(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "path,instance_id,split\n"
        "a.jpg,x,query\n"
        ",x,query\n"
        "b.jpg,y,train\n"
        "../c.jpg,x,query\n"
        "./a.jpg,x,reference\n"
        "b.jpg,y,reference\n",
    )
    manifest = Manifest.read(path, skip_bad_rows=True)
    assert [e.path.name for e in manifest] == ["a.jpg", "b.jpg"]
    reasons = [str(s) for s in manifest.skipped]
    assert len(reasons) == 4
    assert reasons[0].endswith("manifest.csv:3: empty path")
    assert "manifest.csv:4: split must be one of" in reasons[1]
    assert "manifest.csv:5: path must be relative" in reasons[2]
    assert "manifest.csv:6: duplicate: a.jpg is listed first at " in reasons[3]
    assert reasons[3].endswith("manifest.csv:2")
    assert manifest.filter(split="query").skipped == manifest.skipped
    with pytest.raises(ValueError, match="missing column"):
        Manifest.read(_write(tmp_path, "path,split\na.jpg,query\n"), skip_bad_rows=True)
