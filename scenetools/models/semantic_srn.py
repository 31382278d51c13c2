"""Semantic SRN (Kohli, Sitzmann, Wetzstein, 3DV 2020; apsk14/semantic_scene_representations):
part segmentation from SRN's scene features (notes: ``/work/shared/reference/srn-semantic-obsurf.md``
§3).

Two ways to get classes out of an SRN, as the paper has them:

* :class:`SRNHead` ("SRN+Linear", and the MLP variant): a classifier on φ's 256-d feature at
  the surface point each ray marches to, fitted with cross-entropy on a few labelled views
  (the paper: 10 instances x views 0, 1, 2) while the SRN stays frozen (the reference's
  ``update.py``). The run starts from a trained SRN (``training.init_from``).
* :class:`SemanticSRN` (joint training): an SRN whose pixel generator outputs RGBA and whose
  feature image [256, H, W] also feeds a U-Net class generator, trained together with
  cross-entropy weight 8 on whole labelled images.

Both render ``semantic`` [B, R, C] logits over C classes (class 0: background; C counts it)
next to ``rgb`` and ``depth``, and encode like SRN: the training code of a scene it was
trained on, else one fitted to the input views (test-time latent fitting, networks frozen).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInput
from .base import SceneModel, encoder_inputs
from .layers import UNet, fc_block
from .srn import SRN


def _check_classes(num_classes) -> int:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise TypeError(f"num_classes must be an integer of at least 2 (background and a part), got "
                        f"{num_classes!r}; null takes the scene file's semantic_classes")
    return num_classes


def _class_targets(batch: dict, num_classes: int) -> torch.Tensor:
    """``target_semantic`` [B, R], checked against the number of classes."""
    labels = batch["target_semantic"]
    if int(labels.max()) >= num_classes:
        raise BadInput(f"the data has class id {int(labels.max())}, the model {num_classes} classes "
                       f"(set model.num_classes, or null to take the scene file's)")
    return labels


class SRNHead(SceneModel):
    """A class head on a frozen SRN. Config: ``head`` ``linear`` (Linear(256 -> C), 257·C
    parameters) or ``mlp`` (4 x (Linear 256 + LayerNorm + ReLU) then Linear(256 -> C):
    265,216 + 257·C), ``num_classes`` C, ``class_weight`` (the reference's 8), and ``srn``: the
    SRN's own config (its sizes; null: those of the SRN in ``training.init_from``, where its
    weights come from)."""

    outputs = ("depth", "semantic")
    needs = ("semantic",)
    starts_from = ("srn",)
    encode_optimises = True

    def __init__(self, num_classes: int | None = None, head: str = "linear", class_weight: float = 8.0,
                 srn: dict | None = None):
        super().__init__()
        self.num_classes, self.class_weight = _check_classes(num_classes), class_weight
        self.srn = SRN(**(srn or {}))
        self.srn.requires_grad_(False)
        width = self.srn.pixel_generator[0].in_features
        if head == "linear":
            self.head = nn.Linear(width, num_classes)
        elif head == "mlp":
            self.head = fc_block(width, 256, 4, num_classes)
        else:
            raise TypeError(f"head must be linear or mlp, got {head!r}")

    def train(self, mode: bool = True):
        """Only the head trains: the SRN stays in evaluation mode (no start jitter; the
        labelled scenes use the codes it was trained with)."""
        super().train(mode)
        self.srn.eval()
        return self

    @classmethod
    def completed_config(cls, config: dict, initial: dict) -> dict:
        """``srn: null`` takes the sizes (and latent fitting) of the SRN the run starts from."""
        if config.get("srn") is None and initial.get("model_name") == "srn":
            return {**config, "srn": initial["config"]["model"]}
        return config

    def initial_state(self, model_name: str, state: dict) -> dict:
        if model_name == "srn":  # the SRN the head is fitted on; the head starts fresh
            return {**self.state_dict(), **{f"srn.{k}": v for k, v in state.items()}}
        return state

    def size_for_state(self, state: dict) -> None:
        self.srn.size_for_state({k[4:]: v for k, v in state.items() if k.startswith("srn.")})

    def use_run_folder(self, folder, tag: str) -> None:
        self.srn.use_run_folder(folder, tag)

    def encode(self, inputs: dict) -> dict:
        return self.srn.encode(inputs)

    def render(self, scene: dict, camera_pos, rays, near, far, outputs=None) -> dict:
        """{"rgb" [B, R, 3], "depth" [B, R], "semantic" [B, R, C]} of world-frame rays."""
        features, distance = self.srn.surface(scene["code"], camera_pos, rays)
        rgb = self.srn.pixel_generator(features)[..., :3] * 0.5 + 0.5
        return {"rgb": rgb, "depth": distance, "semantic": self.head(features)}

    def forward(self, batch: dict, step: int = 0):
        """``class_weight`` · cross-entropy of the head's logits at the target rays."""
        with torch.no_grad():
            inputs = encoder_inputs(batch)
            features, distance = self.srn.surface(self.srn.encode(inputs)["code"], batch["target_camera_pos"],
                                                  batch["target_rays"])
            rgb = self.srn.pixel_generator(features)[..., :3] * 0.5 + 0.5
        logits = self.head(features)
        labels = _class_targets(batch, self.num_classes)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        accuracy = (logits.argmax(-1) == labels).float().mean()
        mse = ((rgb.float() - batch["target_pixels"]) ** 2).mean()
        return self.class_weight * loss, {"class_loss": loss.detach(), "pixel_accuracy": accuracy, "mse": mse,
                                          "prediction": {"rgb": rgb, "depth": distance}}


class SemanticSRN(SRN):
    """SRN trained jointly with a U-Net class generator (nf0 64, 4 downsamplings, at most 128
    channels, BatchNorm) on its feature image; the pixel generator outputs RGBA as the
    reference's does. Config: SRN's keys, plus ``num_classes`` C and ``class_weight`` (8).
    Parameters at the reference sizes: 55,468,949 + 1,153·C + 256 per training scene.

    The reference loads RGBA images and sets every channel of transparent pixels to 1, so its
    alpha target is 1 everywhere an object or the white background is (scene files hold RGB:
    the alpha target here is 1). The U-Net needs whole images: training takes them from
    ``data.num_rays: null`` (``data.num_targets`` images per scene), and ``render`` returns
    ``semantic`` when given ``image_size``.
    """

    outputs = ("depth", "semantic")
    image_outputs = ("semantic",)
    needs = ("semantic",)
    starts_from = ("srn",)

    def __init__(self, num_classes: int | None = None, class_weight: float = 8.0, unet_channels: int = 64,
                 unet_levels: int = 4, unet_max_channels: int = 128, **srn):
        super().__init__(**srn)
        self.num_classes, self.class_weight = _check_classes(num_classes), class_weight
        hidden, width = self.pixel_generator[-1].in_features, self.pixel_generator[0].in_features
        self.pixel_generator[-1] = nn.Linear(hidden, 4)
        nn.init.kaiming_normal_(self.pixel_generator[-1].weight, a=0.0, nonlinearity="relu", mode="fan_in")
        self.class_generator = UNet(width, num_classes, unet_channels, unet_levels, unet_max_channels)

    def colour_target(self, target: torch.Tensor) -> torch.Tensor:
        """RGBA in [-1, 1], alpha 1 (see the class docstring)."""
        return torch.cat([target * 2 - 1, torch.ones_like(target[..., :1])], -1)

    def initial_state(self, model_name: str, state: dict) -> dict:
        """From an SRN: its networks; the RGBA output layer keeps the SRN's RGB rows (alpha
        fresh), the U-Net starts fresh, and each training scene keeps its code where the SRN
        has one for its scene key (the others start fresh)."""
        if model_name != "srn":
            return state
        own, last = self.state_dict(), f"pixel_generator.{len(self.pixel_generator) - 1}"
        out = {**own, **{k: v for k, v in state.items() if k in own and not k.startswith(last)
                         and k not in ("latent_codes.weight", "scene_keys")}}
        for kind in ("weight", "bias"):
            out[f"{last}.{kind}"] = own[f"{last}.{kind}"].clone()
            out[f"{last}.{kind}"][:3] = state[f"{last}.{kind}"]
        rows = (self.scene_keys[:, None] == state["scene_keys"][None, :].to(self.scene_keys.device))
        found = rows.any(1)
        out["latent_codes.weight"] = own["latent_codes.weight"].clone()
        out["latent_codes.weight"][found] = state["latent_codes.weight"][rows[found].int().argmax(1).cpu()].to(
            own["latent_codes.weight"])
        return out

    def classes(self, features: torch.Tensor, image_size) -> torch.Tensor:
        """Class logits [B, R, C] from features [B, R, F] of whole images of ``image_size``."""
        B, R, channels = features.shape
        H, W = (int(x) for x in image_size)
        if R % (H * W):
            raise ValueError(f"{R} rays are not whole {H} x {W} images")
        images = features.reshape(B * R // (H * W), H, W, channels).permute(0, 3, 1, 2)
        logits = self.class_generator(images)  # [N, C, H, W]
        return logits.permute(0, 2, 3, 1).reshape(B, R, self.num_classes)

    def render(self, scene: dict, camera_pos, rays, near, far, outputs=None, image_size=None) -> dict:
        """SRN's render, plus ``semantic`` [B, R, C] when the rays are whole images of
        ``image_size`` (H, W)."""
        features, distance = self.surface(scene["code"], camera_pos, rays)
        out = {"rgb": self.pixel_generator(features)[..., :3] * 0.5 + 0.5, "depth": distance}
        if image_size is not None and (outputs is None or "semantic" in outputs):
            out["semantic"] = self.classes(features, image_size)
        return out

    def forward(self, batch: dict, step: int = 0):
        """SRN's loss + ``class_weight`` · cross-entropy of the U-Net's logits on whole target
        images."""
        if "image_size" not in batch:
            raise BadInput("semantic_srn trains on whole images: set data.num_rays: null (and data.num_targets, "
                           "the images per scene)")
        scene = self.encode(encoder_inputs(batch))
        features, distance = self.surface(scene["code"], batch["target_camera_pos"], batch["target_rays"])
        colour = self.pixel_generator(features)
        loss, logs = self.loss(colour, distance, scene["code"], batch["target_pixels"])
        logits = self.classes(features, batch["image_size"][0])
        labels = _class_targets(batch, self.num_classes)
        class_loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), reduction="none")
        class_loss = class_loss.reshape(labels.shape).mean(1)
        logs.update(class_loss=class_loss.detach().mean(), pixel_accuracy=(logits.argmax(-1) == labels).float().mean(),
                    prediction={"rgb": colour[..., :3].detach() * 0.5 + 0.5, "depth": distance.detach()})
        return (loss + self.class_weight * class_loss).mean(), logs
