"""``torchvision.models.ResNet`` and ``torchvision.models.resnet``: the pieces ObSuRF's
``CustomResnet`` builds on."""
from . import resnet  # noqa: F401
from .resnet import ResNet  # noqa: F401
