"""Reading weights files: plain state dicts and the usual checkpoint wrappers; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pyinstance.models.weights import (
    WeightsMismatchError,
    linear_to_conv,
    load_weights,
    read_state_dict,
)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


def _trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    return {key: value.clone() for key, value in _net().state_dict().items()}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: state,
        lambda state: {"state_dict": state, "epoch": 3},
        lambda state: {"model": state, "optimizer": {"lr": 0.1}, "epoch": 9},
    ],
    ids=["plain", "state_dict", "model"],
)
def test_wrappers_load_the_same_tensors(tmp_path: Path, wrap) -> None:  # noqa: ANN001
    state = _trained()
    path = tmp_path / "weights.pt"
    torch.save(wrap(state), path)
    read = read_state_dict(path)
    assert read.keys() == state.keys()
    assert all(torch.equal(read[key], state[key]) for key in state)
    torch.manual_seed(123)  # a differently initialised module
    module = _net()
    load_weights(module, path)
    assert all(torch.equal(module.state_dict()[key], state[key]) for key in state)


def test_errors_name_the_file_and_the_keys(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        read_state_dict(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read .*garbage.pt"):
        read_state_dict(garbage)
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"model": {"a": 1}}, not_tensors)
    with pytest.raises(ValueError, match=r"numbers\.pt.*does not hold a state dict"):
        read_state_dict(not_tensors)
    state = _trained()
    state.pop("2.bias")
    state["extra.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(4, 3, 5, 5)
    path = tmp_path / "mismatch.pt"
    torch.save({"model": state}, path)
    with pytest.raises(WeightsMismatchError) as caught:
        load_weights(_net(), path)
    message = str(caught.value)
    assert "mismatch.pt" in message and "missing keys (1): 2.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "0.weight (file (4, 3, 5, 5), model (4, 3, 3, 3))" in message


def test_skip_prefixes_and_linear_to_conv(tmp_path: Path) -> None:
    state = _trained()
    state["2.weight"] = state["2.weight"].reshape(2, 4)  # a fully connected layer's layout
    state["2.bias"] = torch.zeros(7)  # a classifier for another number of classes
    path = tmp_path / "fc.pt"
    torch.save(state, path)
    module = _net()
    before = module.state_dict()["2.bias"].clone()
    load_weights(
        module, path, convert=lambda s: linear_to_conv(s, ["2"]), skip_prefixes=("2.bias",)
    )
    assert torch.equal(module.state_dict()["2.weight"], state["2.weight"].reshape(2, 4, 1, 1))
    assert torch.equal(module.state_dict()["2.bias"], before)
    converted = linear_to_conv({"fc.weight": torch.arange(36.0).reshape(2, 18)}, ["fc"], {"fc": 3})
    assert converted["fc.weight"].shape == (2, 2, 3, 3)
