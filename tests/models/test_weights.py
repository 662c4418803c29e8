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


def test_each_kind_of_mismatch_alone_is_refused(tmp_path: Path) -> None:
    """A file with only missing, only unexpected or only mis-shaped keys is refused before
    torch sees it, naming the module's class."""
    only_missing = _trained()
    only_missing.pop("0.bias")
    only_unexpected = {**_trained(), "head.weight": torch.zeros(3)}
    only_misshaped = {**_trained(), "2.bias": torch.zeros(5)}
    for name, state, part in [
        ("missing", only_missing, "missing keys (1): 0.bias"),
        ("unexpected", only_unexpected, "unexpected keys (1): head.weight"),
        ("misshaped", only_misshaped, "shape mismatches (1): 2.bias (file (5,), model (2,))"),
    ]:
        path = tmp_path / f"{name}.pt"
        torch.save(state, path)
        with pytest.raises(WeightsMismatchError) as caught:
            load_weights(_net(), path)
        assert str(caught.value) == f"weights: {str(path)!r} does not match Sequential; {part}"


def test_long_key_lists_are_cut_after_twelve(tmp_path: Path) -> None:
    names = [f"extra{i:02d}" for i in range(13)]
    for count, tail in ((12, ""), (13, ", ... and 1 more")):
        path = tmp_path / f"{count}.pt"
        torch.save({**_trained(), **{n: torch.zeros(1) for n in names[:count]}}, path)
        with pytest.raises(WeightsMismatchError) as caught:
            load_weights(_net(), path)
        listed = ", ".join(names[:12])
        assert str(caught.value).endswith(f"unexpected keys ({count}): {listed}{tail}")


def test_a_checkpoint_written_on_a_gpu_loads_on_the_cpu(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Storages tagged ``cuda:0`` (what a GPU machine writes) are mapped to the CPU."""
    state = _trained()
    path = tmp_path / "gpu.pt"
    with monkeypatch.context() as patched:
        patched.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(state, path)
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA: there cuda:0 storages load as they are")
    read = read_state_dict(path)
    assert all(read[k].device.type == "cpu" and torch.equal(read[k], state[k]) for k in state)


class _Payload:
    """Unpickling this runs ``Path.touch``: what a malicious weights file would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_weights_file_never_runs_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="cannot read"):
        read_state_dict(path)
    assert not marker.exists()


def test_linear_to_conv_passes_over_absent_shaped_and_indivisible_layers() -> None:
    conv = torch.zeros(2, 4, 1, 1)
    indivisible = torch.arange(20.0).reshape(2, 10)  # 10 inputs are not 3·3·c
    fc = torch.arange(8.0).reshape(2, 4)
    state = {"conv.weight": conv, "odd.weight": indivisible, "fc.weight": fc}
    converted = linear_to_conv(state, ["absent", "conv", "odd", "fc"], {"odd": 3})
    assert converted["conv.weight"] is conv and converted["odd.weight"] is indivisible
    assert torch.equal(converted["fc.weight"], fc.reshape(2, 4, 1, 1))
    assert state["fc.weight"] is fc  # the input dict is not changed
