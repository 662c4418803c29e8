"""``InstanceIndex``: a persistent collection of reference images and their descriptors."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyinstance.data.images import ImageLike
from pyinstance.index.describer import Describer, FileError
from pyinstance.index.metadata import check_fields
from pyinstance.index.neighbours import Neighbours
from pyinstance.index.processed import (
    WHITENING_KEY,
    WHITENING_SET_KEY,
    ProcessedView,
    processed_view,
    refit_function,
    search_sets,
    searches_whitened,
    whitening_set_state,
)
from pyinstance.index.recipe import DEFAULT_RECIPE, Recipe
from pyinstance.index.report import AddReport
from pyinstance.index.search import check_queries, search
from pyinstance.index.sources import Source, SourceImage, collect, file_sha256
from pyinstance.index.store import ImageRecord, Snapshot, Store, from_storage
from pyinstance.index.thresholds import THRESHOLD_SETTINGS, stale_reason
from pyinstance.postprocess.pipeline import state_fitted_on, whitening_skipped

#: Compact automatically once this fraction of the descriptor rows are tombstones.
AUTO_COMPACT_FRACTION = 0.25


class InstanceIndex:
    """Reference images of instances, their descriptors and the recipe that made them.

    Open one with :meth:`open`, make one with :meth:`create` or :meth:`build`. Every
    mutation is one atomic commit; searches read a consistent snapshot, also while another
    process writes. Row ids (``Neighbours.rows``) are stable: never renumbered by removal
    or compaction.

    Post-processing (the recipe's ``postprocess``: whitening, DBA, query expansion,
    similarity-matrix scoring) is applied on every path: the stored descriptors stay raw,
    the whitening is refitted on the collection in the same commit as every ``add``,
    ``update``, ``remove`` and ``add_descriptors`` (and by :meth:`refit`), and
    :meth:`search`, :meth:`descriptors` and :meth:`describe_queries` work in the
    post-processed space. A state that does not match the collection (written by a writer
    that did not refit) is an error, never used.
    """

    def __init__(
        self, store: Store, *, device: torch.device | str | None = None, engine: str = "torch"
    ):
        if not isinstance(store, Store):
            raise TypeError("use InstanceIndex.open(path), create(...) or build(...)")
        self._store = store
        self._device = device
        self._engine = engine
        self._describer: Describer | None = None
        self._view: tuple[Snapshot, ProcessedView] | None = None
        self._refit = refit_function(store.recipe)

    # -- life cycle -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        recipe: Recipe = DEFAULT_RECIPE,
        *,
        timeout: float = 30.0,
        device: torch.device | str | None = None,
        whitening_set: Any = None,
    ) -> InstanceIndex:
        """An empty index at ``path`` (absent or an empty folder) for ``recipe``.

        ``whitening_set``: raw descriptors (``(M, D)``, or ``(M, S, D)`` per scale) of a
        separate set to fit the recipe's whitening on, when it has ``fit_on: separate``
        (required then, refused otherwise); fitted once, stored with the index, never
        refitted. With ``(M, S, D)`` each scale's descriptor is one row of the fit (so that
        learnt scale weights, unknown at build, need no refit of the whitening).
        """
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe: expected a Recipe, got {type(recipe).__name__}")
        return cls._create(path, recipe, timeout, device, whitening_set, "whitening_set")

    @classmethod
    def _create(
        cls,
        path: str | os.PathLike[str],
        recipe: Recipe,
        timeout: float,
        device: torch.device | str | None,
        whitening_set: Any,
        name: str,
        fitted_on: dict[str, Any] | None = None,
    ) -> InstanceIndex:
        separate = recipe.postprocessing.separate_whitening
        if separate != (whitening_set is not None):
            raise ValueError(
                f"{name}: expected a whitening set exactly when the recipe's whitening has "
                f"fit_on 'separate' (it has {'' if separate else 'no '}such whitening)"
            )
        state = None
        if separate:
            rows = np.asarray(whitening_set, dtype=np.float32)
            if rows.ndim < 2:
                raise ValueError(f"{name}: expected (M, D) descriptors, got shape {rows.shape}")
            if rows.shape[-1] != recipe.dim:
                raise ValueError(
                    f"{name}: descriptors of size {rows.shape[-1]}, the recipe's are {recipe.dim}"
                )
            rows = rows.reshape(-1, rows.shape[-1])
            fitted_on = fitted_on or {"source": "descriptors", "images": len(whitening_set)}
            state = whitening_set_state(recipe, rows, fitted_on, name)
        store = Store.create(path, recipe, timeout=timeout)
        if state is not None:
            store.put_fitted(state)
        return cls(store, device=device)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        device: torch.device | str | None = None,
        engine: str = "torch",
    ) -> InstanceIndex:
        """The index at ``path``; the describer is rebuilt from its recipe when needed.

        ``timeout``: seconds a writer waits for another writer before giving up.
        ``engine``: what runs the networks (``torch``, ``onnxruntime``, ``openvino`` or
        ``auto``, see :meth:`Describer.set_engine`).
        """
        return cls(Store(path, timeout=timeout), device=device, engine=engine)

    @classmethod
    def build(
        cls,
        path: str | os.PathLike[str],
        source: Source | Sequence[Source],
        recipe: Recipe = DEFAULT_RECIPE,
        *,
        instance: str | None = None,
        progress: bool = True,
        device: torch.device | str | None = None,
        describer: Describer | None = None,
        engine: str = "torch",
        whiten_from: Source | Sequence[Source] | None = None,
    ) -> tuple[InstanceIndex, AddReport]:
        """Create an index at ``path`` from ``source`` (see :meth:`add`).

        ``describer``: an already built describer of ``recipe`` (else one is built and set
        to run on ``engine``).
        ``whiten_from``: images (a folder, manifest or image files) of a separate set to fit
        the recipe's whitening on (``fit_on: separate``), described here once.
        Raises ``ValueError`` and leaves nothing at ``path`` when no image could be added.
        """
        if whiten_from is not None and not recipe.postprocessing.separate_whitening:
            raise ValueError(
                "whiten_from: the recipe's post-processing has no whitening with fit_on "
                "'separate' to fit on it"
            )
        if describer is None:
            describer = Describer(recipe, device=device)  # resolves names, pins the weights
            describer.set_engine(engine)
        elif not recipe.with_(weights_sha256=describer.recipe.weights_sha256).same_descriptors(
            describer.recipe
        ):
            raise ValueError(
                f"describer: made for {describer.recipe.describe()}, not {recipe.describe()}"
            )
        entries, errors = collect(source, instance)
        rows, fitted_on = None, None
        if whiten_from is not None:
            rows, fitted_on = _describe_whitening_set(describer, whiten_from, progress)
        index = cls._create(path, describer.recipe, 30.0, device, rows, "whiten_from", fitted_on)
        index._engine = describer.engine
        index._describer = describer
        try:
            report = index._add(entries, errors, replace=False, progress=progress)
        except BaseException:
            index.close()
            shutil.rmtree(path, ignore_errors=True)
            raise
        if report.added == 0:
            index.close()
            shutil.rmtree(path, ignore_errors=True)
            reasons = "; ".join(f"{e.path}: {e.reason}" for e in report.skipped[:5])
            raise ValueError(
                f"source: no image could be added ({len(report.skipped)} skipped"
                + (f": {reasons}" if reasons else "")
                + ")"
            )
        return index, report

    def close(self) -> None:
        self._store.close()

    def pinned(self) -> InstanceIndex:
        """A read-only view of the index as committed now, sharing this index's describer
        when it is built.

        Its searches, descriptors, labels, images and settings all come from that one
        commit, whatever commits later; it runs no SQL, so any thread may use it.
        Writing through it raises ``PermissionError``.
        """
        view = InstanceIndex(self._store.pinned(), device=self._device)
        view._describer = self._describer
        view._view = self._view
        return view

    def version(self) -> int:
        """How many image changes were ever committed (images added + images removed).

        Grows with every add, update and remove commit; compaction and settings leave
        it unchanged. Two views with the same version hold the same images.
        """
        added = int(self._store.meta()["next_row"])
        return 2 * added - len(self)

    def __enter__(self) -> InstanceIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        snapshot = self._store.snapshot()
        return (
            f"InstanceIndex({str(self.path)!r}, {len(snapshot.slots)} images, "
            f"{len(snapshot.instances)} instances)"
        )

    # -- properties -----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def recipe(self) -> Recipe:
        return self._store.recipe

    @property
    def describer(self) -> Describer:
        """The recipe's describer (built on first use: loads the backbone)."""
        if self._describer is None:
            describer = Describer(self.recipe, device=self._device)
            describer.set_engine(self._engine)
            self._describer = describer
        return self._describer

    @property
    def instances(self) -> tuple[str, ...]:
        """Instance ids, sorted; ``labels()`` are positions in this tuple."""
        return self._store.snapshot().instances

    def __len__(self) -> int:
        return int(self._store.snapshot().slots.shape[0])

    # -- adding ---------------------------------------------------------------------------

    def add(
        self,
        source: Source | Sequence[Source],
        instance: str | None = None,
        *,
        progress: bool = False,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> AddReport:
        """Add reference images, in one commit.

        ``source``: image files (``instance`` names their instance), folders with one
        sub-folder per instance (or any files when ``instance`` is given), or manifest CSVs
        (``reference`` rows). Files already in the index with identical content are no-ops;
        an image id already present with other content is skipped (use :meth:`update`);
        undecodable, unreadable or oversized files are skipped and reported.
        ``metadata``: ``{instance: {field: value}}`` merged in the same commit (see
        :meth:`set_metadata`; instances that end up without images are left out).
        """
        updates = _checked_updates(metadata) if metadata is not None else None
        entries, errors = collect(source, instance)
        return self._add(entries, errors, replace=False, progress=progress, metadata=updates)

    def update(
        self,
        source: Source | Sequence[Source],
        instance: str | None = None,
        *,
        progress: bool = False,
    ) -> AddReport:
        """Like :meth:`add`, but images whose content changed are re-extracted and replace
        the old ones (new row ids; the old rows become tombstones); unchanged files are not
        extracted again."""
        entries, errors = collect(source, instance)
        report = self._add(entries, errors, replace=True, progress=progress)
        self._auto_compact()
        return report

    def _add(
        self,
        entries: list[SourceImage],
        errors: list[FileError],
        *,
        replace: bool,
        progress: bool,
        metadata: dict[str, dict[str, Any]] | None = None,
    ) -> AddReport:
        start = time.perf_counter()
        skipped = list(errors)
        hashed: list[tuple[SourceImage, str]] = []
        for entry in entries:
            try:
                hashed.append((entry, file_sha256(entry.path)))
            except OSError as error:
                skipped.append(FileError(str(entry.path), f"cannot read: {error}"))
        by_sha = self._store.image_by_sha([sha for _, sha in hashed])
        sha_of_id = self._store.image_sha([entry.image_id for entry, _ in hashed])
        todo: list[tuple[SourceImage, str]] = []
        unchanged = 0
        batch_shas: dict[str, str] = {}
        for entry, sha in hashed:
            if sha in by_sha or sha in batch_shas:
                unchanged += 1
            elif entry.image_id in sha_of_id and not replace:
                skipped.append(
                    FileError(
                        str(entry.path),
                        f"image id {entry.image_id!r} is already in the index with other "
                        "content (use update)",
                    )
                )
            else:
                batch_shas[sha] = entry.image_id
                todo.append((entry, sha))
        kept: list[tuple[SourceImage, str]] = []
        if todo:
            descriptors, failures = self.describer.references(
                [entry.path for entry, _ in todo], progress=progress
            )
            failed = {failure.path for failure in failures}
            skipped.extend(failures)
            kept = [(entry, sha) for entry, sha in todo if str(entry.path) not in failed]
        updated = sum(1 for entry, _ in kept if entry.image_id in sha_of_id)
        added = len(kept) - updated
        if kept:
            records = [
                ImageRecord(entry.image_id, entry.instance, str(entry.path), sha)
                for entry, sha in kept
            ]
            self._store.add(
                descriptors.reshape(len(records), self._store.row_width),
                records,
                replace=replace,
                refit=self._refit,
                metadata=metadata,
            )
        elif metadata:  # nothing to add (or every file failed): the metadata alone
            self._store.set_instance_metadata(metadata)
        return AddReport(
            added=added,
            updated=updated,
            unchanged=unchanged,
            skipped=tuple(skipped),
            instances=len(self.instances),
            seconds=time.perf_counter() - start,
        )

    def add_descriptors(
        self,
        descriptors: Any,
        instance_ids: Sequence[str],
        image_ids: Sequence[str],
        recipe: Recipe,
    ) -> list[int]:
        """Add ready-made raw descriptors (N × D, one per image; N × S × D, one per scale,
        when the recipe keeps scales for similarity-matrix scoring) in one commit; returns
        row ids.

        ``recipe`` must be the index's recipe (descriptors of another one are refused).
        """
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe: expected a Recipe, got {type(recipe).__name__}")
        if not recipe.same_descriptors(self.recipe):
            raise ValueError(
                f"recipe: descriptors made by {recipe.describe()} cannot join an index made "
                f"by {self.recipe.describe()}"
            )
        if isinstance(descriptors, torch.Tensor):
            descriptors = descriptors.detach().cpu().float().numpy()
        descriptors = np.asarray(descriptors)
        per_image = self.recipe.descriptors_per_image
        layout = "N×D" if per_image == 1 else f"N×{per_image}×D"
        if descriptors.ndim != (2 if per_image == 1 else 3) or not np.issubdtype(
            descriptors.dtype, np.floating
        ):
            raise ValueError(
                f"descriptors: expected an {layout} float array, got shape {descriptors.shape} "
                f"dtype {descriptors.dtype}"
            )
        if per_image > 1 and descriptors.shape[1] != per_image:
            raise ValueError(
                f"descriptors: expected {per_image} descriptors per image (one per scale of "
                f"the recipe), got {descriptors.shape[1]}"
            )
        if descriptors.shape[-1] != self.recipe.dim:
            raise ValueError(
                f"descriptors: size {descriptors.shape[-1]} does not match the index's "
                f"D={self.recipe.dim}"
            )
        descriptors = descriptors.reshape(len(descriptors), -1)
        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        if not np.isfinite(descriptors).all():
            raise ValueError("descriptors: contains NaN or infinite values")
        for name, ids in (("instance_ids", instance_ids), ("image_ids", image_ids)):
            if isinstance(ids, str) or len(ids) != len(descriptors):
                raise ValueError(
                    f"{name}: expected {len(descriptors)} ids (one per descriptor), got {ids!r}"[
                        :200
                    ]
                )
            if not all(isinstance(i, str) and i for i in ids):
                raise ValueError(f"{name}: expected non-empty str ids")
        if len(set(image_ids)) != len(image_ids):
            raise ValueError("image_ids: contains duplicates")
        records = [
            ImageRecord(image, instance, None, None)
            for image, instance in zip(image_ids, instance_ids, strict=True)
        ]
        return self._store.add(descriptors, records, refit=self._refit)

    # -- removing -------------------------------------------------------------------------

    def remove(
        self,
        *,
        instance: str | Sequence[str] | None = None,
        image: str | Sequence[str] | None = None,
    ) -> int:
        """Remove every image of ``instance`` and/or the images ``image`` (ids), in one
        commit; returns how many were removed. Unknown ids are a ``KeyError``."""
        instances = [instance] if isinstance(instance, str) else list(instance or ())
        images = [image] if isinstance(image, str) else list(image or ())
        if not instances and not images:
            raise ValueError("remove: give instance=... or image=...")
        unknown = [i for i in instances if i not in set(self.instances)]
        present = self._store.image_sha(images)
        unknown += [i for i in images if i not in present]
        if unknown:
            raise KeyError(f"remove: not in the index: {', '.join(map(repr, unknown[:10]))}")
        removed = self._store.remove(instances=instances, images=images, refit=self._refit)
        self._auto_compact()
        return removed

    def refit(self) -> bool:
        """Fit the post-processing state on the collection again, in one commit; returns
        False (and writes nothing) when the recipe's post-processing learns nothing from
        the collection (a whitening fitted on a separate set is kept as stored).

        Every change made through this class refits already; this repairs an index changed
        by a writer that did not (its searches refuse the stale state until then).
        """
        if self._refit is None:
            return False
        self._store.refit(self._refit)
        return True

    def compact(self) -> int:
        """Reclaim the rows of removed images; returns how many were reclaimed."""
        return self._store.compact()

    def _auto_compact(self) -> None:
        snapshot = self._store.snapshot()
        total = snapshot.descriptors.shape[0]
        if total and snapshot.dead / total > AUTO_COMPACT_FRACTION:
            self._store.compact()

    # -- searching ------------------------------------------------------------------------

    def search(self, queries: Any, k: int, *, exclude: Any = None) -> Neighbours:
        """The ``k`` nearest live references of each query (Q × D, or Q × R × D: then a
        reference scores the maximum over the query's R descriptors; with
        similarity-matrix scoring, the recipe's reduction of the R × S matrix).

        ``queries`` are post-processed ones (:meth:`describe_queries`,
        :meth:`postprocess_queries`). ``exclude``: optional ``Q`` row ids to leave out, one
        per query (-1: none), e.g. each reference's own row when the references are the
        queries (leave-one-out).
        """
        if not self.recipe.postprocess:
            return search(self._store.snapshot(), queries, k, exclude)
        view = self._processed()
        reduction = self.recipe.postprocessing.reduction
        if reduction is None:
            return search(view.snapshot, queries, k, exclude)
        batch = check_queries(queries, view.references.shape[2])
        return search_sets(view, batch, k, exclude, reduction)

    def _processed(self) -> ProcessedView:
        """The post-processed view of the committed snapshot (cached until a commit)."""
        snapshot = self._store.snapshot()
        cached = self._view
        if cached is None or cached[0] is not snapshot:
            cached = (snapshot, processed_view(self.recipe, snapshot, str(self.path)))
            self._view = cached
        return cached[1]

    def postprocess_queries(self, queries: Any) -> np.ndarray:
        """Raw query descriptors (Q × D or Q × R × D, as the describer makes them) ->
        post-processed ``Q × R × D_out`` (whitened, expanded), ready for :meth:`search`."""
        batch = check_queries(queries, self.recipe.dim)
        if not self.recipe.postprocess:
            return batch
        view = self._processed()
        if view.fitted is None:
            raise ValueError(
                f"index {str(self.path)!r}: holds no references to fit the post-processing on"
            )
        return view.fitted.queries(
            batch, view.references, scale_sets=self.recipe.query_windows is None
        )

    def describe_queries(self, images: Sequence[ImageLike]) -> np.ndarray:
        """Query descriptors ``Q × R × D`` made and post-processed as the recipe says."""
        return self.postprocess_queries(self.describer.queries(images))

    def search_images(self, images: Sequence[ImageLike], k: int) -> Neighbours:
        """Describe ``images`` as queries and search them."""
        return self.search(self.describe_queries(images), k)

    # -- reading --------------------------------------------------------------------------

    def descriptors(self) -> np.ndarray:
        """The live references ``N × D_out`` as queries are compared with them: float32 (a
        copy), post-processed, aligned with :meth:`labels`. With similarity-matrix scoring,
        each image's scales averaged and re-normalised."""
        if not self.recipe.postprocess:
            return self.raw_descriptors()
        references = self._processed().references
        if references.shape[1] == 1:
            return references[:, 0].copy()
        mean = references.mean(axis=1)
        return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)

    def raw_descriptors(self) -> np.ndarray:
        """The live descriptors as stored (made by the recipe's network, before
        post-processing): float32 ``N × D``, or ``N × S × D`` when the recipe keeps scales."""
        snapshot = self._store.snapshot()
        rows = from_storage(snapshot.descriptors[snapshot.slots], snapshot.dtype)
        per_image = self.recipe.descriptors_per_image
        return rows if per_image == 1 else rows.reshape(len(rows), per_image, self.recipe.dim)

    def labels(self) -> np.ndarray:
        """Instance code (position in :attr:`instances`) of each live row."""
        return self._store.snapshot().labels.copy()

    def rows(self) -> np.ndarray:
        """Stable row id of each live row (aligned with :meth:`descriptors`)."""
        return self._store.snapshot().rows.copy()

    def image_ids(self, rows: Any | None = None) -> list[str | None]:
        """Image id of each of ``rows`` (row ids; ``None`` for -1 or removed rows), or of
        every live row."""
        snapshot = self._store.snapshot()
        if rows is None:
            return list(snapshot.image_ids)
        by_row = dict(zip(snapshot.rows.tolist(), snapshot.image_ids, strict=True))
        return [by_row.get(int(row)) for row in np.asarray(rows).reshape(-1)]

    def images(self) -> list[dict[str, Any]]:
        """Every live image: id, instance, source, sha256, added (Unix time), row."""
        return self._store.images()

    def metadata(self) -> dict[str, dict[str, Any]]:
        """Metadata fields (title, author, ...) of each instance that has some."""
        present = set(self.instances)
        return {i: f for i, f in self._store.instance_metadata().items() if i in present}

    def set_metadata(
        self,
        updates: Mapping[str, Mapping[str, Any]],
        *,
        replace: bool = False,
        unknown: str = "error",
    ) -> list[str]:
        """Set instance metadata in one commit: ``{instance: {field: value}}``; a field
        set to ``None`` is deleted; ``replace=True`` drops the fields not given.

        Values are str, finite numbers or bools. ``unknown``: ``"error"`` (an instance not
        in the index is a ``KeyError``, nothing is written) or ``"skip"`` (left out).
        Returns the instances left out.
        """
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown: expected 'error' or 'skip', got {unknown!r}")
        checked = _checked_updates(updates)
        if unknown == "error":
            missing = sorted(set(checked) - set(self.instances))
            if missing:
                raise KeyError(f"metadata: not in the index: {', '.join(map(repr, missing[:10]))}")
        return self._store.set_instance_metadata(checked, replace=replace)

    def get_setting(self, key: str, default: Any = None) -> Any:
        """A stored setting (e.g. the fitted open-set ``threshold``, the ``classifier``)."""
        return self._store.get_setting(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON-able setting in one commit (``None`` deletes it)."""
        self._store.set_settings({key: value})

    def set_settings(self, values: Mapping[str, Any]) -> None:
        """Store JSON-able settings by key in one commit (a ``None`` value deletes its key)."""
        self._store.set_settings(values)

    @property
    def whitened(self) -> bool:
        """Whether searches of the committed collection whiten: the recipe whitens and its
        whitening is fitted (one learnt from the collection is skipped while it holds fewer
        than ``min_references`` references)."""
        return searches_whitened(self.recipe, self._store.snapshot())

    def info(self) -> dict[str, Any]:
        """images, instances, version, recipe, size_on_disk and more, JSON-able."""
        snapshot = self._store.snapshot()
        meta = self._store.meta()
        return {
            "path": str(self.path),
            "images": int(snapshot.slots.shape[0]),
            "instances": len(snapshot.instances),
            "version": self._store.format_version,
            "pyinstance_version": self.recipe.pyinstance_version,
            "recipe": self.recipe.to_dict(),
            "dim": self.recipe.dim,
            "dtype": self.recipe.dtype,
            "removed_rows": snapshot.dead,
            "generation": snapshot.generation,
            "created": float(meta["created"]),
            "settings": self._store.settings(),
            "postprocess": self.recipe.postprocess,
            "fitted": {key: stamp for key, (stamp, _) in snapshot.fitted.items()},
            "whitening_set": (
                state_fitted_on(snapshot.fitted[WHITENING_SET_KEY][1])
                if WHITENING_SET_KEY in snapshot.fitted
                else None
            ),
            "whitening_skipped": (
                whitening_skipped(snapshot.fitted[WHITENING_KEY][1])
                if WHITENING_KEY in snapshot.fitted
                else None
            ),
            "collection": snapshot.collection,
            "stale_thresholds": {
                setting: reason
                for setting in THRESHOLD_SETTINGS
                if (reason := stale_reason(self, setting)) is not None
            },
            "metadata_changes": self._store.metadata_changes(),
            "size_on_disk": self._store.size_on_disk(),
        }


def _describe_whitening_set(
    describer: Describer, source: Source | Sequence[Source], progress: bool
) -> tuple[np.ndarray, dict[str, Any]]:
    """Raw descriptors of the images of ``source`` and a description of the set."""
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    entries: list[SourceImage] = []
    errors: list[FileError] = []
    for one in sources:
        manifest = str(one).lower().endswith(".csv")
        try:
            found, refused = collect(one, None if manifest else "whitening-set")
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f"whiten_from: {error}") from None
        entries.extend(found)
        errors.extend(refused)
    rows, failures = describer.references([entry.path for entry in entries], progress=progress)
    skipped = errors + failures
    if rows.shape[0] < 2:
        reasons = "; ".join(f"{e.path}: {e.reason}" for e in skipped[:5])
        raise ValueError(
            f"whiten_from: the whitening set needs at least 2 images, {rows.shape[0]} could be "
            f"described" + (f" ({len(skipped)} skipped: {reasons})" if skipped else "")
        )
    described = {
        "source": ", ".join(str(s) for s in sources),
        "images": int(rows.shape[0]),
        "skipped": len(skipped),
    }
    return rows, described


def _checked_updates(updates: Any) -> dict[str, dict[str, Any]]:
    """``{instance: {field: value or None}}`` checked (see :func:`check_fields`)."""
    if not isinstance(updates, Mapping):
        raise TypeError(
            f"metadata: expected a mapping {{instance: {{field: value}}}}, got "
            f"{type(updates).__name__}"
        )
    checked = {}
    for instance, fields in updates.items():
        if not isinstance(instance, str) or not instance:
            raise ValueError(f"metadata: instance ids must be non-empty str, got {instance!r}")
        checked[instance] = check_fields(instance, fields, allow_none=True)
    return checked
