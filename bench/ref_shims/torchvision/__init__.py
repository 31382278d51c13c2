"""A minimal stand-in for torchvision, for the reference implementations' imports only.

See bench/ref_shims/README.md: the references import ResNet building blocks (ObSuRF's
encoder), ``transforms``, ``utils.save_image`` and ``utils.make_grid`` (SRN's log); nothing
else is provided.
"""
from . import models, transforms, utils  # noqa: F401

__version__ = "0.0+scenetools-bench-stand-in"
