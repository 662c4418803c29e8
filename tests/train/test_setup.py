"""The set-up both trainers share: seed, device, training photos, output folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pyinstance.index import InstanceIndex, Recipe
from pyinstance.train import Trainer, VerificationTrainer, load_config, load_training_set
from pyinstance.train.setup import resolve_device, set_up_run


def _verification_config(tiny_config, tmp_path: Path, **train):
    """A verification config over the tiny image folder and an index of its instances."""
    recipe = Recipe(backbone="efficientnet_lite0", head="gem", dim=4)
    with InstanceIndex.create(tmp_path / "index", recipe) as index:
        names = [f"item{i}" for i in range(4)]
        index.add_descriptors(np.eye(4, dtype=np.float32), names, names, recipe)
    return load_config(
        tiny_config(
            train={"objective": "verification", **train},
            verification={"index": str(tmp_path / "index")},
        )
    )


def test_the_set_up_seeds_loads_and_names_the_output(tiny_config):
    config = load_config(tiny_config(instances=3, photos=2))
    first = set_up_run(config)
    drawn = torch.rand(4)
    again = set_up_run(config, first.data)
    assert torch.equal(torch.rand(4), drawn)  # seeded with config.seed each time
    assert again.data is first.data  # a given training set is not read again
    assert len(first.data) == 6 and first.data.num_classes == 3
    assert first.output == Path(config.output) and first.device == torch.device("cpu")


def test_a_given_training_set_is_used_without_reading_the_source(tiny_config, image_folder):
    photos = load_training_set(image_folder(3))
    config = load_config(tiny_config(data={"source": "/no/such/folder"}))
    assert set_up_run(config, photos).data is photos
    with pytest.raises(FileNotFoundError, match="no/such/folder"):
        set_up_run(config)


def test_devices_resolve(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="^train.device: 'cuda' asked for, but torch sees no CUDA"):
        resolve_device("cuda")


def test_both_trainers_take_the_same_set_up(tiny_config, tmp_path):
    metric = Trainer(load_config(tiny_config()))
    verification = _verification_config(tiny_config, tmp_path)
    with InstanceIndex.open(verification.verification.index) as index:
        verifier = VerificationTrainer(verification, index=index)
    assert verifier.device == metric.device == torch.device("cpu")
    assert verifier.output == metric.output == Path(verification.output)
    assert verifier.data.paths == metric.data.paths
    assert verifier.data.labels == metric.data.labels


def test_both_trainers_refuse_a_missing_cuda_device(tiny_config, tmp_path, monkeypatch):
    metric = load_config(tiny_config(train={"device": "cuda"}))
    verification = _verification_config(tiny_config, tmp_path, device="cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^train.device: 'cuda' asked for"):
        Trainer(metric)
    with (
        InstanceIndex.open(verification.verification.index) as index,
        pytest.raises(ValueError, match="^train.device: 'cuda' asked for"),
    ):
        VerificationTrainer(verification, index=index)
