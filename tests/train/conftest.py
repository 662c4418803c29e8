"""Tiny training sets and configs (random blocky images, a small network, seconds per test);
launching small torchrun jobs (local CPU ranks, gloo)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_text(config: dict[str, Any]) -> str:
    """``config`` (top-level keys, then one dict per section) as TOML."""
    lines = [f"{k} = {_toml(v)}" for k, v in config.items() if not isinstance(v, dict)]
    for section, table in config.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """``make(instances, photos=1)``: a folder with one sub-folder of PNGs per instance."""

    def make(instances: int = 4, photos: int = 1, size: tuple[int, int] = (48, 40)) -> Path:
        rng = np.random.default_rng(instances * 10 + photos)
        root = tmp_path / "images"
        for index in range(instances):
            folder = root / f"item{index}"
            folder.mkdir(parents=True, exist_ok=True)
            base = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            for photo in range(photos):
                noisy = np.clip(base.astype(int) + rng.integers(-20, 21, base.shape), 0, 255)
                image = Image.fromarray(noisy.astype(np.uint8)).resize(size, Image.NEAREST)
                image.save(folder / f"photo{photo}.png")
        return root

    return make


@pytest.fixture
def tiny_config(tmp_path: Path, image_folder: Callable[..., Path]) -> Callable[..., Path]:
    """``make(**sections)``: a config file over a tiny image folder; sections update the defaults."""

    def make(instances: int = 4, photos: int = 1, **sections: dict[str, Any]) -> Path:
        config: dict[str, Any] = {
            "output": str(tmp_path / "run"),
            "seed": 3,
            "data": {"source": str(image_folder(instances, photos))},
            "model": {
                "backbone": "tripletnet_small",
                "backbone_params": {"dropout": 0.0},
                "head": "gem",
                "max_side": 48,
            },
            "augment": {"sizes": [40, 48]},
            "train": {
                "epochs": 2,
                "instances_per_batch": 4,
                "lr_backbone": 0.01,
                "lr_head": 0.01,
                "progress": False,
            },
        }
        for name, values in sections.items():
            if isinstance(values, dict):
                config.setdefault(name, {}).update(values)
            else:
                config[name] = values
        path = tmp_path / "config.toml"
        path.write_text(toml_text(config), encoding="utf-8")
        return path

    return make


#: A job that hangs (a rank waiting for a collective that never comes) fails after this.
TORCHRUN_TIMEOUT_S = 240


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, their children, ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (command) state ppid ...": the command may hold spaces and parentheses
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        children = parents.get(pending.pop(), [])
        found += children
        pending += children
    return found


def _run_torchrun(nproc: int, target: Sequence[str], *, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc TARGET...`` (a free port, a time limit).

    The ranks import the installed build (``-P`` and PYTHONSAFEPATH), one thread each.
    """
    command = [
        sys.executable, "-P", "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "--max_restarts=0", *target,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": "1"}
    # The launcher in a session of its own, killed with its ranks on a time-out (below).
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=TORCHRUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own: kill them with the launcher,
        # or they keep the output pipes open and the test waits for ever.
        ranks = _descendants(process.pid)  # before the launcher dies and they are orphans
        os.killpg(process.pid, signal.SIGKILL)
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun job hung for {TORCHRUN_TIMEOUT_S} s: {command}\n{stdout}\n{stderr}")
    if process.returncode != 0:
        pytest.fail(f"torchrun job failed ({process.returncode}): {command}\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def torchrun() -> Callable[..., subprocess.CompletedProcess]:
    """``torchrun(nproc, target, cwd=...)``: run a torchrun job, fail the test if it fails or hangs."""
    return _run_torchrun
