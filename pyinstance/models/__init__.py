"""Backbones (feature maps + FCN class maps) and pooling heads (feature map -> descriptor)."""

from pyinstance.models.backbone import IMAGENET_MEAN, IMAGENET_STD, Backbone
from pyinstance.models.efficientnet import EfficientNetLite0
from pyinstance.models.pooling import MAC, RMAC, GeM, Projection, SPoC
from pyinstance.models.resnet import ResNet
from pyinstance.models.tripletnet import TripletNetSmall
from pyinstance.models.vgg import VGG16, AlexNet
from pyinstance.models.weights import WeightsMismatchError, load_weights

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAC",
    "RMAC",
    "VGG16",
    "AlexNet",
    "Backbone",
    "EfficientNetLite0",
    "GeM",
    "Projection",
    "ResNet",
    "SPoC",
    "TripletNetSmall",
    "WeightsMismatchError",
    "load_weights",
]
