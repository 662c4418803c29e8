"""``pyinstance train`` on 2 local CPU ranks (torchrun, gloo) against the trainer in one process.

A tiny collection (6 instances, one photo each) and ``tripletnet_small`` without dropout
(so that both runs draw nothing at random outside the per-sample augmentation); batches of
3 instances × 3 views = 9 samples, split 5 + 4 over the ranks. A constant learning rate:
the runs stop and resume at different ``--max-steps``, which a cosine schedule depends on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyinstance.train import Trainer, load_config

WRITES_SCRIPT = Path(__file__).with_name("ddp_train_writes.py")

CONFIG = """
output = "run"
seed = 3
[data]
source = "photos"
decode_side = 72
[model]
backbone = "tripletnet_small"
backbone_params = {{ dropout = 0.0, num_classes = 6 }}
head = "gem"
max_side = 64
[augment]
sizes = [48]
[train]
loss = "triplet_margin"
loss_params = {{ margin = 0.3 }}
mining = "{mining}"
miner_params = {miner_params}
epochs = 1
instances_per_batch = 3
views_per_instance = 3
lr_backbone = 0.01
lr_head = 0.01
scheduler = "constant"
device = "cpu"
progress = false
"""


def _collection(folder: Path, *, mining: str = "online") -> Path:
    """Six instances of one photo each (coarse random patterns) and the config; its path."""
    rng = np.random.default_rng(0)
    for instance in range(6):
        pattern = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        (folder / "photos" / f"object{instance}").mkdir(parents=True)
        image = Image.fromarray(pattern).resize((72, 56), Image.NEAREST)
        image.save(folder / "photos" / f"object{instance}" / "photo.png")
    miner_params = "{ n_pos = 1, n_neg = 2 }" if mining == "offline" else "{}"
    config = folder / "train.toml"
    config.write_text(CONFIG.format(mining=mining, miner_params=miner_params))
    return config


def _train_here(config: Path, output: Path, max_steps: int, *, resume: bool = False) -> Trainer:
    trainer = Trainer(load_config(config, output=str(output), **{"train.max_steps": max_steps}))
    if resume:
        assert trainer.resume()
    trainer.fit()
    return trainer


def _state(output: Path) -> dict:
    return torch.load(output / "checkpoint.pt", weights_only=True)["state"]


def _assert_same_run(state: dict, reference: dict, start: dict) -> None:
    """Same step, same batch statistics, same weight updates from ``start``.

    AdamW moves every weight by about the learning rate whatever its gradient's size, so a
    near-zero gradient's summation-order difference can move one weight by ~1e-5; the
    updates are compared as whole tensors (relative norm of the difference), where a wrong
    gradient shows as a difference of the order of the update itself.
    """
    assert state["step"] == reference["step"]
    # The statistics of the global batch: loss, number of triplets mined, active ones.
    for key, value in reference["running"].items():
        assert state["running"][key] == pytest.approx(value, rel=1e-5), key
    moved = 0.0
    for part in ("backbone", "head"):
        assert state[part].keys() == reference[part].keys()
        for name, tensor in reference[part].items():
            update = tensor - start[part][name]
            difference = (state[part][name] - tensor).norm()
            assert difference <= 1e-4 * update.norm() + 1e-7, f"{part}.{name}"
            moved = max(moved, float(update.abs().max()))
    assert moved > 1e-3  # the steps changed the weights: the comparison means something


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict, dict]:
    """The config; the initial weights; the checkpoints of 1 and 2 steps in one process."""
    folder = tmp_path_factory.mktemp("collection")
    config = _collection(folder)
    start = Trainer(load_config(config, output=str(folder / "unused"))).state_dict()
    _train_here(config, folder / "one-step", 1)
    _train_here(config, folder / "two-steps", 2)
    return config, start, _state(folder / "one-step"), _state(folder / "two-steps")


def test_one_step_on_two_ranks_equals_one_process_and_only_rank_zero_writes(
    torchrun, collection, tmp_path: Path
) -> None:
    config, start, one_step, _ = collection
    output = tmp_path / "run"
    command = ["train", str(config), "--output", str(output), "--max-steps", "1", "--json"]
    done = torchrun(2, [str(WRITES_SCRIPT), str(tmp_path), *command], cwd=tmp_path)
    assert done.stdout.count('"steps": 1') == 1  # one report, from rank 0
    _assert_same_run(_state(output), one_step, start)
    assert (tmp_path / "writes-rank1.txt").read_text() == ""
    written = set((tmp_path / "writes-rank0.txt").read_text().split())
    assert {"checkpoint.pt", "model.pt"} <= written
    assert sorted(p.name for p in output.iterdir()) == ["checkpoint.pt", "model.pt"]


def test_a_two_rank_checkpoint_resumes_in_one_process(torchrun, collection, tmp_path) -> None:
    config, start, _, two_steps = collection
    output = tmp_path / "run"
    command = ["-m", "pyinstance", "train", str(config), "--output", str(output)]
    torchrun(2, [*command, "--max-steps", "1"], cwd=tmp_path)
    trainer = _train_here(config, output, 2, resume=True)
    assert trainer.step == 2
    _assert_same_run(_state(output), two_steps, start)


def test_a_one_process_checkpoint_resumes_on_two_ranks(torchrun, collection, tmp_path) -> None:
    config, start, _, two_steps = collection
    output = tmp_path / "run"
    _train_here(config, output, 1)
    command = ["-m", "pyinstance", "train", str(config), "--output", str(output)]
    done = torchrun(2, [*command, "--max-steps", "2"], cwd=tmp_path)
    assert "resumed at step 1" in done.stdout
    _assert_same_run(_state(output), two_steps, start)


def test_offline_mining_on_two_ranks_equals_one_process(torchrun, tmp_path: Path) -> None:
    config = _collection(tmp_path, mining="offline")
    start = Trainer(load_config(config, output=str(tmp_path / "unused"))).state_dict()
    _train_here(config, tmp_path / "reference", 1)
    output = tmp_path / "run"
    command = ["-m", "pyinstance", "train", str(config), "--output", str(output)]
    torchrun(2, [*command, "--max-steps", "1"], cwd=tmp_path)
    reference = _state(tmp_path / "reference")
    assert reference["epoch_batches"]  # the offline-mined triplet batches of the epoch
    assert _state(output)["epoch_batches"] == reference["epoch_batches"]
    _assert_same_run(_state(output), reference, start)
