"""InstanceIndex's paths that describe image files (add, update, build, a whitening set
described from images, queries), with a fake describer whose descriptors depend only on each
file's bytes: no network is built."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import pyinstance.index.instance_index as instance_index_module
from pyinstance.index import InstanceIndex
from pyinstance.index.describer import FileError
from pyinstance.postprocess import PCAWhitening

from .conftest import DIM, tiny_recipe, unit_rows


def vector(data: bytes, dim: int = DIM) -> np.ndarray:
    """A unit vector determined by ``data`` only."""
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    x = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return x / np.linalg.norm(x)


class FakeDescriber:
    """Describes a file by its bytes; a file starting with ``bad`` cannot be decoded."""

    def __init__(self, recipe, *, device=None) -> None:
        self.recipe = recipe
        self.device = device
        self.engine = None
        self.calls: list[tuple[list[str], bool]] = []

    def set_engine(self, engine: str = "auto") -> str:
        self.engine = engine
        return engine

    def references(self, paths, progress: bool = False):
        self.calls.append(([str(p) for p in paths], progress))
        rows, errors = [], []
        for path in paths:
            data = Path(path).read_bytes()
            if data.startswith(b"bad"):
                errors.append(FileError(str(path), "cannot decode"))
            else:
                rows.append(vector(data, self.recipe.dim))
        out = np.array(rows, np.float32).reshape(len(rows), self.recipe.dim)
        per_image = self.recipe.descriptors_per_image
        if per_image > 1:
            out = np.repeat(out[:, None], per_image, axis=1)
        return out, errors

    def queries(self, images) -> np.ndarray:
        return np.stack([vector(image, self.recipe.dim) for image in images])[:, None]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeDescriber]:
    """Every Describer the index builds is a FakeDescriber (listed here)."""
    made: list[FakeDescriber] = []

    def build(recipe, *, device=None) -> FakeDescriber:
        made.append(FakeDescriber(recipe, device=device))
        return made[-1]

    monkeypatch.setattr(instance_index_module, "Describer", build)
    return made


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_add_describes_new_files_once_and_reports_each_outcome(tmp_path, fake) -> None:
    src = write(
        tmp_path / "src",
        {"a/1.jpg": b"one", "a/2.jpg": b"two", "b/3.jpg": b"three", "b/4.jpg": b"bad four"},
    )
    with InstanceIndex.create(tmp_path / "ix", tiny_recipe(), device="cpu") as index:
        report = index.add(src, progress=True, metadata={"a": {"title": "A"}})
        assert (report.added, report.updated, report.unchanged, report.instances) == (3, 0, 0, 2)
        assert report.skipped == (FileError(str(src / "b/4.jpg"), "cannot decode"),)
        assert 0 < report.seconds < 3600  # the wall time of this add, measured
        assert [(d.device, d.engine) for d in fake] == [("cpu", "torch")]
        assert fake[0].calls == [
            ([str(src / n) for n in ("a/1.jpg", "a/2.jpg", "b/3.jpg", "b/4.jpg")], True)
        ]
        assert index.image_ids() == ["a/1.jpg", "a/2.jpg", "b/3.jpg"]
        assert index.metadata() == {"a": {"title": "A"}}
        expected = np.stack([vector(b"one"), vector(b"two"), vector(b"three")])
        np.testing.assert_array_equal(index.descriptors(), expected)
        np.testing.assert_array_equal(index.raw_descriptors(), expected)
        images = index.images()
        assert [(i["id"], i["instance"], i["source"], i["sha256"]) for i in images] == [
            ("a/1.jpg", "a", str(src / "a/1.jpg"), hashlib.sha256(b"one").hexdigest()),
            ("a/2.jpg", "a", str(src / "a/2.jpg"), hashlib.sha256(b"two").hexdigest()),
            ("b/3.jpg", "b", str(src / "b/3.jpg"), hashlib.sha256(b"three").hexdigest()),
        ]
        # again: identical content is unchanged (also under another id, and twice in one
        # batch); other content under a known id is skipped; metadata alone is written
        write(
            src,
            {"a/2.jpg": b"two, changed", "c/5.jpg": b"one", "c/6.jpg": b"six", "c/7.jpg": b"six"},
        )
        (src / "b/4.jpg").unlink()
        report = index.add(src, metadata={"b": {"title": "B"}, "gone": {"title": "G"}})
        assert (report.added, report.updated, report.unchanged, report.instances) == (1, 0, 4, 3)
        assert report.skipped == (
            FileError(
                str(src / "a/2.jpg"),
                "image id 'a/2.jpg' is already in the index with other content (use update)",
            ),
        )
        assert fake[0].calls[-1] == ([str(src / "c/6.jpg")], False)
        assert index.metadata() == {"a": {"title": "A"}, "b": {"title": "B"}}
        assert len(fake) == 1
        report = index.add(src / "a", instance="a", metadata={"a": {"year": 1}})
        assert (report.added, report.unchanged, len(report.skipped), report.instances) == (
            0,
            1,
            1,
            3,
        )
        assert index.metadata()["a"] == {"title": "A", "year": 1}
        assert len(fake[0].calls) == 2  # nothing new: nothing described
        with pytest.raises(ValueError, match=r"^metadata: instance ids must be non-empty str"):
            index.add(src, metadata={"": {"t": 1}})
        write(src, {"z.jpg": b"zed"})
        assert index.add(src / "z.jpg", instance="z").added == 1
        assert index.image_ids()[-1] == "z/z.jpg" and "z" in index.instances


def test_add_skips_an_unreadable_file_and_an_all_failed_batch_adds_nothing(
    tmp_path, fake, monkeypatch
) -> None:
    src = write(tmp_path / "src", {"a/1.jpg": b"one", "a/2.jpg": b"bad", "a/3.jpg": b"three"})
    real = instance_index_module.file_sha256

    def sha(path):
        if path.name == "3.jpg":
            raise PermissionError("denied")
        return real(path)

    monkeypatch.setattr(instance_index_module, "file_sha256", sha)
    with InstanceIndex.create(tmp_path / "ix", tiny_recipe()) as index:
        report = index.add(src)
        assert report.skipped == (
            FileError(str(src / "a/3.jpg"), "cannot read: denied"),
            FileError(str(src / "a/2.jpg"), "cannot decode"),
        )
        assert report.added == 1 and index.image_ids() == ["a/1.jpg"]
        # every file to describe failed: the metadata is still written (it was dropped)
        report = index.add(src / "a/2.jpg", instance="b", metadata={"a": {"t": "x"}})
        assert (report.added, report.instances) == (0, 1) and len(index) == 1
        assert index.metadata() == {"a": {"t": "x"}}


def test_update_replaces_changed_files_and_compacts_the_tombstones(tmp_path, fake) -> None:
    src = write(tmp_path / "src", {f"a/{i}.jpg": b"v1 %d" % i for i in range(4)})
    with InstanceIndex.create(tmp_path / "ix", tiny_recipe()) as index:
        index.add(src)
        assert index.rows().tolist() == [0, 1, 2, 3]
        write(src, {"a/1.jpg": b"v2 1", "a/9.jpg": b"new"})
        report = index.update(src, progress=True)
        assert (report.added, report.updated, report.unchanged, report.skipped) == (1, 1, 3, ())
        assert fake[0].calls[-1] == ([str(src / "a/1.jpg"), str(src / "a/9.jpg")], True)
        # row 1 replaced by row 4: one tombstone in 6 rows, not compacted
        assert index.rows().tolist() == [0, 2, 3, 4, 5]
        assert index.info()["removed_rows"] == 1
        np.testing.assert_array_equal(index.descriptors()[3], vector(b"v2 1"))
        write(src, {"a/0.jpg": b"v3 0"})
        index.update(src)  # 2 tombstones in 7 rows: more than a quarter, compacted
        assert fake[0].calls[-1] == ([str(src / "a/0.jpg")], False)
        assert index.info()["removed_rows"] == 0
        assert index.rows().tolist() == [2, 3, 4, 5, 6]
        report = index.update(src / "a", instance="a")
        assert (report.added, report.updated, report.unchanged) == (0, 0, 5)


def test_auto_compaction_starts_beyond_a_quarter_of_the_rows(
    filled: tuple[InstanceIndex, np.ndarray],
) -> None:
    index, _ = filled
    index.remove(image=[f"im{i}" for i in range(15)])  # exactly a quarter: kept
    assert index.info()["removed_rows"] == 15
    index.remove(image="im15")
    assert index.info()["removed_rows"] == 0 and len(index) == 44


def test_build_makes_the_index_and_removes_it_when_nothing_was_added(tmp_path, fake) -> None:
    src = write(tmp_path / "src", {"a/1.jpg": b"one", "b/2.jpg": b"two", "b/3.jpg": b"bad"})
    index, report = InstanceIndex.build(
        tmp_path / "ix", src, tiny_recipe(), progress=False, device="cpu", engine="onnxruntime"
    )
    with index:
        assert (report.added, report.instances, len(report.skipped)) == (2, 2, 1)
        assert [(d.device, d.engine) for d in fake] == [("cpu", "onnxruntime")]
        assert index.describer is fake[0] and fake[0].calls[0][1] is False
        assert index._store.timeout == 30.0
        assert index.pinned().describer is fake[0]
    index, _ = InstanceIndex.build(tmp_path / "one", src / "b", instance="x")
    with index:
        assert index.image_ids() == ["x/2.jpg"] and fake[-1].engine == "torch"
        assert fake[-1].calls[0][1] is True
    bad = write(tmp_path / "bad", {f"a/{i}.jpg": b"bad %d" % i for i in range(7)})
    with pytest.raises(
        ValueError,
        match=r"^source: no image could be added \(7 skipped: "
        + "; ".join(f"{bad}/a/{i}.jpg: cannot decode" for i in range(5))
        + r"\)$",
    ):
        InstanceIndex.build(tmp_path / "none", bad, tiny_recipe())
    assert not (tmp_path / "none").exists()


def test_build_with_a_given_describer_and_a_failure_while_adding(
    tmp_path, fake, monkeypatch
) -> None:
    src = write(tmp_path / "src", {"a/1.jpg": b"one", "a/2.jpg": b"two"})
    recipe = tiny_recipe()
    describer = FakeDescriber(recipe)
    describer.engine = "openvino"
    index, report = InstanceIndex.build(tmp_path / "ix", src, recipe, describer=describer)
    with index:
        assert report.added == 2 and index.describer is describer and fake == []
        assert index._engine == "openvino"
    pinned = FakeDescriber(recipe.with_(weights_sha256="ab" * 32))  # its weights' hash
    index, _ = InstanceIndex.build(tmp_path / "pinned", src, recipe, describer=pinned)
    with index:
        assert index.recipe.weights_sha256 == "ab" * 32 and index.describer is pinned
    other = FakeDescriber(tiny_recipe(dim=8))
    with pytest.raises(ValueError, match=r"^describer: made for .*, not "):
        InstanceIndex.build(tmp_path / "no", src, recipe, describer=other)
    assert not (tmp_path / "no").exists()

    def broken(self, paths, progress=False):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(FakeDescriber, "references", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        InstanceIndex.build(tmp_path / "failed", src, recipe)
    assert not (tmp_path / "failed").exists()


SEPARATE = {"whiten": {"dim": 6, "power": 0.5, "fit_on": "separate"}}


def test_build_fits_the_whitening_on_images_described_once(tmp_path, fake) -> None:
    recipe = tiny_recipe().with_(postprocess=SEPARATE)
    src = write(tmp_path / "src", {f"i{i % 3}/{i}.jpg": b"ref %d" % i for i in range(9)})
    files = {f"{i}.jpg": b"w %d" % i for i in range(10)}
    files["bad.jpg"] = b"bad"
    whiten = write(tmp_path / "whiten", files)
    manifest = tmp_path / "m" / "set.csv"
    write(tmp_path / "m", {"x/1.jpg": b"m 1", "x/2.jpg": b"m 2"})
    manifest.write_text("path,instance_id,split\nx/1.jpg,p,reference\nx/2.jpg,q,reference\n")
    index, report = InstanceIndex.build(
        tmp_path / "ix", src, recipe, whiten_from=[whiten, manifest], progress=False
    )
    with index:
        assert report.added == 9
        assert fake[0].calls[0][0] == [str(whiten / n) for n in sorted(files)] + [
            str(tmp_path / "m/x/1.jpg"),
            str(tmp_path / "m/x/2.jpg"),
        ]
        assert fake[0].calls[0][1] is False
        rows = np.stack(
            [vector(files[n]) for n in sorted(files) if n != "bad.jpg"]
            + [vector(b"m 1"), vector(b"m 2")]
        )
        info = index.info()
        assert info["whitening_set"] == {
            "source": f"{whiten}, {manifest}",
            "images": 12,
            "skipped": 1,
        }
        assert info["whitening_skipped"] is None
        expected = PCAWhitening.fit(rows, dim=6, power=0.5)
        np.testing.assert_allclose(
            index.descriptors(), expected.apply(index.raw_descriptors()), atol=1e-5
        )
    index, _ = InstanceIndex.build(tmp_path / "one", src, recipe, whiten_from=str(whiten))
    with index:
        assert index.info()["whitening_set"]["source"] == str(whiten)
    with pytest.raises(ValueError, match=r"^whiten_from: the recipe's post-processing has no"):
        InstanceIndex.build(tmp_path / "no", src, tiny_recipe(), whiten_from=whiten)
    with pytest.raises(ValueError, match=r"^whiten_from: source: no such file or folder"):
        InstanceIndex.build(tmp_path / "no", src, recipe, whiten_from=tmp_path / "missing")
    few = write(tmp_path / "few", {"1.jpg": b"w 1", "2.jpg": b"bad", "3.jpg": b"bad 3"})
    with pytest.raises(
        ValueError,
        match=r"^whiten_from: the whitening set needs at least 2 images, 1 could be described "
        rf"\(2 skipped: {few}/2.jpg: cannot decode; {few}/3.jpg: cannot decode\)$",
    ):
        InstanceIndex.build(tmp_path / "no", src, recipe, whiten_from=few)
    with pytest.raises(
        ValueError,
        match=r"^whiten_from: the whitening set needs at least 2 images, 1 could be described$",
    ):
        InstanceIndex.build(tmp_path / "no", src, recipe, whiten_from=few / "1.jpg")
    assert not (tmp_path / "no").exists()


def test_files_added_to_a_whitening_index_refit_it_in_the_same_commit(tmp_path, fake) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"dim": 4}})
    src = write(tmp_path / "src", {f"i{i % 3}/{i}.jpg": b"ref %d" % i for i in range(12)})
    with InstanceIndex.create(tmp_path / "ix", recipe) as index:
        index.add(src)
        assert index.info()["fitted"] == {"whitening": 12}
        write(src, {"i0/0.jpg": b"changed"})
        index.update(src)
        assert (
            index.info()["fitted"] == {"whitening": 14} == {"whitening": index.info()["collection"]}
        )
        expected = PCAWhitening.fit(index.raw_descriptors(), dim=4)
        np.testing.assert_allclose(
            index.descriptors(), expected.apply(index.raw_descriptors()), atol=1e-5
        )


def test_the_smallest_whitening_set_and_its_errors(tmp_path, fake) -> None:
    recipe = tiny_recipe().with_(postprocess={"whiten": {"dim": 1, "fit_on": "separate"}})
    src = write(tmp_path / "src", {"a/1.jpg": b"one", "b/2.jpg": b"two"})
    pair = write(tmp_path / "pair", {"1.jpg": b"w 1", "2.jpg": b"w 2"})
    index, _ = InstanceIndex.build(tmp_path / "ix", src, recipe, whiten_from=pair)
    with index:
        assert index.info()["whitening_set"] == {"source": str(pair), "images": 2, "skipped": 0}
        assert fake[0].calls[0] == ([str(pair / "1.jpg"), str(pair / "2.jpg")], True)
    files = {f"{i}.jpg": b"bad %d" % i for i in range(7)}
    files["ok.jpg"] = b"fine"
    few = write(tmp_path / "few", files)
    reasons = "; ".join(f"{few}/{i}.jpg: cannot decode" for i in range(5))
    with pytest.raises(
        ValueError,
        match=r"^whiten_from: the whitening set needs at least 2 images, 1 could be described "
        rf"\(7 skipped: {reasons}\)$",
    ):
        InstanceIndex.build(tmp_path / "no", src, recipe, whiten_from=few)
    six = tiny_recipe().with_(postprocess=SEPARATE)
    with pytest.raises(
        ValueError, match=r"^whiten_from: the whitening set needs at least 7 images"
    ):
        InstanceIndex.build(tmp_path / "no", src, six, whiten_from=pair)
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match=r"^whiten_from: source: no reference images found"):
        InstanceIndex.build(tmp_path / "no", src, six, whiten_from=tmp_path / "e")
    assert not (tmp_path / "no").exists()
    with pytest.raises(
        ValueError, match=r"^whitening_set: expected \(M, D\) descriptors, got shape \(16,\)$"
    ):
        InstanceIndex.create(tmp_path / "no", six, whitening_set=unit_rows(1)[0])
    scales = tiny_recipe().with_(scales=(1.0, 0.5), postprocess=SEPARATE)
    with InstanceIndex.create(
        tmp_path / "s", scales, whitening_set=unit_rows(8).reshape(4, 2, DIM)
    ) as index:
        assert index.info()["whitening_set"] == {"source": "descriptors", "images": 4}
