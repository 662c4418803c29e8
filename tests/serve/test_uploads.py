"""Uploaded photos no image refers to are removed: at start, after failed commits, after
removals; never while another writer is between writing a photo and committing it."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pyinstance.index import IndexWriteError, InstanceIndex
from pyinstance.index.store import Store
from pyinstance.serve import create_app
from pyinstance.serve.upload_folder import UploadFolder

from .conftest import TOKEN
from .test_api import AUTH, add_photo, assert_error


def photo_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != ".lock"} if folder.is_dir() else set()


def test_clean_keeps_referenced_files_only(tmp_path: Path) -> None:
    folder = UploadFolder(tmp_path / "uploads")
    kept = folder.write("a.jpg", b"a")
    folder.write("b.jpg", b"b")
    (folder.path / ".b.jpg.x1.tmp").write_bytes(b"half")
    assert folder.clean([kept]) == 2
    assert photo_files(folder.path) == {"a.jpg"}
    assert folder.clean([str(kept)]) == 0


def test_clean_waits_for_writers_and_else_removes_nothing(tmp_path: Path) -> None:
    folder = UploadFolder(tmp_path / "uploads")
    with folder.writing():
        folder.write("pending.jpg", b"p")  # about to be committed by its writer
        assert folder.clean([], wait=0.2) == 0
        assert photo_files(folder.path) == {"pending.jpg"}
    assert folder.clean([]) == 1


def test_orphans_are_removed_at_start(index_copy: Path, pairs: Path) -> None:
    with TestClient(create_app(index_copy, token=TOKEN)) as client:
        photo = pairs / "query" / "rubberwhale2.png"
        added = add_photo(client, "whale-two", photo)
        assert added.status_code == 201, added.text
    uploads = index_copy / "uploads"
    (kept,) = photo_files(uploads)
    (uploads / "0123abcd.jpg").write_bytes(b"a crash between write and commit")
    (uploads / f".{kept}.abc.tmp").write_bytes(b"a write cut short")
    with TestClient(create_app(index_copy, token=TOKEN)) as client:
        assert photo_files(uploads) == {kept}
        image = client.get("/v1/instances/whale-two").json()["reference_images"][0]
        assert client.get(image["thumbnail_url"]).status_code == 200


def test_failed_commit_leaves_no_upload(
    index_copy: Path, pairs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise IndexWriteError(errno.ENOSPC, "index: writing failed (disk full)")

    with TestClient(create_app(index_copy, token=TOKEN)) as client:
        monkeypatch.setattr(Store, "add", full)
        photo = pairs / "query" / "rubberwhale2.png"
        response = add_photo(client, "whale-two", photo)
        assert_error(response, 507, "write_failed")
        assert photo_files(index_copy / "uploads") == set()
        assert client.get("/healthz").status_code == 200
    with InstanceIndex.open(index_copy) as index:
        assert "whale-two" not in index.instances


def test_removed_images_take_their_uploads_along(index_copy: Path, pairs: Path) -> None:
    with TestClient(create_app(index_copy, token=TOKEN)) as client:
        files = [
            ("files", (p.name, p.read_bytes(), "image/png"))
            for p in (pairs / "query" / "rubberwhale2.png", pairs / "query" / "graf3.png")
        ]
        added = client.post("/v1/instances/two/images", headers=AUTH, files=files)
        assert added.status_code == 201, added.text
        first, second = added.json()["images"]
        assert len(photo_files(index_copy / "uploads")) == 2
        assert client.delete(f"/v1/images/{first['id']}", headers=AUTH).status_code == 200
        assert photo_files(index_copy / "uploads") == {Path(second["id"]).name}
        assert client.delete("/v1/instances/two", headers=AUTH).status_code == 200
        assert photo_files(index_copy / "uploads") == set()
