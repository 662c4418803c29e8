"""sources.py: which files a folder, a manifest or a file gives, under which instance and
image id, and what is refused or skipped (no image is decoded: files are only listed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pyinstance.index.describer import FileError
from pyinstance.index.sources import SourceImage, collect, file_sha256


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def _listing(images: list[SourceImage], root: Path) -> list[tuple[str, str, str]]:
    return [(str(i.path.relative_to(root)), i.instance, i.image_id) for i in images]


def test_a_folder_of_instance_folders(tmp_path: Path) -> None:
    _touch(tmp_path, "b/2.jpg", "b/1.jpg", "a/sub/x.png", "a/.hidden.jpg", ".git/c.jpg")
    _touch(tmp_path, "a/.cache/y.jpg", "loose.jpg", ".dotfile")
    images, errors = collect(tmp_path)
    assert _listing(images, tmp_path) == [
        ("a/sub/x.png", "a", "a/sub/x.png"),
        ("b/1.jpg", "b", "b/1.jpg"),
        ("b/2.jpg", "b", "b/2.jpg"),
    ]
    assert errors == [
        FileError(
            str(tmp_path / "loose.jpg"),
            "skipped: not inside an instance sub-folder (or use --instance)",
        )
    ]


def test_a_folder_of_one_instance(tmp_path: Path) -> None:
    _touch(tmp_path, "z.jpg", "deep/y.jpg", ".hidden/w.jpg", "deep/.v.jpg")
    images, errors = collect(str(tmp_path), instance="mona")
    assert _listing(images, tmp_path) == [
        ("deep/y.jpg", "mona", "mona/deep/y.jpg"),
        ("z.jpg", "mona", "mona/z.jpg"),
    ]
    assert errors == []


def test_image_files_need_an_instance(tmp_path: Path) -> None:
    _touch(tmp_path, "a/one.jpg", "two.JPG")
    images, errors = collect([tmp_path / "a" / "one.jpg", tmp_path / "two.JPG"], "x")
    assert images == [
        SourceImage(tmp_path / "a" / "one.jpg", "x", "x/one.jpg"),
        SourceImage(tmp_path / "two.JPG", "x", "x/two.JPG"),
    ]
    assert errors == []
    with pytest.raises(ValueError, match=r"^instance: image file .*one\.jpg' needs an instance id"):
        collect(tmp_path / "a" / "one.jpg")


def test_a_manifest_gives_its_reference_rows(tmp_path: Path) -> None:
    _touch(tmp_path, "refs/a1.jpg", "refs/b1.jpg", "q/a.jpg")
    manifest = tmp_path / "set.CSV"
    manifest.write_text(
        "path,instance_id,split\nrefs/a1.jpg,a,reference\nq/a.jpg,a,query\n"
        "refs/b1.jpg,b,reference\nrefs/missing.jpg,c,reference\n"
    )
    images, errors = collect(manifest)
    assert _listing(images, tmp_path) == [
        ("refs/a1.jpg", "a", "refs/a1.jpg"),
        ("refs/b1.jpg", "b", "refs/b1.jpg"),
        ("refs/missing.jpg", "c", "refs/missing.jpg"),  # files are checked when described
    ]
    assert errors == []
    with pytest.raises(ValueError, match=r"^instance: a manifest names the instances itself"):
        collect(manifest, instance="a")


def test_the_same_image_id_twice_is_skipped(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.jpg", "a/2.jpg")
    images, errors = collect([tmp_path / "a", tmp_path / "a" / "2.jpg"], "a")
    assert _listing(images, tmp_path) == [("a/1.jpg", "a", "a/1.jpg"), ("a/2.jpg", "a", "a/2.jpg")]
    assert errors == [
        FileError(str(tmp_path / "a" / "2.jpg"), "skipped: image id 'a/2.jpg' given twice")
    ]


def test_sources_that_cannot_be_used(tmp_path: Path) -> None:
    for bad in ([], (), 3, None):
        with pytest.raises(ValueError, match=r"^source: expected one or more paths"):
            collect(bad)  # type: ignore[arg-type]
    for bad_instance in ("", "  ", 3):
        with pytest.raises(ValueError, match=r"^instance: expected a non-empty instance id"):
            collect(tmp_path, bad_instance)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match=r"^source: no such file or folder .*absent'"):
        collect(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(
        ValueError,
        match=rf"^source: no reference images found in {tmp_path / 'empty'}, {tmp_path / 'other'}$",
    ):
        collect([tmp_path / "empty", tmp_path / "other"])


def test_only_skipped_files_is_no_error(tmp_path: Path) -> None:
    _touch(tmp_path, "loose.jpg")
    images, errors = collect(tmp_path)
    assert images == [] and [e.path for e in errors] == [str(tmp_path / "loose.jpg")]


def test_file_sha256_reads_every_block(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    content = bytes(range(256)) * 9000  # more than one 1 MiB block
    path.write_bytes(content)
    assert file_sha256(path) == hashlib.sha256(content).hexdigest()
    (tmp_path / "empty.bin").write_bytes(b"")
    assert file_sha256(tmp_path / "empty.bin") == hashlib.sha256(b"").hexdigest()


def test_a_manifest_path_through_a_link_leading_outside_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "outside/secret.jpg", "set/refs/a.jpg")
    (tmp_path / "set" / "link").symlink_to(tmp_path / "outside")
    manifest = tmp_path / "set" / "m.csv"
    manifest.write_text(
        "path,instance_id,split\nrefs/a.jpg,a,reference\nlink/secret.jpg,b,reference\n"
    )
    with pytest.raises(ValueError, match=r"'link/secret\.jpg' leads outside the manifest's folder"):
        collect(manifest)


def test_images_after_a_repeated_id_are_kept(tmp_path: Path) -> None:
    _touch(tmp_path, "a/1.jpg", "a/2.jpg", "a/3.jpg")
    images, errors = collect([tmp_path / "a" / "1.jpg", tmp_path / "a"], "a")
    assert [i.image_id for i in images] == ["a/1.jpg", "a/2.jpg", "a/3.jpg"]
    assert errors == [
        FileError(str(tmp_path / "a" / "1.jpg"), "skipped: image id 'a/1.jpg' given twice")
    ]
