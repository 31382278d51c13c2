"""A model that lives outside scenetools: the model-interface tests register it through
SCENETOOLS_PLUGINS and run it through every command.

It encodes the input views as their mean colour plus a learned code and renders each ray
as an MLP of (direction, that encoding); ``segmentation`` splits rays between two slots by
their height. Its ``encode`` refuses to see anything but the input views.
"""
import torch
from torch import nn

from scenetools.models import register
from scenetools.models.base import ENCODER_FIELDS, SceneModel


class TinyModel(SceneModel):
    outputs = ("segmentation", "depth")

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def encode(self, inputs: dict) -> dict:
        leaked = [k for k in inputs if not (k.startswith("input_") or k in ENCODER_FIELDS)]
        if leaked:
            raise AssertionError(f"encode was given {leaked}")
        return {"colour": inputs["input_images"].mean(dim=(1, 3, 4))}  # [B, 3]

    def render(self, scene, camera_pos, rays, near, far, outputs=None):
        colour = scene["colour"][:, None].expand_as(rays)
        rgb = torch.sigmoid(self.mlp(torch.cat([rays, colour], -1)))
        up = (rays[..., 2:] > 0).float()
        return {"rgb": rgb, "segmentation": torch.cat([up, 1 - up], -1), "depth": far[:, None].expand(rays.shape[:2])}


register("tiny", TinyModel)
