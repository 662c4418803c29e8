"""tripletnet_small: the 4-conv network of the image-search-engine paper."""

from __future__ import annotations

import pytest
import torch

from pyinstance import testing
from pyinstance.models import TripletNetSmall


def test_architecture() -> None:
    model = TripletNetSmall()
    shapes = [tuple(model.get_submodule(f"conv{i}").weight.shape) for i in range(1, 5)]
    assert shapes == [(64, 3, 5, 5), (128, 64, 3, 3), (256, 128, 3, 3), (128, 256, 2, 2)]
    assert model.out_channels == 128 and model.out_stride == 8
    assert model.dropout.p == 0.5


def test_32px_gives_a_128d_sigmoid_embedding_and_larger_inputs_a_map() -> None:
    model = TripletNetSmall().eval()
    with torch.no_grad():
        embedding, class_map = model.forward_with_class_map(torch.randn(4, 3, 32, 32))
        bigger = model(torch.randn(1, 3, 64, 48))
    assert embedding.shape == (4, 128, 1, 1)
    assert ((embedding > 0) & (embedding < 1)).all()
    assert class_map.shape == (4, 10, 1, 1)
    assert bigger.shape == (1, 128, 5, 3)  # (64 - 24) / 8, (48 - 24) / 8


def test_dropout_between_convolutions_is_active_in_training_only() -> None:
    torch.manual_seed(0)
    model = TripletNetSmall()
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_too_small_and_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 32 pixels"):
        TripletNetSmall()(torch.randn(1, 3, 31, 40))
    with pytest.raises(ValueError, match="dropout"):
        TripletNetSmall(dropout=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        TripletNetSmall(num_classes=0)


def test_trainable_from_and_weights(tmp_path) -> None:  # noqa: ANN001
    model = TripletNetSmall(trainable_from="conv3")
    assert not model.conv1.weight.requires_grad and not model.conv2.bias.requires_grad
    assert model.conv3.weight.requires_grad and model.fc.weight.requires_grad
    path = tmp_path / "tripletnet.pth"
    torch.save(model.state_dict(), path)
    loaded = TripletNetSmall(weights=path)
    assert torch.equal(loaded.conv4.weight, model.conv4.weight)


def test_contract_check_accepts_valid_convolutions_through_min_input_size() -> None:
    testing.check_backbone(TripletNetSmall())  # 1×1 at 32 px: the border loss is declared

    class Undeclared(TripletNetSmall):
        min_input_size = 8  # claims (almost) no border loss

    with pytest.raises(testing.ContractError, match="out_stride=8 predicts"):
        testing.check_backbone(Undeclared())
