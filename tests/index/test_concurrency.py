"""Readers and writers in separate processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import numpy as np
import pytest

from pyinstance.index import IndexBusyError, InstanceIndex
from pyinstance.index.search import search

from .conftest import tiny_recipe, unit_rows

BATCH = 25
FORK = multiprocessing.get_context("fork")


def batch_rows(n: int) -> np.ndarray:
    return unit_rows(BATCH, seed=1000 + n)


def writer(path: Path, batches: range, remove_every: int, prefix: str = "b") -> None:
    """Add one instance per batch; remove an older one every ``remove_every`` batches."""
    with InstanceIndex.open(path, timeout=60) as index:
        for n in batches:
            index.add_descriptors(
                batch_rows(n),
                [f"{prefix}{n}"] * BATCH,
                [f"{prefix}{n}/{i}" for i in range(BATCH)],
                tiny_recipe(),
            )
            if remove_every and n % remove_every == remove_every - 1:
                index.remove(instance=f"{prefix}{n - 1}")


def test_readers_see_whole_commits_while_another_process_writes(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    InstanceIndex.create(path, tiny_recipe()).close()
    process = FORK.Process(target=writer, args=(path, range(60), 3))
    process.start()
    seen_sizes = set()
    with InstanceIndex.open(path) as reader:
        while process.is_alive() or not seen_sizes:
            snap = reader._store.snapshot()  # what search() reads
            counts = np.bincount(snap.labels, minlength=len(snap.instances))
            assert (counts == BATCH).all(), counts  # only whole commits are visible
            for code, instance in enumerate(snap.instances):
                rows = snap.descriptors[snap.slots[snap.labels == code]]
                np.testing.assert_array_equal(rows, batch_rows(int(instance[1:])))
            if snap.instances:
                n = int(snap.instances[-1][1:])
                found = search(snap, batch_rows(n)[:1], 1)
                image = dict(zip(snap.rows.tolist(), snap.image_ids, strict=True))
                assert image[int(found.rows[0, 0])] == f"b{n}/0"
            reader.search(unit_rows(2), 5)  # the public path, refreshing its snapshot
            seen_sizes.add(len(snap.slots))
        process.join()
    assert process.exitcode == 0
    assert len(seen_sizes) > 3  # the reader really read while the writer wrote
    with InstanceIndex.open(path) as final:
        assert len(final.instances) == 40
        assert final.info()["generation"] > 0  # compactions ran while the reader read


def hold_the_write_lock(path: Path, held: multiprocessing.Event, seconds: float) -> None:
    with InstanceIndex.open(path) as index, index._store._writing():
        held.set()
        time.sleep(seconds)


def test_a_second_writer_waits_or_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    InstanceIndex.create(path, tiny_recipe()).close()
    held = FORK.Event()
    process = FORK.Process(target=hold_the_write_lock, args=(path, held, 2.0))
    process.start()
    assert held.wait(30)
    with InstanceIndex.open(path, timeout=0.2) as impatient:
        with pytest.raises(IndexBusyError, match="being written by another process.*0.2 s"):
            impatient.add_descriptors(unit_rows(1), ["a"], ["a0"], tiny_recipe())
        assert impatient.search(unit_rows(1), 1).rows[0, 0] == -1  # reading is not blocked
    with InstanceIndex.open(path, timeout=30) as patient:
        patient.add_descriptors(unit_rows(1), ["a"], ["a0"], tiny_recipe())  # waits, then writes
        assert len(patient) == 1
    process.join()
    assert process.exitcode == 0


def test_two_writing_processes_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ix"
    InstanceIndex.create(path, tiny_recipe()).close()
    processes = [
        FORK.Process(target=writer, args=(path, range(start, start + 20), 0, prefix))
        for start, prefix in ((0, "p"), (100, "q"))
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    assert [p.exitcode for p in processes] == [0, 0]
    with InstanceIndex.open(path) as index:
        assert len(index.instances) == 40 and len(index) == 40 * BATCH
        snap = index._store.snapshot()
        assert snap.descriptors.shape[0] == 40 * BATCH  # no stray rows
        for code, instance in enumerate(snap.instances):
            rows = snap.descriptors[snap.slots[snap.labels == code]]
            np.testing.assert_array_equal(rows, batch_rows(int(instance[1:])))


def test_threads_share_one_index(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    index = InstanceIndex.create(tmp_path / "ix", tiny_recipe())
    with index, ThreadPoolExecutor(4) as pool:
        searches = [pool.submit(index.search, unit_rows(2, seed=s), 3) for s in range(40)]
        for n in range(10):
            index.add_descriptors(
                batch_rows(n), [f"b{n}"] * BATCH, [f"b{n}/{i}" for i in range(BATCH)], tiny_recipe()
            )
        for future in searches:
            found = future.result()
            assert (found.rows == -1).all() or (found.rows >= 0).all()
        assert len(index) == 10 * BATCH
