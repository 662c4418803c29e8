"""The served index: one writer thread owns it; readers use immutable pinned versions.

Every write (add, remove) runs on the single index thread, which owns the index's SQLite
connection, so writes are serialised. After each commit the thread pins the new commit
(:meth:`InstanceIndex.pinned`) into a :class:`Version` and swaps it in with one
assignment: a search holds the version it started with until it ends, so it never sees a
half-applied change, and the next search sees the new one without a restart.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pyinstance.identification import DEFAULT_CLASSIFIER, Identifier
from pyinstance.index import AddReport, InstanceIndex
from pyinstance.serve.upload_folder import UploadFolder

T = TypeVar("T")
#: Identifiers (classifier, threshold, top_k) kept fitted per version.
_IDENTIFIERS_KEPT = 16
#: Seconds the start waits for other processes' uploads to commit before cleaning.
_CLEAN_WAIT = 30.0


@dataclass
class Version:
    """One committed state of the index, pinned: never changes, usable from any thread."""

    number: int
    view: InstanceIndex
    images: dict[str, dict[str, Any]]
    instances: dict[str, list[dict[str, Any]]]
    metadata: dict[str, dict[str, Any]]
    info: dict[str, Any]
    _identifiers: OrderedDict[tuple[Any, ...], Identifier] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def pin(cls, index: InstanceIndex) -> Version:
        view = index.pinned()
        images = {image["id"]: image for image in view.images()}
        instances: dict[str, list[dict[str, Any]]] = {name: [] for name in view.instances}
        for image in images.values():
            instances[image["instance"]].append(image)
        return cls(view.version(), view, images, instances, view.metadata(), view.info())

    @property
    def default_classifier(self) -> str:
        return self.view.get_setting("classifier") or DEFAULT_CLASSIFIER

    def identifier(
        self,
        classifier: str | None,
        threshold: float | None,
        top_k: int,
        multi: bool = False,
        reranker: Any = None,
    ) -> Identifier:
        """A fitted :class:`Identifier` on this version (cached; fitting runs once).

        ``reranker``: a resolved pair scorer, None (the index's stored one) or False (none).
        """
        key = (classifier or self.default_classifier, threshold, top_k, multi, id(reranker))
        with self._lock:
            found = self._identifiers.get(key)
            if found is not None:
                self._identifiers.move_to_end(key)
                return found
            made = Identifier(
                self.view,
                classifier=key[0],
                threshold=threshold,
                top_k=top_k,
                multi=multi,
                reranker=reranker,
            )
            self._identifiers[key] = made
            if len(self._identifiers) > _IDENTIFIERS_KEPT:
                self._identifiers.popitem(last=False)
            return made


class Collection:
    """The index at ``path`` as served: :attr:`current` version, writes on one thread.

    :attr:`revision` counts the versions published by this process (any change: images,
    metadata or settings, made here or by another process); pages poll it.
    """

    def __init__(self, path: str | os.PathLike[str], *, engine: str = "torch"):
        self.path = Path(path)
        self.engine = engine
        self.uploads = UploadFolder(self.path / "uploads")
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyinstance-index")
        self._index: InstanceIndex | None = None
        self.current: Version | None = None
        self.revision = 0

    def open(self) -> None:
        """Open the index (on the index thread), build its describer, pin the first version."""
        self._thread.submit(self._open).result()

    def _open(self) -> None:
        self._index = InstanceIndex.open(self.path, engine=self.engine)
        self._clean_uploads(wait=_CLEAN_WAIT)  # what a crash left between write and commit
        self._index.describer  # noqa: B018 - load the network once, shared by every version
        self._publish()

    def _publish(self) -> None:
        assert self._index is not None
        self.current = Version.pin(self._index)
        self.revision += 1

    def _clean_uploads(self, *, wait: float = 0.0) -> int:
        """Remove uploaded photos no image refers to (see :class:`UploadFolder`)."""
        assert self._index is not None
        return self.uploads.clean(
            [image["source"] for image in self._index.images() if image["source"]], wait=wait
        )

    def close(self) -> None:
        if self._index is not None:
            self._thread.submit(self._index.close).result()
        self._thread.shutdown(wait=True)

    async def write(self, job: Callable[[InstanceIndex], T]) -> T:
        """Run ``job(index)`` on the index thread, then pin and publish the new version."""

        def run() -> T:
            assert self._index is not None
            try:
                return job(self._index)
            finally:
                self._clean_uploads()  # a failed commit's photos, removed images' photos
                self._publish()

        return await asyncio.wrap_future(self._thread.submit(run))

    async def refresh(self) -> bool:
        """Pin the index again if another process committed; whether it changed."""

        def run() -> bool:
            assert self._index is not None and self.current is not None
            info = self._index.info()
            if (
                self._index.version() == self.current.number
                and info["settings"] == self.current.info["settings"]
                and info["metadata_changes"] == self.current.info["metadata_changes"]
            ):
                return False
            self._publish()
            return True

        return await asyncio.wrap_future(self._thread.submit(run))

    async def add(
        self,
        instance: str,
        photos: Sequence[tuple[str, bytes]],
        metadata: dict[str, Any] | None = None,
    ) -> tuple[AddReport, list[Path]]:
        """Keep ``photos`` (``(file name, bytes)``, checked images) in the uploads folder
        and add them to ``instance`` with its ``metadata`` fields, in one commit; returns
        the report and the photos' paths."""

        def job(index: InstanceIndex) -> tuple[AddReport, list[Path]]:
            with self.uploads.writing():
                paths = [self.uploads.write(name, data) for name, data in photos]
                updates = {instance: metadata} if metadata else None
                return index.add(paths, instance=instance, metadata=updates), paths

        return await self.write(job)

    async def set_metadata(self, instance: str, fields: dict[str, Any], *, replace: bool) -> None:
        await self.write(lambda index: index.set_metadata({instance: fields}, replace=replace))

    async def remove(self, *, instance: str | None = None, image: str | None = None) -> int:
        return await self.write(lambda index: index.remove(instance=instance, image=image))
