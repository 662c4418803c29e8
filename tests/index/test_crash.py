"""Kill real writer processes (SIGKILL) at random moments; the index must always hold
exactly one of the committed states, with metadata and descriptor rows in agreement."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pyinstance.index import InstanceIndex
from pyinstance.index.store import ImageRecord

from .conftest import tiny_recipe, unit_rows

FORK = multiprocessing.get_context("fork")
KILLS = 60
State = tuple[frozenset, frozenset]  # (image id, instance, row bytes), (setting, value)


def state_of(index: InstanceIndex) -> State:
    """The content, after checking that metadata and descriptor rows agree."""
    store = index._store
    snap = store.snapshot()
    meta = store.meta()
    file = index.path / f"descriptors-{meta['generation']}.bin"
    row_bytes = index.recipe.dim * 4
    assert file.stat().st_size >= int(meta["slots"]) * row_bytes
    assert snap.descriptors.shape[0] == int(meta["slots"])
    assert (
        len(set(snap.slots.tolist())) == len(snap.slots) and (snap.slots < int(meta["slots"])).all()
    )
    assert (
        len(set(snap.rows.tolist())) == len(snap.rows) and (snap.rows < int(meta["next_row"])).all()
    )
    images = {r["id"]: r for r in store.images()}
    assert set(images) == set(snap.image_ids)
    instances = {i for (i,) in store._db.execute("SELECT id FROM instances")}
    assert instances == set(snap.instances)  # no empty or missing instance records
    rows = index.descriptors()
    content = frozenset(
        (image, snap.instances[label], row.tobytes())
        for image, label, row in zip(snap.image_ids, snap.labels, rows, strict=True)
    )
    return content, frozenset((k, repr(v)) for k, v in store.settings().items())


def plan(rng: random.Random, state: State, tag: int) -> list[tuple]:
    """A random sequence of mutations that applies to ``state``."""
    ops: list[tuple] = []
    images = {image: instance for image, instance, _ in state[0]}
    for step in range(rng.randint(3, 8)):
        kind = rng.choice(
            [
                "add",
                "add",
                "add",
                "remove_instance",
                "remove_image",
                "compact",
                "setting",
                "replace",
            ]
        )
        if len(images) > 1000:  # keep the index small: the checks read all of it
            kind = "remove_instance"
        if kind == "add" or not images:
            n = rng.randint(1, 120)
            ids = [f"t{tag}s{step}r{i}" for i in range(n)]
            instances = [f"inst{rng.randint(0, 12)}" for _ in range(n)]
            ops.append(("add", ids, instances, unit_rows(n, seed=tag * 100 + step)))
            images.update(zip(ids, instances, strict=True))
        elif kind == "remove_instance":
            instance = rng.choice(sorted(set(images.values())))
            ops.append(("remove_instance", instance))
            images = {i: s for i, s in images.items() if s != instance}
        elif kind == "remove_image":
            image = rng.choice(sorted(images))
            ops.append(("remove_image", image))
            del images[image]
        elif kind == "replace":
            chosen = rng.sample(sorted(images), min(len(images), rng.randint(1, 20)))
            ops.append(
                (
                    "replace",
                    chosen,
                    [images[i] for i in chosen],
                    unit_rows(len(chosen), seed=tag * 100 + step + 50),
                )
            )
        elif kind == "compact":
            ops.append(("compact",))
        else:
            ops.append(("setting", "threshold", rng.random()))
    return ops


def apply(index: InstanceIndex, op: tuple) -> None:
    kind = op[0]
    if kind == "add":
        index.add_descriptors(op[3], op[2], op[1], tiny_recipe())
    elif kind == "remove_instance":
        index.remove(instance=op[1])
    elif kind == "remove_image":
        index.remove(image=op[1])
    elif kind == "replace":  # what update() commits for changed files
        records = [ImageRecord(i, s, None, None) for i, s in zip(op[1], op[2], strict=True)]
        index._store.add(op[3], records, replace=True)
    elif kind == "compact":
        index.compact()
    else:
        index.set_setting(op[1], op[2])


def run_ops(path: Path, ops: list[tuple], started) -> None:
    with InstanceIndex.open(path) as index:
        started.set()
        for op in ops:
            apply(index, op)


def expected_states(path: Path, ops: list[tuple]) -> tuple[list[State], float]:
    """Each state along ``ops``, computed on a copy of the index in this process, and the
    seconds the mutations took."""
    import shutil

    copy = path.parent / f"{path.name}-model"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy)
    with InstanceIndex.open(copy) as model:
        states = [state_of(model)]
        seconds = 0.0
        for op in ops:
            begin = time.perf_counter()
            apply(model, op)
            seconds += time.perf_counter() - begin
            states.append(state_of(model))
    shutil.rmtree(copy)
    return states, seconds


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_an_old_or_new_state(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    path = tmp_path / "ix"
    InstanceIndex.create(path, tiny_recipe()).close()
    landed_inside = finished = 0
    for tag in range(KILLS):
        with InstanceIndex.open(path) as index:
            ops = plan(rng, state_of(index), tag)
        states, duration = expected_states(path, ops)  # about as long as the writer needs
        started = FORK.Event()
        process = FORK.Process(target=run_ops, args=(path, ops, started))
        process.start()
        assert started.wait(30)
        time.sleep(rng.uniform(0, 1.2 * duration))
        os.kill(process.pid, signal.SIGKILL)
        process.join()
        finished += process.exitcode == 0
        assert process.exitcode in (0, -signal.SIGKILL)
        with InstanceIndex.open(path) as index:
            state = state_of(index)
        assert state in states, f"kill {tag}: a state that no commit made"
        landed_inside += 0 < states.index(state) < len(states) - 1
    print(f"{KILLS} kills: {landed_inside} inside a sequence, {finished} after its end")
    assert landed_inside >= 5  # the kills hit the middle of sequences, not only the ends


REAL_WRITER = textwrap.dedent(
    """
    import sys
    from pyinstance.index import InstanceIndex
    index = InstanceIndex.open(sys.argv[1])
    print("ready", flush=True)
    index.add(sys.argv[2])
    index.remove(instance="graf")
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_of_a_real_image_writer(tmp_path: Path, pairs: Path) -> None:
    import shutil

    from pyinstance.index import DEFAULT_RECIPE

    collection = tmp_path / "collection"
    for instance, name in (("graf", "graf1.png"), ("box", "box.png"), ("aero", "aero1.jpg")):
        (collection / instance).mkdir(parents=True)
        shutil.copy(pairs / "reference" / name, collection / instance / name)
    recipe = DEFAULT_RECIPE.with_(max_side=160, query_max_side=None, query_windows=None)
    path = tmp_path / "ix"
    index, _ = InstanceIndex.build(
        path, [pairs / "reference" / "home.jpg"], recipe, instance="home", progress=False
    )
    start = state_of(index)
    index.close()
    rng = random.Random(7)
    script = tmp_path / "writer.py"
    script.write_text(REAL_WRITER)
    outcomes = []
    for attempt in range(4):
        process = subprocess.Popen(
            [sys.executable, "-P", str(script), str(path), str(collection)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert process.stdout.readline().strip() == "ready"
        if attempt < 3:
            time.sleep(rng.uniform(0.0, 4.0))
            process.send_signal(signal.SIGKILL)
        process.wait(120)
        with InstanceIndex.open(path) as index:
            state = state_of(index)
            ids = sorted(image for image, _, _ in state[0])
        outcomes.append(ids)
        assert ids in (
            ["home/home.jpg"],
            ["aero/aero1.jpg", "box/box.png", "graf/graf1.png", "home/home.jpg"],
            ["aero/aero1.jpg", "box/box.png", "home/home.jpg"],
        ), ids
        if ids == ["home/home.jpg"]:
            assert state == start
    assert outcomes[-1] == ["aero/aero1.jpg", "box/box.png", "home/home.jpg"]  # the unkilled run
