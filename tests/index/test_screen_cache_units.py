"""ScreenCache on hand-made snapshots over memory-mapped files: when a screen is built,
reused, cut to a prefix, extended, saved, loaded, refused and forgotten; what ``_save``
deletes. (test_screened_search.py checks the same through whole indexes.)"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import pyinstance.index.screen_cache as cache_module
from pyinstance.index.screen_cache import ScreenCache, _generation, _save, screen_path
from pyinstance.index.store import Snapshot
from pyinstance.ops import KnnScreen

DIM = 8


def _rows(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _file(folder: Path, n: int, generation: int = 0, dim: int = DIM, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"descriptors-{generation}.bin"
    _rows(n, dim, seed).tofile(path)
    return path


def _snapshot(path: Path, n: int, generation: int = 0, dim: int = DIM) -> Snapshot:
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))
    return Snapshot(
        version=1,
        generation=generation,
        descriptors=mapped,
        slots=np.arange(n),
        rows=np.arange(n),
        labels=np.zeros(n, dtype=np.int64),
        image_ids=(),
        instances=(),
        dtype="float32",
    )


def _matches(screen: KnnScreen, snapshot: Snapshot) -> bool:
    """Whether ``screen`` has the snapshot's shape and (spot-checked) content."""
    return screen.matches(torch.from_numpy(np.array(snapshot.descriptors)))


def _saved_rows(path: Path, snapshot: Snapshot) -> int:
    return KnnScreen.load(path, snapshot.refs()).rows


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every mapped array counts as large."""
    monkeypatch.setattr(cache_module, "SCREEN_MIN_BYTES", 0)


def test_documented_limits() -> None:
    assert cache_module.SCREEN_MIN_BYTES == 8 * 1024 * 1024
    assert (cache_module.SCREEN_CACHE_SIZE, cache_module.RESAVE_GROWTH) == (4, 1.25)
    assert cache_module.STALE_TEMPORARY_SECONDS == 600.0
    assert cache_module.screens._size == 4
    assert screen_path("/x/ix/descriptors-3.bin", 3) == Path("/x/ix/screens/screen-3.bin")
    assert screen_path(Path("ix/d.bin"), 12) == Path("ix/screens/screen-12.bin")


@pytest.mark.parametrize(
    ("name", "generation"),
    [
        ("screen-0.bin", 0),
        ("screen-17.bin", 17),
        ("screen-.bin", None),
        ("screen-x.bin", None),
        ("screen-1.bin.tmp", None),
        (".screen-1.bin.9.ab.tmp", None),
        ("7", None),
        ("screen-7", 7),
        ("7.bin", 7),
        ("screen--1.bin", None),
    ],
)
def test_generation_of_a_file_name(name: str, generation: int | None) -> None:
    assert _generation(name) == generation


def test_unmapped_or_small_descriptors_are_scanned_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ScreenCache(2)
    path = _file(tmp_path, 50)
    in_memory = Snapshot(
        1, 0, _rows(50), np.arange(50), np.arange(50), np.zeros(50), (), (), "float32"
    )
    monkeypatch.setattr(cache_module, "SCREEN_MIN_BYTES", 50 * DIM * 4 + 1)
    for snapshot in (in_memory, _snapshot(path, 50), in_memory, _snapshot(path, 50)):
        assert cache.get(snapshot) is None
    assert not cache._screens and not cache._seen
    assert not (tmp_path / "screens").exists()
    monkeypatch.setattr(cache_module, "SCREEN_MIN_BYTES", 50 * DIM * 4)  # inclusive
    assert cache.get(_snapshot(path, 50)) is None
    assert cache.get(_snapshot(path, 50)).rows == 50


def test_first_search_builds_nothing_the_second_builds_and_saves(tmp_path: Path, small) -> None:
    cache = ScreenCache(2)
    path = _file(tmp_path, 100)
    snapshot = _snapshot(path, 100)
    assert cache.get(snapshot) is None
    assert not (tmp_path / "screens").exists()
    built = cache.get(snapshot)
    assert built is not None and built.rows == 100 and built.dim == DIM
    saved = tmp_path / "screens" / "screen-0.bin"
    assert _saved_rows(saved, snapshot) == 100
    assert cache.get(_snapshot(path, 100)) is built  # the same object, nothing rebuilt
    assert _matches(built, snapshot)


def test_an_older_snapshot_gets_a_prefix(tmp_path: Path, small) -> None:
    cache = ScreenCache(2)
    path = _file(tmp_path, 200)
    for _ in range(2):
        full = cache.get(_snapshot(path, 200))
    older = cache.get(_snapshot(path, 120))
    assert older is not full and older.rows == 120 and full.rows == 200
    assert _matches(older, _snapshot(path, 120))
    assert [s.rows for s in cache._screens.values()] == [200]


def test_appended_rows_extend_the_screen_and_resave_at_a_quarter_more(
    tmp_path: Path, small
) -> None:
    cache = ScreenCache(2)
    path = _file(tmp_path, 200)
    saved = tmp_path / "screens" / "screen-0.bin"
    for _ in range(2):
        cache.get(_snapshot(path, 100))
    grown = cache.get(_snapshot(path, 124))
    assert grown.rows == 124 and _matches(grown, _snapshot(path, 124))
    assert [s.rows for s in cache._screens.values()] == [124]
    assert _saved_rows(saved, _snapshot(path, 200)) == 100  # 124 < 1.25 × 100: not saved
    assert cache.get(_snapshot(path, 125)).rows == 125
    assert _saved_rows(saved, _snapshot(path, 200)) == 125
    assert cache.get(_snapshot(path, 156)).rows == 156
    assert _saved_rows(saved, _snapshot(path, 200)) == 125  # 156 < 1.25 × 125


def test_a_saved_screen_is_loaded_on_the_first_search(tmp_path: Path, small) -> None:
    path = _file(tmp_path, 200)
    saved = tmp_path / "screens" / "screen-0.bin"
    first = ScreenCache(2)
    assert first.get(_snapshot(path, 100)) is None
    first.get(_snapshot(path, 100))
    assert _saved_rows(saved, _snapshot(path, 100)) == 100
    loaded = ScreenCache(2)  # another process
    inode = saved.stat().st_ino
    screen = loaded.get(_snapshot(path, 100))
    assert saved.stat().st_ino == inode  # loaded, not written again
    assert screen is not None and screen.rows == 100
    assert _matches(screen, _snapshot(path, 100))
    saved.unlink()  # the load counted as saved: 124 rows are not saved again
    assert loaded.get(_snapshot(path, 124)).rows == 124
    assert not saved.exists()
    grown = ScreenCache(2)  # a fresh cache loads the file and extends it to the snapshot
    for _ in range(2):
        first.get(_snapshot(path, 125))
    assert _saved_rows(saved, _snapshot(path, 200)) == 125
    screen = grown.get(_snapshot(path, 200))
    assert screen.rows == 200 and _matches(screen, _snapshot(path, 200))
    assert _saved_rows(saved, _snapshot(path, 200)) == 200  # 200 >= 1.25 × 125


def test_a_damaged_file_is_deleted_an_unreadable_one_left(tmp_path: Path, small) -> None:
    path = _file(tmp_path, 60)
    saved = tmp_path / "screens" / "screen-0.bin"
    saved.parent.mkdir()
    saved.write_bytes(b"not a screen at all, long enough for a header")
    cache = ScreenCache(2)
    assert cache.get(_snapshot(path, 60)) is None
    assert not saved.exists()
    assert cache.get(_snapshot(path, 60)).rows == 60
    assert _saved_rows(saved, _snapshot(path, 60)) == 60
    saved.unlink()
    saved.mkdir()  # open() fails with an OSError that is no ScreenFileError
    other = ScreenCache(2)
    assert other.get(_snapshot(path, 60)) is None
    assert saved.is_dir()
    assert other.get(_snapshot(path, 60)).rows == 60  # built; saving it fails quietly
    assert saved.is_dir()


def test_the_most_recently_used_screens_and_generations_are_kept(tmp_path: Path, small) -> None:
    cache = ScreenCache(2)
    paths = [_file(tmp_path / name, 30, seed=i) for i, name in enumerate("abc")]
    a, b, c = (_snapshot(p, 30) for p in paths)
    for snapshot in (a, b):
        assert cache.get(snapshot) is None
        assert cache.get(snapshot) is not None
    assert cache.get(a) is not None  # a is now the most recent
    assert cache.get(c) is None and cache.get(c) is not None
    kept = [key[0] for key in cache._screens]
    assert kept == [str(paths[0]), str(paths[2])]  # b dropped, the least recently used
    fresh = ScreenCache(2)
    for snapshot in (a, b, c):
        fresh.get(snapshot)  # each seen once
    assert [key[0] for key in fresh._seen] == [str(paths[1]), str(paths[2])]
    for file in tmp_path.rglob("screen-*.bin"):
        file.unlink()
    assert fresh.get(a) is None  # a was forgotten: again a first search


def test_a_new_index_in_the_same_file_is_not_given_the_old_screen(tmp_path: Path, small) -> None:
    cache = ScreenCache(4)
    path = _file(tmp_path, 40)
    for _ in range(2):
        cache.get(_snapshot(path, 40))
    wider = _file(tmp_path, 40, dim=2 * DIM, seed=3)  # the same name, D doubled
    (tmp_path / "screens" / "screen-0.bin").unlink()
    assert cache.get(_snapshot(wider, 40, dim=2 * DIM)) is None
    screen = cache.get(_snapshot(wider, 40, dim=2 * DIM))
    assert screen.dim == 2 * DIM and _matches(screen, _snapshot(wider, 40, dim=2 * DIM))
    regenerated = _snapshot(path, 40, generation=5, dim=2 * DIM)
    assert cache.get(regenerated) is None  # another generation: another key


def test_save_keeps_newer_generations_and_deletes_older_ones(tmp_path: Path) -> None:
    folder = tmp_path / "screens"
    screen = KnnScreen.of(_rows(10))
    _save(screen, folder / "screen-2.bin", 2)  # creates the folder
    assert sorted(p.name for p in folder.iterdir()) == ["screen-2.bin"]
    for name in ("screen-1.bin", "screen-0.bin", "screen-x.bin", "notes.txt"):
        (folder / name).write_bytes(b"old")
    bigger = KnnScreen.of(_rows(20))
    _save(bigger, folder / "screen-2.bin", 2)  # the same generation: replaced
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "screen-2.bin", "screen-x.bin"]
    assert KnnScreen.load(folder / "screen-2.bin", _rows(20)).rows == 20
    _save(KnnScreen.of(_rows(5)), folder / "screen-1.bin", 1)  # a newer one exists: not saved
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt", "screen-2.bin", "screen-x.bin"]
    _save(screen, tmp_path / "absent" / "screens" / "screen-0.bin", 0)  # no parent: quietly nothing
    assert not (tmp_path / "absent").exists()


def test_save_deletes_only_stale_temporaries(tmp_path: Path) -> None:
    folder = tmp_path / "screens"
    folder.mkdir()
    names = {
        "stale": ".screen-0.bin.1.aa.tmp",
        "recent": ".screen-0.bin.2.bb.tmp",
        "stale_other": "old-notes",
    }
    for name in names.values():
        (folder / name).write_bytes(b"x")
    for key, age in (("stale", 601), ("stale_other", 10_000), ("recent", 590)):
        then = (folder / names[key]).stat().st_mtime - age
        os.utime(folder / names[key], (then, then))
    _save(KnnScreen.of(_rows(10)), folder / "screen-0.bin", 0)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [names["recent"], names["stale_other"], "screen-0.bin"]
    )


def test_a_one_row_screen_is_saved_too(tmp_path: Path, small) -> None:
    cache = ScreenCache(2)
    path = _file(tmp_path, 1)
    for _ in range(2):
        screen = cache.get(_snapshot(path, 1))
    assert screen.rows == 1
    assert _saved_rows(tmp_path / "screens" / "screen-0.bin", _snapshot(path, 1)) == 1


def test_a_damaged_file_that_cannot_be_deleted_is_left(
    tmp_path: Path, small, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, 20)
    saved = tmp_path / "screens" / "screen-0.bin"
    saved.parent.mkdir()
    saved.write_bytes(b"damaged" * 20)

    def refuse(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "read-only", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    assert ScreenCache(2).get(_snapshot(path, 20)) is None  # no error: scanned plainly
    assert saved.read_bytes() == b"damaged" * 20


def test_a_bigger_screen_cached_meanwhile_is_kept(
    tmp_path: Path, small, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another thread caches a screen of more rows while this one builds: the bigger stays."""
    cache = ScreenCache(2)
    path = _file(tmp_path, 200)
    older = _snapshot(path, 100)
    assert cache.get(older) is None
    bigger = KnnScreen.of(_rows(200))
    key = next(iter(cache._seen))
    build = KnnScreen.of

    def racing(refs: object) -> KnnScreen:
        cache._screens[key] = bigger  # what the other thread stored meanwhile
        return build(refs)

    monkeypatch.setattr(KnnScreen, "of", racing)
    assert cache.get(older).rows == 100
    assert cache._screens[key] is bigger


def test_save_tries_every_deletion_when_one_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "screens"
    folder.mkdir()
    for name in ("screen-0.bin", "screen-1.bin"):
        (folder / name).write_bytes(b"old")
    tried: list[str] = []
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if not self.name.startswith("screen-"):  # the save's own temporary file
            return unlink(self, missing_ok=missing_ok)
        tried.append(self.name)
        raise PermissionError(13, "read-only", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    _save(KnnScreen.of(_rows(10)), folder / "screen-2.bin", 2)
    assert sorted(tried) == ["screen-0.bin", "screen-1.bin"]
    assert KnnScreen.load(folder / "screen-2.bin", _rows(10)).rows == 10
