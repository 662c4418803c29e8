"""Built-in backbones: EfficientNet-Lite0 (pretrained, the default), -Lite1, -Lite2, ResNets,
VGG-16, AlexNet, and the small triplet network."""

from __future__ import annotations

from typing import Any

from pyinstance.hookspecs import Register, hookimpl
from pyinstance.models import VGG16, AlexNet, EfficientNetLite0, ResNet, TripletNetSmall
from pyinstance.models.efficientnet import EfficientNetLite1, EfficientNetLite2

#: The backbone the library uses when none is named.
DEFAULT_BACKBONE = "efficientnet_lite0"


def _resnet(depth: int):  # noqa: ANN202 - returns a factory
    def factory(**kwargs: Any) -> ResNet:
        return ResNet(depth, **kwargs)

    factory.__name__ = f"resnet{depth}"
    factory.__doc__ = (
        f"ResNet-{depth}; ``weights=`` a local torchvision state dict, else random init."
    )
    return factory


@hookimpl
def pyinstance_register_backbones(register: Register) -> None:
    register(DEFAULT_BACKBONE, EfficientNetLite0)
    register("efficientnet_lite1", EfficientNetLite1)
    register("efficientnet_lite2", EfficientNetLite2)
    for depth in (18, 34, 50, 101, 152):
        register(f"resnet{depth}", _resnet(depth))
    register("alexnet", AlexNet)
    register("vgg16", VGG16)
    register("tripletnet_small", TripletNetSmall)
