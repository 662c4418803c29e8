"""The built-in pooling heads through the plugin registry: names, contract, projection."""

from __future__ import annotations

import pytest
import torch

import pyinstance

HEADS = ["mac", "spoc", "gem", "rmac"]


def test_every_head_is_registered() -> None:
    registered = {c.name for c in pyinstance.list_plugins("head")}
    assert set(HEADS) <= registered
    assert type(pyinstance.get_head("avg", in_channels=4)).__name__ == "SPoC"


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("out_dim", [None, 6])
def test_contract(name: str, out_dim: int | None) -> None:
    torch.manual_seed(0)
    head = pyinstance.get_head(name, in_channels=10, out_dim=out_dim)
    expected_dim = out_dim or 10
    assert head.out_dim == expected_dim
    for shape in [(3, 10, 7, 5), (1, 10, 1, 1), (2, 10, 2, 13)]:
        out = head(torch.rand(shape))
        assert out.shape == (shape[0], expected_dim)
        torch.testing.assert_close(out.norm(dim=1), torch.ones(shape[0]))


def test_gem_head_options() -> None:
    head = pyinstance.get_head("gem", in_channels=4, p=2.5, learn_p=False)
    assert head.p.item() == 2.5 and not head.p.requires_grad


def test_unknown_head_and_bad_options() -> None:
    with pytest.raises(ValueError, match=r"unknown head 'gemm'.*Did you mean 'gem'"):
        pyinstance.get_head("gemm", in_channels=4)
    with pytest.raises(ValueError, match="in_channels"):
        pyinstance.get_head("mac", in_channels=-2)
    with pytest.raises(TypeError):
        pyinstance.get_head("mac")  # in_channels is required
