"""The served collection (versions, the index thread, uploads) and the similarity heat map
over fake indexes: what each passes to the index and answers, without a network."""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import pyinstance.serve.collection as collection_module
import pyinstance.serve.heatmap as heatmap_module
from pyinstance.identification import DEFAULT_CLASSIFIER
from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD
from pyinstance.serve.collection import Collection, Version
from pyinstance.serve.heatmap import LONGEST, OUTLINED, similarity_heatmap

# -- fakes of the index -------------------------------------------------------------------


class FakePinned:
    def __init__(self, index: FakeIndex):
        self.number = index.number
        self._images = [dict(image) for image in index.image_list]
        self.instances = tuple(
            sorted({image["instance"] for image in self._images} | set(index.meta))
        )
        self._metadata = {k: dict(v) for k, v in index.meta.items()}
        self._info = index.info()
        self.settings = dict(index.settings)

    def images(self) -> list[dict[str, Any]]:
        return [dict(image) for image in self._images]

    def version(self) -> int:
        return self.number

    def metadata(self) -> dict[str, dict[str, Any]]:
        return self._metadata

    def info(self) -> dict[str, Any]:
        return self._info

    def get_setting(self, key: str) -> Any:
        return self.settings.get(key)


class FakeIndex:
    opened: list[FakeIndex] = []

    def __init__(self, path: Path, engine: str):
        self.path, self.engine = path, engine
        self.number = 1
        self.settings: dict[str, Any] = {}
        self.meta: dict[str, dict[str, Any]] = {"lonely": {"a": 1}}
        self.metadata_changes = 0
        self.image_list = [
            {"id": "t/1", "instance": "tower", "source": None},
            {"id": "b/1", "instance": "bridge", "source": None},
            {"id": "t/2", "instance": "tower", "source": None},
        ]
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False

    @classmethod
    def open(cls, path: Path, *, engine: str) -> FakeIndex:
        index = cls(path, engine)
        index.calls.append(("open", threading.current_thread().name))
        cls.opened.append(index)
        return index

    @property
    def describer(self) -> str:
        self.calls.append(("describer", threading.current_thread().name))
        return "describer"

    def pinned(self) -> FakePinned:
        return FakePinned(self)

    def images(self) -> list[dict[str, Any]]:
        return [dict(image) for image in self.image_list]

    def version(self) -> int:
        return self.number

    def info(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "metadata_changes": self.metadata_changes,
            "pyinstance_version": "1.2",
        }

    def close(self) -> None:
        self.calls.append(("close", threading.current_thread().name))
        self.closed = True

    def add(self, paths, *, instance, metadata):
        self.calls.append(("add", [Path(p).read_bytes() for p in paths], instance, metadata))
        for path in paths:
            self.image_list.append(
                {"id": Path(path).name, "instance": instance, "source": str(path)}
            )
        self.number += 1
        return "report"

    def set_metadata(self, updates, *, replace):
        self.calls.append(("set_metadata", updates, replace))
        self.number += 1

    def remove(self, *, instance=None, image=None):
        self.calls.append(("remove", instance, image, threading.current_thread().name))
        self.number += 1
        return 4


@pytest.fixture
def fake_index(monkeypatch: pytest.MonkeyPatch) -> type[FakeIndex]:
    FakeIndex.opened = []
    monkeypatch.setattr(collection_module, "InstanceIndex", FakeIndex)
    return FakeIndex


# -- versions -------------------------------------------------------------------------------


def test_version_pins_images_by_instance(fake_index) -> None:
    index = FakeIndex(Path("x"), "torch")
    version = Version.pin(index)
    assert version.number == 1
    assert list(version.images) == ["t/1", "b/1", "t/2"]
    assert version.images["t/2"] == {"id": "t/2", "instance": "tower", "source": None}
    assert version.instances == {
        "bridge": [version.images["b/1"]],
        "lonely": [],
        "tower": [version.images["t/1"], version.images["t/2"]],
    }
    assert version.metadata == {"lonely": {"a": 1}}
    assert version.info["pyinstance_version"] == "1.2"
    index.number = 2
    assert version.number == 1 and version.view.version() == 1  # pinned: does not change
    assert version.default_classifier == DEFAULT_CLASSIFIER
    index.settings["classifier"] = "stored"
    assert Version.pin(index).default_classifier == "stored"


def test_identifiers_are_fitted_once_per_key_and_bounded(
    fake_index, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[Any, ...]] = []

    class FakeIdentifier:
        def __init__(self, view, *, classifier, threshold, top_k, multi, reranker):
            made.append((view, classifier, threshold, top_k, multi, reranker))

    monkeypatch.setattr(collection_module, "Identifier", FakeIdentifier)
    version = Version.pin(FakeIndex(Path("x"), "torch"))
    scorer = object()
    first = version.identifier(None, 0.5, 3, True, scorer)
    assert made == [(version.view, DEFAULT_CLASSIFIER, 0.5, 3, True, scorer)]
    assert version.identifier(DEFAULT_CLASSIFIER, 0.5, 3, True, scorer) is first
    assert version.identifier(None, 0.5, 3) is not first
    assert made[-1] == (version.view, DEFAULT_CLASSIFIER, 0.5, 3, False, None)
    assert len(made) == 2
    for k in range(1, 15):  # 16 kept in all
        version.identifier("c", None, k)
    assert len(made) == 16
    assert version.identifier(None, 0.5, 3, True, scorer) is first  # the oldest, used again
    version.identifier("c", None, 99)  # evicts the least recently used: (None, 0.5, 3)
    assert len(made) == 17
    assert version.identifier(None, 0.5, 3, True, scorer) is first
    assert len(made) == 17
    version.identifier(None, 0.5, 3)
    assert len(made) == 18  # it was evicted


# -- the collection -----------------------------------------------------------------------


def test_open_runs_on_the_index_thread_and_cleans_uploads(
    fake_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cleaned: list[tuple[list[str], float]] = []
    monkeypatch.setattr(
        collection_module.UploadFolder,
        "clean",
        lambda self, referenced, *, wait=0.0: cleaned.append((list(referenced), wait)) or 0,
    )
    collection = Collection(str(tmp_path), engine="onnxruntime")
    assert collection.path == tmp_path and collection.engine == "onnxruntime"
    assert collection.uploads.path == tmp_path / "uploads"
    assert collection.current is None and collection.revision == 0
    collection.open()
    (index,) = fake_index.opened
    assert (index.path, index.engine) == (tmp_path, "onnxruntime")
    assert [call[0] for call in index.calls] == ["open", "describer"]
    assert all(call[1].startswith("pyinstance-index") for call in index.calls)
    assert cleaned == [([], 30.0)]
    assert collection.current.number == 1 and collection.revision == 1
    index.image_list[0]["source"] = "/up/a.jpg"
    asyncio.run(collection.remove(image="t/1"))
    assert cleaned[-1] == (["/up/a.jpg"], 0.0)
    collection.close()
    assert index.closed and index.calls[-1][1].startswith("pyinstance-index")
    assert Collection(tmp_path).engine == "torch"


def test_closing_an_unopened_collection(fake_index, tmp_path: Path) -> None:
    collection = Collection(tmp_path)
    collection.close()
    with pytest.raises(RuntimeError):
        collection._thread.submit(print)


def test_writes_publish_a_new_version_even_when_they_fail(fake_index, tmp_path: Path) -> None:
    collection = Collection(tmp_path)
    collection.open()
    (index,) = fake_index.opened

    def job(seen) -> int:
        assert seen is index
        seen.number = 5
        return 42

    assert asyncio.run(collection.write(job)) == 42
    assert collection.current.number == 5 and collection.revision == 2
    orphan = tmp_path / "uploads" / "orphan.jpg"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"o")

    def failing(seen) -> None:
        seen.number = 6
        raise ValueError("commit failed")

    with pytest.raises(ValueError, match="commit failed"):
        asyncio.run(collection.write(failing))
    assert collection.current.number == 6 and collection.revision == 3
    assert not orphan.exists()  # the failed commit's photo was removed
    collection.close()


def test_refresh_publishes_only_changes(fake_index, tmp_path: Path) -> None:
    collection = Collection(tmp_path)
    collection.open()
    (index,) = fake_index.opened
    assert asyncio.run(collection.refresh()) is False and collection.revision == 1
    for change in (
        lambda: setattr(index, "number", index.number + 1),
        lambda: index.settings.__setitem__("threshold", len(index.settings)),
        lambda: setattr(index, "metadata_changes", index.metadata_changes + 1),
    ):
        change()
        revision = collection.revision
        assert asyncio.run(collection.refresh()) is True
        assert collection.revision == revision + 1
        assert collection.current.info == index.info()
        assert asyncio.run(collection.refresh()) is False
    collection.close()


def test_add_writes_the_photos_then_commits_them(fake_index, tmp_path: Path) -> None:
    collection = Collection(tmp_path)
    collection.open()
    (index,) = fake_index.opened
    report, paths = asyncio.run(
        collection.add("tower", [("a.jpg", b"A"), ("b.png", b"B")], {"room": 3})
    )
    assert report == "report"
    assert paths == [tmp_path / "uploads" / "a.jpg", tmp_path / "uploads" / "b.png"]
    assert index.calls[-1] == ("add", [b"A", b"B"], "tower", {"tower": {"room": 3}})
    assert collection.current.number == 2
    assert sorted(collection.current.images) == ["a.jpg", "b.png", "b/1", "t/1", "t/2"]
    assert (tmp_path / "uploads" / "a.jpg").read_bytes() == b"A"  # referenced: kept
    asyncio.run(collection.add("tower", [("c.jpg", b"C")]))
    assert index.calls[-1] == ("add", [b"C"], "tower", None)
    asyncio.run(collection.add("tower", [("d.jpg", b"D")], {}))
    assert index.calls[-1] == ("add", [b"D"], "tower", None)
    collection.close()


def test_metadata_and_removal_pass_through(fake_index, tmp_path: Path) -> None:
    collection = Collection(tmp_path)
    collection.open()
    (index,) = fake_index.opened
    assert asyncio.run(collection.set_metadata("tower", {"a": None}, replace=True)) is None
    assert index.calls[-1] == ("set_metadata", {"tower": {"a": None}}, True)
    asyncio.run(collection.set_metadata("tower", {"a": 2}, replace=False))
    assert index.calls[-1] == ("set_metadata", {"tower": {"a": 2}}, False)
    assert asyncio.run(collection.remove(instance="tower")) == 4
    assert index.calls[-1][:3] == ("remove", "tower", None)
    assert index.calls[-1][3].startswith("pyinstance-index")
    assert asyncio.run(collection.remove(image="b/1")) == 4
    assert index.calls[-1][:3] == ("remove", None, "b/1")
    assert collection.current.number == 5 and collection.revision == 5
    collection.close()


# -- heat maps ------------------------------------------------------------------------------


class MapBackbone(torch.nn.Module):
    """Answers a fixed 4-channel 2×3 feature map; records its input."""

    out_channels = 4

    def __init__(self, features: torch.Tensor, mean=None, std=None):
        super().__init__()
        self.features = features
        self.inputs: list[torch.Tensor] = []
        if mean is not None:
            self.input_mean, self.input_std = mean, std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        self.inputs.append(pixels.clone())
        return self.features[None].to(torch.float64)


class HeatView:
    def __init__(self, backbone: MapBackbone, raw: np.ndarray, dim: int = 4, max_side: int = 40):
        self.describer = SimpleNamespace(backbone=backbone, device=torch.device("cpu"))
        self.recipe = SimpleNamespace(dim=dim, max_side=max_side)
        self._raw = raw

    def image_ids(self) -> list[str]:
        return ["r/0", "r/1"]

    def raw_descriptors(self) -> np.ndarray:
        return self._raw


FEATURES = torch.tensor(
    [
        [[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]],
        [[0.0, 1.0, 0.0], [3.0, 0.0, 1.0]],
        [[0.0, 0.0, -5.0], [0.0, 2.0, 0.0]],
        [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    ]
)


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def render(image, best, shape, *, scores, alpha):
        calls.append(
            {"image": image, "best": list(best), "shape": shape, "scores": scores, "alpha": alpha}
        )
        return Image.new("RGB", (1000, 500), (0, 0, 255))

    monkeypatch.setattr(heatmap_module, "render_region_heatmap", render)
    return calls


def expected_scores(reference: np.ndarray) -> np.ndarray:
    positive = FEATURES.clamp_min(0).numpy().astype(np.float64)
    norms = np.maximum(np.linalg.norm(positive, axis=0), 1e-12)
    return np.einsum("chw,c->hw", positive / norms, reference)


def test_heat_map_scores_each_cell_against_the_reference(rendered) -> None:
    raw = np.array([[0, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]], dtype=np.float64)
    backbone = MapBackbone(FEATURES)
    photo = Image.new("RGB", (80, 60), (255, 0, 0))
    jpeg = similarity_heatmap(HeatView(backbone, raw), photo, "r/1")
    (call,) = rendered
    scores = expected_scores(raw[1])
    assert call["image"] is photo and call["shape"] == (2, 3) and call["alpha"] == 0.5
    assert call["scores"].dtype == np.float32
    np.testing.assert_allclose(call["scores"], scores, rtol=1e-6)
    assert call["best"] == list(np.argsort(scores.reshape(-1))[::-1][:OUTLINED])
    assert OUTLINED == 3 and LONGEST == 640
    with Image.open(io.BytesIO(jpeg)) as picture:
        assert picture.format == "JPEG" and picture.size == (640, 320)
        assert picture.getpixel((300, 150)) == pytest.approx((0, 0, 255), abs=8)
        tables = picture.quantization
    reference = io.BytesIO()
    Image.new("RGB", (640, 320), (0, 0, 255)).save(reference, "JPEG", quality=85)
    with Image.open(reference) as quality85:
        assert tables == quality85.quantization
    (pixels,) = backbone.inputs
    assert pixels.shape == (1, 3, 30, 40)  # the longest side scaled to max_side
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(pixels[0, :, 5, 5], red, atol=1e-5, rtol=0)


def test_heat_map_of_a_multi_scale_reference_and_own_normalisation(rendered) -> None:
    raw = np.zeros((2, 2, 4))
    raw[0] = [[3.0, 0, 0, 0], [1.0, 0, 0, 0]]  # mean (2, 0, 0, 0): normalised (1, 0, 0, 0)
    backbone = MapBackbone(FEATURES, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    similarity_heatmap(HeatView(backbone, raw), Image.new("RGB", (20, 40), (255, 255, 0)), "r/0")
    np.testing.assert_allclose(
        rendered[0]["scores"], expected_scores(np.array([1.0, 0, 0, 0])), rtol=1e-6
    )
    (pixels,) = backbone.inputs
    assert pixels.shape == (1, 3, 40, 20)  # smaller than max_side: kept
    torch.testing.assert_close(
        pixels[0, :, 3, 3], torch.tensor([2.0, 2.0, -2.0]), atol=1e-5, rtol=0
    )
    raw[1] = [[1e-14, 0, 0, 0], [-1e-14, 0, 0, 0]]  # a zero mean: no division by zero
    similarity_heatmap(HeatView(backbone, raw), Image.new("RGB", (20, 20)), "r/1")
    assert np.all(rendered[1]["scores"] == 0)


def test_heat_map_refusals(rendered) -> None:
    backbone = MapBackbone(FEATURES)
    view = HeatView(backbone, np.zeros((2, 4)))
    with pytest.raises(KeyError):
        similarity_heatmap(view, Image.new("RGB", (8, 8)), "r/9")
    with pytest.raises(ValueError, match="feature space"):
        similarity_heatmap(
            HeatView(backbone, np.zeros((2, 5)), dim=5), Image.new("RGB", (8, 8)), "r/0"
        )
    assert rendered == [] and backbone.inputs == []


def test_identifiers_differ_by_reranker(fake_index, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Any] = []

    class FakeIdentifier:
        def __init__(self, view, *, classifier, threshold, top_k, multi, reranker):
            made.append(reranker)

    monkeypatch.setattr(collection_module, "Identifier", FakeIdentifier)
    version = Version.pin(FakeIndex(Path("x"), "torch"))
    first, second = object(), object()
    one = version.identifier("c", 0.5, 3, False, first)
    two = version.identifier("c", 0.5, 3, False, second)
    assert one is not two and made == [first, second]
    assert version.identifier("c", 0.5, 3, False, first) is one


def test_writes_run_one_at_a_time_on_one_thread(fake_index, tmp_path: Path) -> None:
    collection = Collection(tmp_path)
    collection.open()
    second_started = threading.Event()
    seen: list[tuple[str, bool]] = []

    def first(index) -> None:  # waits a while for the second write: it must not start
        seen.append((threading.current_thread().name, second_started.wait(0.5)))

    def second(index) -> None:
        second_started.set()
        seen.append((threading.current_thread().name, True))

    async def both() -> None:
        await asyncio.gather(collection.write(first), collection.write(second))

    asyncio.run(both())
    assert [overlapped for _, overlapped in seen] == [False, True]
    assert seen[0][0] == seen[1][0]
    collection.close()


def test_heat_map_of_scales_whose_mean_is_shorter_than_one(rendered) -> None:
    raw = np.zeros((2, 2, 4))
    raw[0] = [[1.0, 0, 0, 0], [0, 1.0, 0, 0]]  # mean (0.5, 0.5, 0, 0): length 0.71
    similarity_heatmap(HeatView(MapBackbone(FEATURES), raw), Image.new("RGB", (20, 20)), "r/0")
    unit = np.array([1.0, 1.0, 0, 0]) / np.sqrt(2)
    np.testing.assert_allclose(rendered[0]["scores"], expected_scores(unit), rtol=1e-6)
