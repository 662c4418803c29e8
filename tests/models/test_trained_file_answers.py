"""The model file's JSON entries (models/trained.py): written with sorted keys, so the same
contents give the same file whatever order a dict was filled in (found by mutation testing)."""

from __future__ import annotations

import torch

from pyinstance.models.trained import TrainedModel


def _payload(tmp_path, name: str, **fields) -> dict:
    model = TrainedModel(
        backbone="tiny",
        head="gem",
        backbone_state={"w": torch.zeros(1)},
        head_state={"p": torch.ones(1)},
        **fields,
    )
    return torch.load(model.save(tmp_path / name), weights_only=True)


def test_json_entries_are_written_with_sorted_keys(tmp_path):
    forward = _payload(
        tmp_path,
        "a.pt",
        backbone_params={"depth": 2, "base": 8},
        head_params={"p": 3.0, "eps": 1e-6},
        info={"epochs": 2, "config": {"lr": 0.1, "batch": 4}},
    )
    backward = _payload(
        tmp_path,
        "b.pt",
        backbone_params={"base": 8, "depth": 2},
        head_params={"eps": 1e-6, "p": 3.0},
        info={"config": {"batch": 4, "lr": 0.1}, "epochs": 2},
    )
    assert forward["backbone_params"] == backward["backbone_params"] == '{"base": 8, "depth": 2}'
    assert forward["head_params"] == backward["head_params"] == '{"eps": 1e-06, "p": 3.0}'
    assert (
        forward["info"] == backward["info"] == ('{"config": {"batch": 4, "lr": 0.1}, "epochs": 2}')
    )
