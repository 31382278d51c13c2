"""Models: the interface they share (``base``), shared layers (``layers``), one module per model.

Every model is a :class:`~scenetools.models.base.SceneModel`: ``encode`` the input views,
``render`` world-frame rays, and a training objective (``forward(batch, step)``); see
``base.py`` for shapes. ``build_model(name, config)`` builds one from the ``model`` section
of a run config.

Models outside this package join the registry with :func:`register`, from a module named in
the ``SCENETOOLS_PLUGINS`` environment variable (comma-separated module names, imported when
the registry is first read) or from a package's ``scenetools.models`` entry point; every
command then trains, evaluates and renders them like the shipped ones.
"""
from __future__ import annotations

import importlib
import os

from ..errors import BadInput
from .base import SceneModel
from .obsurf import ObSuRF
from .osrt import OSRT
from .semantic_srn import SemanticSRN, SRNHead
from .srn import SRN
from .srt import SRT

#: model name -> class. ``isrt`` is SRT built from the improved encoder and decoder;
#: ``srn_head`` a class head fitted on a frozen SRN, ``semantic_srn`` SRN trained with classes.
MODELS = {"srt": SRT, "isrt": SRT, "osrt": OSRT, "obsurf": ObSuRF, "srn": SRN, "srn_head": SRNHead,
          "semantic_srn": SemanticSRN}
_plugins_loaded = False


def register(name: str, cls: type) -> type:
    """Add a model class (a SceneModel subclass) under ``name``."""
    if not (isinstance(cls, type) and issubclass(cls, SceneModel)):
        raise TypeError(f"{cls!r} is not a SceneModel subclass")
    MODELS[name] = cls
    return cls


def model_names() -> list:
    """Every registered model name, plugins included."""
    _load_plugins()
    return sorted(MODELS)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(None, (m.strip() for m in os.environ.get("SCENETOOLS_PLUGINS", "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise BadInput(f"SCENETOOLS_PLUGINS: cannot import {module!r} ({error})") from None
    from importlib.metadata import entry_points

    for entry in entry_points(group="scenetools.models"):
        register(entry.name, entry.load())


def model_class(name: str) -> type:
    """The class registered as ``name``."""
    _load_plugins()
    if name not in MODELS:
        raise BadInput(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    return MODELS[name]


def build_model(name: str, config: dict):
    """The model ``name`` built from the ``model`` section of a config."""
    cls = model_class(name)
    try:
        return cls(**config)
    except TypeError as error:  # an unknown or missing key in the model section
        raise BadInput(f"model {name!r}: bad config ({error})") from None


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
