"""A model that lives outside scenetools: the model-interface tests register it through
SCENETOOLS_PLUGINS and run it through every command.

It encodes the input views as their mean colour plus a learned code and renders each ray
as an MLP of (direction, that encoding); ``segmentation`` splits rays between two slots by
their height. Its ``encode`` refuses to see anything but the input views.

``TinySemanticModel`` (``tiny_semantic``, for the evaluation tests) has no weights: a ray
that passes within 0.45 of the origin (where the single objects of ``synthetic --kind
objects`` stand) is the object, the rest background (class 0); the object's class follows
the height at which the ray passes closest to the origin: a chair's legs below -0.1, its seat
up to 0.15, its back above. Its colour is grey everywhere.
"""
import torch
import torch.nn.functional as F
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


class PlaneClassesModel(SceneModel):
    """A semantic model whose every output is known in closed form, for the render tests:
    the world is the plane z = 0, split into class 1 (x > 0) and class 2 (x <= 0); rays that
    miss it (pointing up) see background, class 0, at depth inf. A hit at (x, y, 0) is
    coloured (0.5 + x / 8, 0.5 + y / 8, 0.25), clamped to [0, 1]; a miss is white. It learns
    nothing (no parameters)."""

    outputs = ("semantic", "depth")

    def encode(self, inputs: dict) -> dict:
        return {}

    def render(self, scene, camera_pos, rays, near, far, outputs=None):
        down = rays[..., 2] < 0
        depth = torch.where(down, -camera_pos[..., 2] / torch.where(down, rays[..., 2], -1.0), torch.inf)
        hit = camera_pos + torch.where(down, depth, 0.0)[..., None] * rays  # [B, R, 3]
        label = torch.where(down, torch.where(hit[..., 0] > 0, 1, 2), 0)
        rgb = torch.stack([0.5 + hit[..., 0] / 8, 0.5 + hit[..., 1] / 8, torch.full_like(depth, 0.25)], -1)
        rgb = torch.where(down[..., None], rgb.clamp(0, 1), 1.0)
        return {"rgb": rgb, "depth": depth, "semantic": nn.functional.one_hot(label, 3).float() * 5}


register("tiny-plane", PlaneClassesModel)


#: Chair classes of a file of chairs only (synthetic_objects.class_names(["chair"])).
SEAT, BACK, LEG = 1, 2, 3


class TinySemanticModel(SceneModel):
    outputs = ("semantic",)

    def __init__(self, classes: int = 5):
        super().__init__()
        self.classes = classes

    def encode(self, inputs: dict) -> dict:
        return {}

    @staticmethod
    def labels(camera_pos, rays):
        """Class ids [B, R] of rays [B, R, 3] from camera_pos [B, R, 3] (see the module docstring)."""
        closest = camera_pos - (camera_pos * rays).sum(-1, keepdim=True) * rays
        band = torch.bucketize(closest[..., 2].contiguous(), torch.tensor([-0.1, 0.15]))
        parts = torch.tensor([LEG, SEAT, BACK])[band]
        return torch.where(closest.norm(dim=-1) < 0.45, parts, 0)

    def render(self, scene, camera_pos, rays, near, far, outputs=None):
        labels = self.labels(camera_pos, rays).clamp(max=self.classes - 1)
        return {"rgb": torch.full_like(rays, 0.5), "semantic": 10.0 * F.one_hot(labels, self.classes).float()}


register("tiny_semantic", TinySemanticModel)
