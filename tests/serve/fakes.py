"""A served index without a network: fakes of :class:`~pyinstance.serve.collection.Collection`
and its versions, for fast tests of the application's routes (tests/serve/test_app_units.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from PIL import Image


def picture(size: tuple[int, int] = (64, 48), fmt: str = "JPEG", colour=(200, 30, 40)) -> bytes:
    """A plain ``size`` picture encoded as ``fmt``."""
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, fmt)
    return out.getvalue()


def image_record(image_id: str, instance: str, source: str | None, added: str) -> dict[str, Any]:
    return {
        "id": image_id,
        "instance": instance,
        "source": source,
        "added": added,
        "sha256": f"sha-{image_id}",
    }


@dataclass
class World:
    """Everything the fakes read and record; tests set its fields."""

    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    number: int = 7
    references: int = 3
    result: Any = None
    identifier_error: Exception | None = None
    identify_error: Exception | None = None
    threshold: float = 0.25
    stale_thresholds: dict[str, str] = field(default_factory=dict)
    reranker_name: str | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    add_report: Any = None
    change_error: Exception | None = None
    removed: int = 2
    opened: int = 0
    closed: int = 0
    refreshes: int = 0
    seen_sizes: list[tuple[int, int]] = field(default_factory=list)
    gate: Any = None  # a threading.Event the identification waits for
    entered: Any = None  # a threading.Event set when an identification starts

    def version(self) -> FakeVersion:
        instances: dict[str, list[dict[str, Any]]] = {}
        for image in self.images.values():
            instances.setdefault(image["instance"], []).append(image)
        for name in self.metadata:
            instances.setdefault(name, [])
        info = {
            "version": 3,
            "images": len(self.images),
            "instances": len(instances),
            "recipe": {"head": "gem"},
            "settings": dict(self.settings),
            "stale_thresholds": dict(self.stale_thresholds),
            "pyinstance_version": "9.8.7",
        }
        return FakeVersion(
            self.number, FakeView(self), dict(self.images), instances, dict(self.metadata), info
        )


class FakeView:
    def __init__(self, world: World):
        self.world = world
        self.recipe = SimpleNamespace(scales=(0.5, 1.5), max_side=100, dim=8)
        self.describer = SimpleNamespace(engine="fake-engine")

    def get_setting(self, key: str) -> Any:
        return self.world.settings.get(key)

    def __len__(self) -> int:
        return self.world.references


class FakeIdentifier:
    def __init__(self, world: World, threshold: float | None):
        self.world = world
        self.threshold = world.threshold if threshold is None else threshold
        self.reranker_name = world.reranker_name

    def identify(self, images: list[Image.Image]) -> list[Any]:
        (image,) = images
        self.world.seen_sizes.append(image.size)
        if self.world.entered is not None:
            self.world.entered.set()
        if self.world.gate is not None:
            self.world.gate.wait(30)
        if self.world.identify_error is not None:
            raise self.world.identify_error
        return [self.world.result]


@dataclass
class FakeVersion:
    number: int
    view: FakeView
    images: dict[str, dict[str, Any]]
    instances: dict[str, list[dict[str, Any]]]
    metadata: dict[str, dict[str, Any]]
    info: dict[str, Any]

    @property
    def default_classifier(self) -> str:
        return self.view.get_setting("classifier") or "default-classifier"

    def identifier(self, classifier, threshold, top_k, multi=False, reranker=None) -> Any:
        world = self.view.world
        world.calls.append(("identifier", classifier, threshold, top_k, multi, reranker))
        if world.identifier_error is not None:
            raise world.identifier_error
        return FakeIdentifier(world, threshold)


def fake_collection(world: World) -> type:
    """A Collection class whose instances serve ``world``."""

    class FakeCollection:
        def __init__(self, path, *, engine: str = "torch"):
            self.path = Path(path)
            self.engine = engine
            self.current: FakeVersion | None = None
            self.revision = 0
            world.calls.append(("collection", self.path, engine))

        def open(self) -> None:
            world.opened += 1
            self._publish()

        def _publish(self) -> None:
            self.current = world.version()
            self.revision += 1

        def close(self) -> None:
            world.closed += 1

        async def refresh(self) -> bool:
            world.refreshes += 1
            return False

        async def add(self, instance, photos, metadata=None):
            world.calls.append(("add", instance, list(photos), metadata))
            if world.change_error is not None:
                raise world.change_error
            paths = [self.path / "uploads" / name for name, _ in photos]
            for path in paths:
                world.images.setdefault(
                    path.stem,
                    {**image_record(path.stem, instance, str(path), "t9"), "sha256": path.stem},
                )
            world.number += 1
            self._publish()
            return world.add_report, paths

        async def set_metadata(self, instance, fields, *, replace):
            world.calls.append(("set_metadata", instance, fields, replace))
            if world.change_error is not None:
                raise world.change_error
            merged = {} if replace else dict(world.metadata.get(instance, {}))
            merged.update(fields)
            world.metadata[instance] = {k: v for k, v in merged.items() if v is not None}
            world.number += 1
            self._publish()

        async def remove(self, *, instance=None, image=None):
            world.calls.append(("remove", instance, image))
            if world.change_error is not None:
                raise world.change_error
            world.number += 1
            self._publish()
            return world.removed

    return FakeCollection
