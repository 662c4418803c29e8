"""The contract checks' limits: the sizes they probe with, inclusive bounds, tight tolerances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pyinstance import testing
from pyinstance.testing import ContractError


class ConvBackbone(nn.Module):
    """One convolution: stride 4, 8 channels; kernel and padding set the map's size."""

    out_channels = 8
    out_stride = 4

    def __init__(self, kernel: int = 3, padding: int = 1, stride: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel, stride=stride, padding=padding)

    def forward(self, x):
        return self.conv(x)


def test_a_backbone_losing_exactly_one_cell_passes():
    # 32 px, stride 4, 5×5 valid kernel: (32 - 5) // 4 + 1 = 7 cells, one fewer than 32 / 4.
    backbone = ConvBackbone(kernel=5, padding=0)
    assert backbone(torch.zeros(1, 3, 32, 32)).shape[-1] == 7
    testing.check_backbone(backbone)


def test_a_backbone_with_exactly_one_extra_cell_passes():
    # 1×1 kernel padded by 2: (32 + 4 - 1) // 4 + 1 = 9 cells, one more than 32 / 4.
    backbone = ConvBackbone(kernel=1, padding=2)
    assert backbone(torch.zeros(1, 3, 32, 32)).shape[-1] == 9
    testing.check_backbone(backbone)


def test_a_backbone_losing_two_cells_fails():
    # 9×9 valid kernel: (32 - 9) // 4 + 1 = 6 cells, below (32 - 4) // 4 = 7.
    with pytest.raises(ContractError, match="out_stride=4 predicts h≈8 for 32px inputs, got 6"):
        testing.check_backbone(ConvBackbone(kernel=9, padding=0))


class Narrow(ConvBackbone):
    """Returns 4 of its 8 declared channels: the message then shows the probed size."""

    def forward(self, x):
        return self.conv(x)[:, :4]


@pytest.mark.parametrize(
    ("stride", "min_input_size", "kwargs", "probed"),
    [
        (4, None, {}, "2×8×h×w for 32×32"),  # at least 32 px
        (32, None, {}, "2×8×h×w for 64×64"),  # two cells of the stride
        (4, 50, {}, "2×8×h×w for 50×50"),  # the declared minimum
        (4, None, {"image_size": 40, "batch": 3}, "3×8×h×w for 40×40"),
    ],
)
def test_check_backbone_probes_the_documented_size_and_batch(
    stride, min_input_size, kwargs, probed
):
    backbone = Narrow(kernel=stride, padding=0, stride=stride)
    backbone.out_stride = stride
    if min_input_size is not None:
        backbone.min_input_size = min_input_size
    with pytest.raises(ContractError, match=f"backbone output must be {probed} inputs"):
        testing.check_backbone(backbone, **kwargs)


class MeanHead(nn.Module):
    """The mean of each channel, scaled to length ``norm``."""

    out_dim = 8

    def __init__(self, norm: float):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        return nn.functional.normalize(x.mean(dim=(2, 3)), dim=1) * self.norm


def test_a_head_with_norms_of_1_01_fails():
    testing.check_head(MeanHead(1.0), 8)
    with pytest.raises(ContractError, match="rows must be L2-normalised, got norms"):
        testing.check_head(MeanHead(1.01), 8)


class UnitMeanHead(nn.Module):
    def __init__(self, channels: int = 4):
        super().__init__()
        self.out_dim = channels

    def forward(self, x):
        return nn.functional.normalize(x.mean(dim=(2, 3)), dim=1)


def test_a_stride_one_backbone_passes():
    class Unstrided(ConvBackbone):
        out_stride = 1

    testing.check_backbone(Unstrided(stride=1))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ConvBackbone(),
            "^backbone must have a positive int attribute 'out_channels', got 0$",
        ),
        (lambda: UnitMeanHead(), "^head must have a positive int attribute 'out_dim', got 0$"),
    ],
)
def test_a_zero_attribute_is_named_with_its_owner(make, message):
    component = make()
    if isinstance(component, UnitMeanHead):
        component.out_dim = 0
        call = lambda: testing.check_head(component, 4)  # noqa: E731
    else:
        component.out_channels = 0
        call = lambda: testing.check_backbone(component)  # noqa: E731
    with pytest.raises(ContractError, match=message):
        call()


def test_missing_attributes_are_contract_errors():
    class Strideless(nn.Module):
        out_channels = 8

        def forward(self, x):
            return x

    with pytest.raises(
        ContractError, match="^backbone must have a positive int attribute 'out_stride', got None$"
    ):
        testing.check_backbone(Strideless())


def test_a_head_whose_input_gradient_is_zero_fails():
    class Constant(UnitMeanHead):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return nn.functional.normalize(x.mean(dim=(2, 3)) * 0 + self.bias, dim=1)

    with pytest.raises(
        ContractError, match="^head output is not differentiable w.r.t. its input features$"
    ):
        testing.check_head(Constant(), 4)


def test_head_messages_start_with_what_is_wrong():
    class Infinite(UnitMeanHead):
        def forward(self, x):
            return super().forward(x) / 0

    class Listing(UnitMeanHead):
        def forward(self, x):
            return [super().forward(x)]

    with pytest.raises(ContractError, match="^head output has NaN or infinite values$"):
        testing.check_head(Infinite(), 4)
    with pytest.raises(ContractError, match=r"^head output must be 3×4 for 7×7 maps, got \(\)$"):
        testing.check_head(Listing(), 4)
