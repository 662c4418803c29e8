"""Indexes of real images: build, add, update, bad files, queries (opencv-pairs)."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pyinstance
from pyinstance.index import Describer, InstanceIndex
from pyinstance.models.regions import pool_windows
from tests.recipes import GEM_ONE_SCALE

#: Lite0 + GeM at one scale, unwhitened, at a small size.
RECIPE = GEM_ONE_SCALE.with_(max_side=224)


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def describer() -> Describer:
    return Describer(RECIPE)


@pytest.fixture
def collection(tmp_path: Path, pairs: Path) -> Path:
    """A folder with one sub-folder per instance: box (2 images), graf, home."""
    root = tmp_path / "collection"
    for instance, names in {
        "box": ["box.png", "home.jpg"],
        "graf": ["graf1.png"],
        "home": ["aero1.jpg"],
    }.items():
        (root / instance).mkdir(parents=True)
        for name in names:
            shutil.copy(pairs / "reference" / name, root / instance / name)
    return root


def build(path: Path, source, describer: Describer, **kwargs) -> tuple[InstanceIndex, object]:
    index = InstanceIndex.create(path, describer.recipe)
    index._describer = describer  # share the loaded network between tests
    return index, index.add(source, **kwargs)


def test_build_from_the_manifest_finds_each_reference_itself(tmp_path: Path, pairs: Path) -> None:
    index, report = InstanceIndex.build(
        tmp_path / "ix", pairs / "manifest.csv", RECIPE, progress=False
    )
    with index:
        assert (report.added, report.skipped, report.instances) == (9, (), 9)
        assert index.recipe.weights_sha256 is not None
        references = sorted((pairs / "reference").iterdir())
        found = index.search_images(references, 1)
        ids = index.image_ids(found.rows[:, 0])
        assert ids == [f"reference/{p.name}" for p in references]
        np.testing.assert_allclose(found.scores[:, 0], 1.0, atol=1e-4)
        # the query photos of four scenes find their instance first
        queries = ["box_in_scene.png", "graf3.png", "leuvenB.jpg", "aloeR.jpg"]
        found = index.search_images([pairs / "query" / q for q in queries], 1)
        assert [index.instances[c] for c in found.labels[:, 0]] == ["box", "graf", "leuven", "aloe"]
    with InstanceIndex.open(tmp_path / "ix") as again:  # the recipe rebuilds the describer
        assert again.describer.recipe == index.recipe
        assert again.search_images([references[0]], 1).scores[0, 0] == pytest.approx(1.0, abs=1e-4)


def test_folder_files_and_readding_is_a_no_op(
    tmp_path: Path, collection: Path, pairs: Path, describer
) -> None:
    index, report = build(tmp_path / "ix", collection, describer)
    with index:
        assert (report.added, report.instances) == (4, 3)
        assert sorted(index.image_ids()) == [
            "box/box.png",
            "box/home.jpg",
            "graf/graf1.png",
            "home/aero1.jpg",
        ]
        again = index.add(collection)
        assert (again.added, again.unchanged, again.skipped) == (0, 4, ())
        files = index.add(
            [pairs / "reference" / "leuvenA.jpg", pairs / "reference" / "aloeL.jpg"], instance="new"
        )
        assert files.added == 2 and "new" in index.instances
        assert "new/leuvenA.jpg" in index.image_ids()
        with pytest.raises(ValueError, match="needs an instance id"):
            index.add(pairs / "reference" / "box.png")
        assert len(index) == 6


def test_update_re_extracts_only_changed_files(
    tmp_path: Path, collection: Path, pairs: Path, describer, monkeypatch
) -> None:
    index, _ = build(tmp_path / "ix", collection, describer)
    with index:
        old_rows = dict(zip(index.image_ids(), index.rows().tolist(), strict=True))
        shutil.copy(
            pairs / "reference" / "building.jpg", collection / "graf" / "graf1.png"
        )  # content changed
        shutil.copy(
            pairs / "reference" / "basketball1.png", collection / "graf" / "extra.png"
        )  # new
        described = []
        real = describer.references
        monkeypatch.setattr(
            describer,
            "references",
            lambda paths, **kw: described.extend(paths) or real(paths, **kw),
        )
        report = index.add(collection)
        assert report.skipped[0].reason.startswith(
            "image id 'graf/graf1.png' is already in the index"
        )
        report = index.update(collection)
        assert (report.added, report.updated, report.unchanged) == (0, 1, 4)
        assert [Path(p).name for p in described] == ["extra.png", "graf1.png"]
        new_rows = dict(zip(index.image_ids(), index.rows().tolist(), strict=True))
        assert new_rows["graf/graf1.png"] != old_rows["graf/graf1.png"]
        assert all(new_rows[k] == old_rows[k] for k in old_rows if k != "graf/graf1.png")
        found = index.search_images([pairs / "reference" / "building.jpg"], 1)
        assert index.image_ids(found.rows[:, 0]) == ["graf/graf1.png"]


def test_bad_files_are_skipped_and_reported_one_by_one(
    tmp_path: Path, collection: Path, pairs: Path, describer
) -> None:
    bad = collection / "box"
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image")
    (bad / "truncated.jpg").write_bytes((pairs / "reference" / "home.jpg").read_bytes()[:2000])
    corrupt = bytearray((pairs / "reference" / "box.png").read_bytes())
    corrupt[100:400] = b"\xff" * 300
    (bad / "corrupt.png").write_bytes(bytes(corrupt))
    (bad / "bomb.png").write_bytes(png_header(40000, 40000))
    Image.new("RGB", (600, 2)).save(bad / "sliver.png")  # 2 px high: too small for the CNN
    (collection / "loose.jpg").write_bytes(b"")
    index, report = build(tmp_path / "ix", collection, describer)
    with index:
        reasons = {Path(e.path).name: e.reason for e in report.skipped}
        assert sorted(reasons) == [
            "bomb.png",
            "corrupt.png",
            "loose.jpg",
            "notes.txt",
            "sliver.png",
            "truncated.jpg",
            "zero.jpg",
        ]
        assert "minimum input size" in reasons["sliver.png"]
        assert "decompression bomb" in reasons["bomb.png"]
        assert "not inside an instance sub-folder" in reasons["loose.jpg"]
        assert all(
            "cannot decode" in reasons[n]
            for n in ("zero.jpg", "notes.txt", "truncated.jpg", "corrupt.png")
        )
        assert report.added == 4 and len(index) == 4


def test_an_empty_or_undecodable_collection_builds_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no reference images found"):
        InstanceIndex.build(tmp_path / "ix", tmp_path / "empty", RECIPE, progress=False)
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.jpg").write_bytes(b"\0" * 10)
    with pytest.raises(ValueError, match=r"no image could be added \(1 skipped.*x.jpg"):
        InstanceIndex.build(tmp_path / "ix", tmp_path / "bad", RECIPE, progress=False)
    assert not (tmp_path / "ix").exists()
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        InstanceIndex.build(tmp_path / "ix", tmp_path / "absent", RECIPE, progress=False)


def test_manifest_paths_may_not_escape_its_folder(tmp_path: Path, pairs: Path, describer) -> None:
    root = tmp_path / "set"
    (root / "img").mkdir(parents=True)
    shutil.copy(pairs / "reference" / "box.png", root / "img" / "box.png")
    (root / "img" / "link.jpg").symlink_to(pairs / "reference" / "home.jpg")
    (root / "m.csv").write_text(
        "path,instance_id,split\nimg/box.png,box,reference\nimg/link.jpg,home,reference\n"
    )
    with pytest.raises(ValueError, match="link.jpg' leads outside the manifest's folder"):
        build(tmp_path / "ix", root / "m.csv", describer)
    (root / "m.csv").write_text("path,instance_id,split\nimg/box.png,box,reference\n")
    index, report = build(tmp_path / "ix2", root / "m.csv", describer)
    with index:
        assert report.added == 1
        (root / "up.csv").write_text("path,instance_id,split\n../outside.jpg,x,reference\n")
        with pytest.raises(ValueError, match="must be relative to the manifest's folder"):
            index.add(root / "up.csv")
        assert len(index) == 1


def test_window_queries_pool_one_feature_map(tmp_path: Path, pairs: Path) -> None:
    windows = ((1.0, 1), (0.5, 2))
    recipe = RECIPE.with_(query_windows=windows)
    describer = Describer(recipe)
    image = pairs / "query" / "graf3.png"
    queries = describer.queries([image, image])
    assert queries.shape == (2, 5, recipe.dim)
    pixels = pyinstance.data.image_tensor(image)
    size = pyinstance.data.scaled_size(*pixels.shape[1:], recipe.max_side)
    batch = pyinstance.data.normalize(
        pyinstance.data.resize(pixels, size)[None],
        describer.backbone.input_mean,
        describer.backbone.input_std,
    )
    with torch.inference_mode():
        expected = pool_windows(describer.backbone(batch), describer.head, windows)[0]
    np.testing.assert_allclose(queries[0], expected.numpy(), atol=1e-5)
    # the whole-map window equals the plain query descriptor of the same image
    plain = Describer(RECIPE).queries([image])
    np.testing.assert_allclose(queries[0, 0], plain[0, 0], atol=1e-4)
    with pytest.raises(pyinstance.data.ImageDecodeError, match="cannot decode"):
        (tmp_path / "bad.jpg").write_bytes(b"junk")
        describer.queries([tmp_path / "bad.jpg"])


def test_a_describer_refuses_other_weights_and_wrong_dims() -> None:
    with pytest.raises(ValueError, match="recipe.dim: 99"):
        Describer(RECIPE.with_(dim=99))
    with pytest.raises(ValueError, match="recipe.weights_sha256: the index was made with weights"):
        Describer(RECIPE.with_(weights_sha256="0" * 64))
    with pytest.raises(ValueError, match="unknown|no backbone|not registered|efficientnet_lite9"):
        Describer(RECIPE.with_(backbone="efficientnet_lite9"))


def test_queries_are_described_at_the_query_side_references_at_max_side(pairs: Path) -> None:
    recipe = RECIPE.with_(query_max_side=320)
    describer = Describer(recipe)
    image = pairs / "query" / "aloeR.jpg"
    expected = pyinstance.extract(
        [image], describer.backbone, describer.head, max_side=320, progress=False
    )[:, 0]
    np.testing.assert_allclose(describer.queries([image])[:, 0], expected.numpy(), atol=1e-5)
    reference = pyinstance.extract(
        [image], describer.backbone, describer.head, max_side=224, progress=False
    )[:, 0]
    described, errors = describer.references([image])
    assert errors == []
    np.testing.assert_allclose(described, reference.numpy(), atol=1e-5)
    assert float((reference * expected).sum()) < 0.9999  # the two sizes really differ
    assert recipe.query_side == 320 and RECIPE.query_side == 224
    assert "queries at 320" in recipe.describe()
    with pytest.raises(ValueError, match="recipe.query_max_side"):
        RECIPE.with_(query_max_side=0)
