"""Demo query photos: really changed, deterministic, and the packaged collection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyinstance.demo import COLLECTION_DIR, UNKNOWN_DIR
from pyinstance.demo.queries import CHANGES, DemoQuery, image_files, make_queries

INSTANCES = sorted(p.name for p in COLLECTION_DIR.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> list[DemoQuery]:
    return make_queries(tmp_path_factory.mktemp("queries"))


def _pixels(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    if size is not None:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def _reference(instance: str) -> Path:
    return image_files(COLLECTION_DIR / instance)[0]


def test_the_packaged_collection_is_listed_with_licences() -> None:
    assert len(INSTANCES) >= 8
    licences = (COLLECTION_DIR / "LICENSES.md").read_text(encoding="utf-8")
    unknown = image_files(UNKNOWN_DIR)
    assert unknown
    for file in [_reference(name) for name in INSTANCES] + unknown:
        assert max(Image.open(file).size) <= 512
        assert file.relative_to(COLLECTION_DIR.parent).as_posix().split("/", 1)[1] in licences


def test_one_query_per_change_and_instance_plus_the_unknowns(queries: list[DemoQuery]) -> None:
    known = [q for q in queries if q.truth is not None]
    assert len(known) == len(INSTANCES) * len(CHANGES)
    assert sorted({q.truth for q in known}) == INSTANCES
    assert [q.path.name for q in queries if q.truth is None] == [
        f"unknown-{p.stem}.jpg" for p in image_files(UNKNOWN_DIR)
    ]
    for query in queries:
        with Image.open(query.path) as image:
            image.verify()


def test_queries_are_really_changed(queries: list[DemoQuery]) -> None:
    by_name = {q.path.name: q for q in queries}
    for instance in INSTANCES:
        reference = Image.open(_reference(instance))
        ref_w, ref_h = reference.size
        ref_pixels = _pixels(_reference(instance))

        cropped = Image.open(by_name[f"{instance}-crop.jpg"].path).size
        assert cropped[0] < 0.75 * ref_w and cropped[1] < 0.75 * ref_h
        rotated = Image.open(by_name[f"{instance}-rotate.jpg"].path).size
        assert rotated[0] > ref_w and rotated[1] > ref_h  # expanded to hold the corners
        for change in ("smaller", "lighting", "perspective"):
            assert _pixels(by_name[f"{instance}-{change}.jpg"].path).shape == ref_pixels.shape
        lit = _pixels(by_name[f"{instance}-lighting.jpg"].path)
        ratios = lit.mean(axis=(0, 1)) / ref_pixels.mean(axis=(0, 1))
        assert np.abs(ratios - 1).max() > 0.1, (instance, ratios)  # other light or colour
        # perspective: one side shrunk, so two corners show the wall behind the object
        warped = _pixels(by_name[f"{instance}-perspective.jpg"].path)
        corners = warped[[1, -2, -2, 1], [1, 1, -2, -2]]
        assert (np.abs(corners - np.array([128, 122, 112])).max(axis=1) < 12).sum() >= 2
        # smaller: a band of plain wall remains on at least one side
        small = _pixels(by_name[f"{instance}-smaller.jpg"].path)
        wall = np.abs(small - np.array([128, 122, 112])).max(axis=2) < 12
        assert wall.mean() > 0.5


def _collection(root: Path) -> Path:
    for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / name).mkdir(parents=True)
        image = Image.new("RGB", (120, 90), colour)
        image.paste((240, 240, 240), (20, 10, 60, 50))  # some structure to warp
        image.save(root / name / "photo.png")
    return root


def test_same_seed_same_photos_other_seed_other_photos(tmp_path: Path) -> None:
    collection = _collection(tmp_path / "c")
    first = make_queries(tmp_path / "a", collection=collection, unknown=None, seed=3)
    again = make_queries(tmp_path / "b", collection=collection, unknown=None, seed=3)
    other = make_queries(tmp_path / "d", collection=collection, unknown=None, seed=4)
    assert [q.path.read_bytes() for q in first] == [q.path.read_bytes() for q in again]
    differing = [
        q.path.name
        for q, o in zip(first, other, strict=True)
        if q.path.read_bytes() != o.path.read_bytes()
    ]
    assert len(differing) == len(first)


def test_any_collection_folder(tmp_path: Path) -> None:
    collection = _collection(tmp_path / "c")
    (collection / "empty").mkdir()  # no image: not an instance
    queries = make_queries(tmp_path / "out", collection=collection, unknown=None)
    assert sorted({q.truth for q in queries}) == ["blue", "red"]
    assert len(queries) == 2 * len(CHANGES)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="collection: no such folder"):
        make_queries(tmp_path / "out", collection=tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="collection: .* has no instance sub-folder"):
        make_queries(tmp_path / "out", collection=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="unknown: no such folder"):
        make_queries(tmp_path / "out", unknown=tmp_path / "missing")
    with pytest.raises(TypeError, match="seed: expected an int"):
        make_queries(tmp_path / "out", seed="0")  # type: ignore[arg-type]
