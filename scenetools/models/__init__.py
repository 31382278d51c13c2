"""Models: shared layers (``layers``) and one module per model.

``build_model(name, config)`` builds a model from the ``model`` section of a run config.
Every model has ``encode(**batch) -> scene`` (a dict of tensors) and
``decode(scene, camera_pos [B, R, 3], rays [B, R, 3]) -> {"rgb": [B, R, 3], ...}`` on
world-frame rays, so training, evaluation and rendering treat them alike.
"""
from __future__ import annotations

from ..errors import BadInput
from .osrt import OSRT
from .srt import SRT

#: model name -> class. ``isrt`` is SRT built from the improved encoder and decoder.
MODELS = {"srt": SRT, "isrt": SRT, "osrt": OSRT}


def build_model(name: str, config: dict):
    if name not in MODELS:
        raise BadInput(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    return MODELS[name](**config)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
