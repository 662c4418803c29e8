"""set_up_run and resolve_device without reading photos: a given training set, a recording
loader, and torch.cuda.is_available replaced."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pyinstance.train import setup
from pyinstance.train.config import parse_config
from pyinstance.train.setup import RunSetup, resolve_device, set_up_run


def config(tmp_path: Path, **top):
    raw = {"output": "out", "data": {"source": "pics", "decode_side": 96}, **top}
    return parse_config(raw, base=tmp_path)


def test_the_run_is_seeded_with_the_config_seed(tmp_path: Path):
    photos = object()
    torch.manual_seed(123)
    set_up_run(config(tmp_path, seed=7), photos)
    drawn = torch.rand(5)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(5))


def test_a_given_training_set_is_kept_and_the_output_resolved(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(setup, "load_training_set", lambda *a, **k: pytest.fail("loaded"))
    photos = object()
    made = set_up_run(config(tmp_path), photos)
    assert isinstance(made, RunSetup)
    assert made.data is photos
    assert made.output == tmp_path / "out" and isinstance(made.output, Path)
    assert made.device == torch.device("cpu")


def test_without_a_training_set_the_source_is_loaded_at_the_decode_side(tmp_path, monkeypatch):
    calls = []
    loaded = SimpleNamespace(name="photos")

    def loader(source, *, decode_side):
        calls.append((source, decode_side))
        return loaded

    monkeypatch.setattr(setup, "load_training_set", loader)
    assert set_up_run(config(tmp_path)).data is loaded
    assert calls == [(tmp_path / "pics", 96)]


def test_the_device_comes_from_train_device(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    made = set_up_run(config(tmp_path, train={"device": "cuda"}), object())
    assert made.device == torch.device("cuda")


@pytest.mark.parametrize(
    ("name", "available", "expected"),
    [
        ("auto", True, "cuda"),
        ("auto", False, "cpu"),
        ("cuda", True, "cuda"),
        ("cpu", True, "cpu"),
        ("cpu", False, "cpu"),
        ("cuda:1", False, "cuda:1"),  # only the bare name is checked here
    ],
)
def test_devices_resolve(monkeypatch, name, available, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert resolve_device(name) == torch.device(expected)


def test_cuda_without_a_device_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^train.device: 'cuda' asked for, but torch sees no"):
        resolve_device("cuda")
