"""A model that predicts part classes (``semantic``), for the evaluation tests: registered as
``tiny_semantic`` through SCENETOOLS_PLUGINS.

It has no weights. A ray that passes within 0.45 of the origin (where the single objects of
``synthetic --kind objects`` stand) is the object, the rest background (class 0); the
object's class follows the height at which the ray passes closest to the origin: a chair's
legs below -0.1, its seat up to 0.15, its back above. Its colour is grey everywhere.
"""
import torch
import torch.nn.functional as F

from scenetools.models import register
from scenetools.models.base import SceneModel

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
