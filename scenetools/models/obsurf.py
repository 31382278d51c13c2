"""ObSuRF: Object Scene Representation Fields (Stelzner, Kersting, Kosiorek 2021), layer for
layer as stelzner/obsurf has it.

Encoder: one input view (the first), with its per-pixel ray directions and an encoding of the
camera position, runs through a ResNet-18-style CNN (all widths ``h_dim``, BatchNorm, no
max-pool) and a per-pixel MLP into a feature map of ``c_dim`` channels; slot attention (5
iterations, slots sampled around a learned mean, self-attention between slots) turns the
feature map into S slots.

Decoder: one NeRF MLP shared by all slots, conditioned on a slot by shifting and scaling the
input of each hidden layer ("ain"). Each slot gives a density and a colour at every point;
the scene's density is the sum over slots and its colour the density-weighted mean. The colour
head also sees the ray direction and, optionally, the input view's feature at the pixel the
point projects to (nearest feature, no interpolation).

Training never ray-marches: each target ray with a known depth gives one point just behind the
surface (its density should be high and its colour the pixel's) and one point in the empty
space in front of it, importance-sampled (its density should be low). An overlap penalty on
the slot densities at surface points, annealed in, keeps slots from sharing surfaces.

Rendering, as the reference evaluates: coarse samples from near to far, fine samples from
the coarse weights, and the slot mixture composited with weights that are the termination
density at the samples, normalised over them (``volume.termination_weights``; the objective
trains that density, and its surfaces are thin shells). Rays that hit nothing before ``far``
(depth ``inf``, e.g. sky) are trained as hitting a backdrop at ``far``, and the last coarse
sample sits there to see it. Slot images are each slot rendered alone, over black with the
slot's NeRF opacity (the sample at far standing for everything beyond it).

Differences from the reference: cameras are ours (any intrinsics and pose, from
``input_camera_to_world`` and ``input_intrinsics``) instead of the hard-coded CLEVR camera
looking at the origin; ``use_pixel_features: false`` really turns pixel features off (the
reference's "nopixel" configs leave them on); the initial-slot mean and spread get gradients
(the reference samples them with ``torch.normal``, which passes none); rays of unknown depth
(0) are left out of the loss and rays without a surface use the backdrop above. Rendering
ends rays at a floor only where ``render.min_z`` says so (the shipped presets do, at the
reference's fixed -0.1), samples ``far`` itself (the reference's midpoints stop short of it)
and works in chunks of bounded size on any device.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInput
from . import volume
from .base import SceneModel, encoder_inputs, near_far
from .layers import PositionalEncoding, conv2d_of_parts, slot_attention_round


class FourierFeatures(nn.Module):
    """x [..., C] -> [..., C * (1 + 2 * freqs)]: x itself, then sin and cos of 2^k pi x for
    k = start .. start + freqs - 1 (coordinate-major), the reference's order."""

    def __init__(self, freqs: int = 16, start: int = -5, channels: int = 3):
        super().__init__()
        self.encoding = PositionalEncoding(freqs, start)
        self.dim = channels * (1 + 2 * freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.encoding(x)], -1)


# ----------------------------------------------------------------------------- encoder

class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two 3x3 convs with BatchNorm; the shortcut is the
    identity, or a 1x1 conv with BatchNorm when the block strides or changes width."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + shortcut)


class ResNet(nn.Module):
    """[B, in_channels, H, W] -> [B, channels, H', W']: a 7x7 conv, BatchNorm and ReLU (no
    max-pool), then four layers of basic blocks, every one ``channels`` wide. The first
    ``downsample`` of (conv1, layer2, layer3, layer4) stride by 2 (the reference's
    CustomResnet; layer1 never strides)."""

    def __init__(self, in_channels: int, channels: int = 128, blocks=(2, 2, 2, 2), downsample: int = 2):
        super().__init__()
        strides = [2 if i < downsample else 1 for i in range(4)]  # conv1, layer2, layer3, layer4
        self.conv1 = nn.Conv2d(in_channels, channels, 7, strides[0], 3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        for i, (count, stride) in enumerate(zip(blocks, [1] + strides[1:])):
            layer = [BasicBlock(channels, channels, stride if j == 0 else 1) for j in range(count)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # pixels in channels-last order, weights too: oneDNN's convolutions (in bf16 above
        # all) otherwise reorder every activation to that order and back
        self.to(memory_format=torch.channels_last)

    def forward(self, x, constant=None):
        """x [B, C, H, W]; constant [B, in_channels - C]: further input channels, each the
        same at every pixel of an image."""
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.conv1(x) if constant is None else conv2d_of_parts(self.conv1, [x, constant])
        x = F.relu(self.bn1(x))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SlotAttention(nn.Module):
    """ObSuRF's slot attention: tokens [B, N, dim] -> slots [B, S, dim].

    Slots start as samples of N(mu, softplus(sigma)), mu and sigma learned per channel and
    shared by all slots (sampling breaks the symmetry between them, so it happens in
    evaluation too). Each iteration: attention normalised over slots, then a weighted mean
    over tokens, a GRU update, multi-head self-attention between the slots (residual) and a
    residual MLP. Projections have biases.
    """

    def __init__(self, num_slots: int, dim: int, iters: int = 5, hidden_dim: int | None = None,
                 self_attention: bool = True, heads: int = 4, eps: float = 1e-8):
        super().__init__()
        self.num_slots, self.iters, self.eps, self.scale = num_slots, iters, eps, dim ** -0.5
        self.slots_mu = nn.Parameter(torch.randn(dim))
        self.slots_sigma = nn.Parameter(torch.randn(dim))  # the spread is softplus(slots_sigma)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.gru = nn.GRUCell(dim, dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True) if self_attention else None
        hidden_dim = max(dim, hidden_dim or dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, dim))
        self.norm_input, self.norm_slots, self.norm_pre_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        B, _, D = inputs.shape
        noise = torch.randn(B, self.num_slots, D, device=inputs.device, dtype=inputs.dtype)
        slots = self.slots_mu + (F.softplus(self.slots_sigma) + 1e-10) * noise
        inputs = self.norm_input(inputs)
        k, v = self.to_k(inputs), self.to_v(inputs)
        for _ in range(self.iters):
            slots = slot_attention_round(slots, self.to_q(self.norm_slots(slots)), k, v, self.gru, self.scale,
                                         self.eps)
            if self.self_attention is not None:
                slots = slots + self.self_attention(slots, slots, slots, need_weights=False)[0]
            slots = slots + self.mlp(self.norm_pre_mlp(slots))
        return slots


class SlotEncoder(nn.Module):
    """One view -> (slots [B, S, c_dim], pixel features [B, H', W', c_dim]).

    The CNN input is the image, the ray directions and the camera-position encoding (16
    frequencies from 2^-5, with the raw position: 99 channels) broadcast over the pixels:
    105 channels, of which the CNN's first conv never materialises the 99 constant ones.
    """

    def __init__(self, num_slots: int, c_dim: int = 128, h_dim: int = 128, downsample: int = 2,
                 blocks=(2, 2, 2, 2), slot_iters: int = 5, self_attention: bool = True, heads: int = 4):
        super().__init__()
        self.camera_encoding = FourierFeatures(16, -5)
        self.cnn = ResNet(3 + 3 + self.camera_encoding.dim, h_dim, blocks, downsample)
        self.pixel_mlp = nn.Sequential(nn.LayerNorm(h_dim), nn.Linear(h_dim, h_dim), nn.ReLU(), nn.Linear(h_dim, c_dim))
        self.slot_attention = SlotAttention(num_slots, c_dim, slot_iters, c_dim, self_attention, heads)

    def forward(self, images, rays, camera_pos):
        """images [B, 3, H, W], rays [B, H, W, 3], camera_pos [B, 3]."""
        x = self.cnn(torch.cat([images, rays.permute(0, 3, 1, 2)], 1), self.camera_encoding(camera_pos))
        features = self.pixel_mlp(x.permute(0, 2, 3, 1))
        return self.slot_attention(features.flatten(1, 2)), features


# ----------------------------------------------------------------------------- decoder

def features_at(features: torch.Tensor, camera_to_world: torch.Tensor, intrinsics: torch.Tensor,
                points: torch.Tensor) -> torch.Tensor:
    """The feature of the cell each point projects to: nearest cell, clipped to the map.

    features [B, h, w, C]; camera_to_world [B, 4, 4] (OpenCV axes); intrinsics [B, 3, 3] in
    feature-map pixels; points [B, ..., 3] -> [B, ..., C]. Points behind the camera get
    whatever cell their (meaningless) projection clips to, as in the reference.
    """
    B, h, w, C = features.shape
    with torch.autocast(points.device.type, enabled=False):  # pixel coordinates need float32
        flat = points.reshape(B, -1, 3).float()
        R, t = camera_to_world[:, :3, :3].float(), camera_to_world[:, :3, 3].float()
        camera = (flat - t[:, None]) @ R  # R^T (p - t) for every point
        pixel = camera @ intrinsics.float().transpose(1, 2)
        uv = torch.nan_to_num(pixel[..., :2] / pixel[..., 2:])
    col = uv[..., 0].clamp(0, w - 1).long()  # non-negative after the clip: truncation is floor
    row = uv[..., 1].clamp(0, h - 1).long()
    index = (row * w + col)[..., None].expand(-1, -1, C)
    return features.reshape(B, h * w, C).gather(1, index).reshape(points.shape[:-1] + (C,))


def conditioned_linear(h: torch.Tensor, layer: nn.Linear, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``layer((h + shift) * scale)`` for every slot: h [B, P, C] shared by the slots or
    [B, S, P, C] per slot; shift, scale [B, S, C] -> [B, S, P, out].

    The slot is folded into the layer (weights W diag(scale), bias b + W (shift * scale)), so
    no per-slot copy of h is shifted and scaled: one batched product per layer, and for shared
    points one product for all slots.
    """
    B, S, _ = scale.shape
    weight = scale[..., None] * layer.weight.t()  # [B, S, C, out]
    bias = layer.bias + (shift * scale) @ layer.weight.t()  # [B, S, out]
    if h.dim() == 3:  # [B, P, C] @ [B, C, S * out]
        out = torch.baddbmm(bias.flatten(1)[:, None], h, weight.transpose(1, 2).flatten(2))
        return out.unflatten(-1, (S, -1)).transpose(1, 2)
    out = torch.baddbmm(bias.flatten(0, 1)[:, None], h.flatten(0, 1), weight.flatten(0, 1))
    return out.unflatten(0, (B, S))


class NerfDecoder(nn.Module):
    """The per-slot NeRF: (slots [B, S, D], points [B, P, 3] shared by the slots or
    [B, S, P, 3] per slot) -> (density [B, S, P], colour [B, S, P, 3] or None without rays).

    The positional encoding of a point (raw + 16 frequencies from 2^-5: 99 numbers) passes
    ``num_layers - 1`` stages ``h = relu(Linear((h + shift(slot)) * scale(slot)))``, then a
    Linear to 1 + hidden: the density logit and features. The colour head maps [features,
    pixel feature (if any), ray direction] through Linear -> ReLU -> Linear; the part of its
    first Linear that sees the pixel feature and the ray is the same for every slot and is
    computed once.
    """

    def __init__(self, slot_dim: int = 128, hidden: int = 128, num_layers: int = 5, num_freqs: int = 16,
                 start_freq: int = -5, max_density: float = 10.0, pixel_dim: int = 0):
        super().__init__()
        self.encoding = FourierFeatures(num_freqs, start_freq)
        self.max_density, self.hidden = max_density, hidden
        widths = [self.encoding.dim] + [hidden] * (num_layers - 2)  # inputs of the conditioned stages
        self.conditioning = nn.ModuleList(nn.Linear(slot_dim, 2 * width) for width in widths)
        self.layers = nn.ModuleList([nn.Linear(width, hidden) for width in widths] + [nn.Linear(hidden, hidden + 1)])
        self.color_head = nn.Sequential(nn.Linear(hidden + pixel_dim + 3, hidden), nn.ReLU(), nn.Linear(hidden, 3))

    def forward(self, slots, points, rays=None, pixel_features=None):
        """rays and pixel_features [B, P, *] or [B, S, P, *], like points."""
        h = self.encoding(points)
        for conditioning, layer in zip(self.conditioning, self.layers):
            # in place: a fresh tensor of this size costs more in page faults than the ReLU itself
            h = F.relu(conditioned_linear(h, layer, *conditioning(slots).chunk(2, -1)), inplace=True)
        last = self.layers[-1]  # its first output is the density logit, the others features
        density = torch.sigmoid(F.linear(h, last.weight[:1], last.bias[:1])[..., 0]) * self.max_density + 1e-10
        if rays is None:
            return density, None
        first = self.color_head[0]
        seen = torch.cat([pixel_features, rays], -1) if pixel_features is not None else rays
        shared = F.linear(seen, first.weight[:, self.hidden:], first.bias)  # [B, (S,) P, hidden]
        shared = shared[:, None] if shared.dim() == 3 else shared
        features = F.linear(h, last.weight[1:], last.bias[1:])
        hidden = F.relu(F.linear(features, first.weight[:, :self.hidden]).add_(shared), inplace=True)
        return density, torch.sigmoid(self.color_head[2](hidden))


# ----------------------------------------------------------------------------- model

#: The training objective's settings (the reference's defaults and its 3D configs).
LOSS_DEFAULTS = {
    "color_std": 0.2,  # std of the Gaussian colour likelihood
    "depth_noise": 0.07,  # surface points are pushed behind the surface by U[0, depth_noise)
    "importance_cutoff": 0.98,  # half the empty points in [cutoff, 1] x depth, half in [0, cutoff] x depth
    "depth_weight": 1.0,  # weight of the depth log-likelihood
    "l1": 0.05,  # weight of the overlap penalty (0: none, the "nolo" ablation)
    "anneal_start": 20000,  # the overlap weight rises linearly from 0 at this step ...
    "anneal_until": 40000,  # ... to l1 at this one (null: no annealing)
}

#: Rendering settings: samples per ray; ``min_z``: in a z-up world with a ground plane, rays
#: end where they reach this height (the reference's -0.1, just under CLEVR's floor, so little
#: of the unconstrained density under the ground is rendered; null: no floor); how many (point,
#: slot) decoder evaluations to do at once (bounds memory whatever chunk of rays is passed).
RENDER_DEFAULTS = {"coarse_samples": 64, "fine_samples": 64, "min_z": None, "max_points": 2 ** 18}


class ObSuRF(SceneModel):
    """Config (the ``model`` section)::

        num_slots: 7
        c_dim: 128            # slots and pixel features
        h_dim: 128            # CNN width
        encoder: {downsample: 2, slot_iters: 5, blocks: [2, 2, 2, 2], self_attention: true}
        decoder: {hidden: 128, num_layers: 5, max_density: 10, use_pixel_features: true}
        loss: {color_std: 0.2, depth_noise: 0.07, importance_cutoff: 0.98, depth_weight: 1,
               l1: 0.05, anneal_start: 20000, anneal_until: 40000}
        render: {coarse_samples: 64, fine_samples: 64, min_z: null, max_points: 262144}
    """

    outputs = ("depth", "segmentation", "slot_rgb")
    needs = ("depth",)

    def __init__(self, num_slots: int = 7, c_dim: int = 128, h_dim: int = 128, encoder: dict | None = None,
                 decoder: dict | None = None, loss: dict | None = None, render: dict | None = None):
        super().__init__()
        decoder = dict(decoder or {})
        self.use_pixel_features = decoder.pop("use_pixel_features", True)
        self.encoder = SlotEncoder(num_slots, c_dim, h_dim, **(encoder or {}))
        self.decoder = NerfDecoder(c_dim, pixel_dim=c_dim if self.use_pixel_features else 0, **decoder)
        self.loss_config = _settings("loss", LOSS_DEFAULTS, loss)
        self.render_config = _settings("render", RENDER_DEFAULTS, render)

    # -------------------------------------------------------------------- scene and points
    def encode(self, inputs: dict) -> dict:
        """The first input view -> {"slots": [B, S, c_dim], "features": [B, h, w, c_dim],
        "camera_to_world": [B, 4, 4], "intrinsics": [B, 3, 3] in feature-map pixels}."""
        images = inputs["input_images"][:, 0]
        slots, features = self.encoder(images, inputs["input_rays"][:, 0], inputs["input_camera_pos"][:, 0])
        (H, W), (h, w) = images.shape[-2:], features.shape[1:3]
        # a feature cell covers W / w input pixels: continuous pixel coordinates scale by w / W
        scale = torch.tensor([w / W, h / H, 1.0], device=images.device, dtype=images.dtype)
        return {"slots": slots, "features": features, "camera_to_world": inputs["input_camera_to_world"][:, 0],
                "intrinsics": scale[:, None] * inputs["input_intrinsics"][:, 0]}

    def decode(self, scene: dict, points: torch.Tensor, rays: torch.Tensor | None = None):
        """points (and rays) [B, P, 3] or per slot [B, S, P, 3] -> (density [B, S, P], colour
        [B, S, P, 3] or None when no rays are given), in float32 whatever the autocast (the
        likelihoods and the compositing need it)."""
        pixel_features = None
        if self.use_pixel_features and rays is not None:  # they feed the colour head only
            pixel_features = features_at(scene["features"], scene["camera_to_world"], scene["intrinsics"], points)
        density, colour = self.decoder(scene["slots"], points, rays, pixel_features)
        return density.float(), None if colour is None else colour.float()

    def point_segmentation(self, scene: dict, points: torch.Tensor) -> torch.Tensor:
        """points [B, P, 3] -> [B, P, S]: each slot's share of the density."""
        step = max(1, self.render_config["max_points"] // (points.shape[0] * scene["slots"].shape[1]))
        shares = []
        for start in range(0, points.shape[1], step):
            density, _ = self.decode(scene, points[:, start:start + step])
            shares.append((density / density.sum(1, keepdim=True)).transpose(1, 2))
        return torch.cat(shares, 1)

    # -------------------------------------------------------------------- rendering
    def render(self, scene: dict, camera_pos, rays, near, far, outputs=None) -> dict:
        """Rays [B, R, 3] from camera_pos [B, R, 3] between near and far [B] -> {"rgb": [B, R, 3],
        "depth": [B, R], "segmentation": [B, R, S], "slot_rgb": [B, R, S, 3]}, the last three
        only if named in ``outputs`` (default: all)."""
        outputs = self.outputs if outputs is None else tuple(outputs)
        config, (B, S) = self.render_config, scene["slots"].shape[:2]
        samples = config["coarse_samples"] + config["fine_samples"] * (2 if "slot_rgb" in outputs else 1)
        step = max(1, config["max_points"] // (B * S * samples))
        pieces = [self._render(scene, camera_pos[:, i:i + step], rays[:, i:i + step], near, far, outputs)
                  for i in range(0, rays.shape[1], step)]
        return {key: torch.cat([piece[key] for piece in pieces], 1) for key in pieces[0]}

    def _samples(self, scene, camera_pos, rays, depths):
        """Decode at depths [B, R, N] (shared by the slots) or [B, R, S, N] (per slot) ->
        density [B, R, S, N], colour [B, R, S, N, 3], slots second to last."""
        shared = depths.dim() == 3
        d = depths[:, :, None] if shared else depths  # [B, R, 1 or S, N]
        points = camera_pos[:, :, None, None] + d[..., None] * rays[:, :, None, None]
        directions = rays[:, :, None, None].expand_as(points)
        # decoder layout: [B, S or 1, R * N, 3]
        flat = [x.permute(0, 2, 1, 3, 4).flatten(2, 3) for x in (points, directions)]
        if shared:
            flat = [x[:, 0] for x in flat]
        density, colour = self.decode(scene, *flat)
        B, S, R, N = density.shape[0], density.shape[1], depths.shape[1], depths.shape[-1]
        return density.view(B, S, R, N).transpose(1, 2), colour.view(B, S, R, N, 3).transpose(1, 2)

    def _render(self, scene, camera_pos, rays, near, far, outputs) -> dict:
        config = self.render_config
        B, R = rays.shape[:2]
        near, far = near[:, None].expand(B, R), far[:, None].expand(B, R)
        if config["min_z"] is not None:  # end at the floor where the ray reaches it in range
            floor = (config["min_z"] - camera_pos[..., 2]) / rays[..., 2]
            far = torch.where((floor > near) & (floor < far), floor, far)
        coarse = volume.coarse_depths(near, far, config["coarse_samples"], stratified=self.training)
        density_c, colour_c = self._samples(scene, camera_pos, rays, coarse)  # [B, R, S, N(, 3)]
        weights_c = volume.termination_weights(density_c.sum(2), coarse)
        fine = volume.fine_depths(weights_c, coarse, near, far, config["fine_samples"], stratified=self.training)
        density_f, colour_f = self._samples(scene, camera_pos, rays, fine)

        # the scene: slot mixture at the merged samples; slots go last to sort along the ray
        depths, density, colour = volume.merge(coarse, fine, (density_c.transpose(2, 3), density_f.transpose(2, 3)),
                                               (colour_c.transpose(2, 3), colour_f.transpose(2, 3)))
        total = density.sum(-1)  # [B, R, N]
        share = density / total[..., None]  # [B, R, N, S]
        weights = volume.termination_weights(total, depths)
        out = {"rgb": (weights[..., None] * (share[..., None] * colour).sum(-2)).sum(-2)}
        if "depth" in outputs:
            out["depth"] = volume.expected_depth(weights, depths)
        if "segmentation" in outputs:
            segmentation = (weights[..., None] * share).sum(-2) + 1e-10
            out["segmentation"] = segmentation / segmentation.sum(-1, keepdim=True)
        if "slot_rgb" in outputs:  # each slot alone, with its own fine samples
            S = density_c.shape[2]
            coarse_s = coarse[:, :, None].expand(-1, -1, S, -1)
            near_s, far_s = near[:, :, None].expand(-1, -1, S), far[:, :, None].expand(-1, -1, S)
            fine_s = volume.fine_depths(volume.termination_weights(density_c, coarse_s), coarse_s, near_s, far_s,
                                        config["fine_samples"], stratified=self.training)
            density_s, colour_s = self._samples(scene, camera_pos, rays, fine_s)
            depths_s, density_s, colour_s = volume.merge(coarse_s, fine_s, (density_c, density_s), (colour_c, colour_s))
            colour_s = (volume.termination_weights(density_s, depths_s)[..., None] * colour_s).sum(-2)
            opacity = volume.composite(density_s, depths_s, last=far_s - near_s).sum(-1)  # the far sample: all beyond
            out["slot_rgb"] = opacity[..., None] * colour_s
        return out

    # -------------------------------------------------------------------- training
    def forward(self, batch: dict, step: int = 0):
        """ObSuRF's depth objective on the target rays: -(colour ll + depth ll) + l1 * overlap,
        per scene averaged over its rays of known depth, then over scenes."""
        config = self.loss_config
        scene = self.encode(encoder_inputs(batch))
        origin, rays, depth, target = (batch[k] for k in ("target_camera_pos", "target_rays", "target_depth",
                                                          "target_pixels"))
        near, far = near_far(batch)
        far = far[:, None].expand_as(depth)
        known = depth > 0  # 0: unknown depth (NaN fails the test too)
        backdrop = depth >= far  # nothing before far (inf: sky): a backdrop at far, no noise
        depth = torch.where(backdrop, far, torch.where(known, depth, torch.zeros_like(depth)))

        noise = torch.rand_like(depth) * config["depth_noise"] * ~backdrop
        surface = origin + (depth + noise)[..., None] * rays
        # empty point: with p = 1/2 in [cutoff, 1] x depth (in front of the surface), else in
        # [0, cutoff] x depth; the weight is the length of its range divided by p
        cutoff = config["importance_cutoff"]
        near_surface = torch.rand_like(depth) < 0.5
        u = torch.rand_like(depth)
        fraction = torch.where(near_surface, cutoff + (1 - cutoff) * u, cutoff * u)
        weight = 2 * depth * torch.where(near_surface, 1 - cutoff, cutoff)
        empty = origin + (fraction * depth)[..., None] * rays

        density_s, colour_s = self.decode(scene, surface, rays)  # [B, S, R], [B, S, R, 3]
        density_e, _ = self.decode(scene, empty)
        total = density_s.sum(1)
        colour = (density_s[..., None] * colour_s).sum(1) / total[..., None]

        std = config["color_std"]
        value_ll = (-0.5 * ((target - colour) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)).sum(-1)
        depth_ll = torch.log(total) - density_e.sum(1) * weight
        overlap = total - density_s.max(1).values
        count = known.sum(1).clamp_min(1)

        def mean(x):  # [B, R] -> [B]: over each scene's rays of known depth
            return torch.where(known, x, torch.zeros_like(x)).sum(1) / count

        l1 = config["l1"] * _ramp(step, config["anneal_start"], config["anneal_until"])
        loss = (-(mean(value_ll) + config["depth_weight"] * mean(depth_ll)) + l1 * mean(overlap)).mean()
        logs = {"mse": mean(((colour - target) ** 2).mean(-1)).mean().detach(),
                "value_ll": mean(value_ll).mean().detach(), "depth_ll": mean(depth_ll).mean().detach(),
                "overlap": mean(overlap).mean().detach(),
                "prediction": {"segmentation": (density_s / total[:, None]).transpose(1, 2).detach()}}
        return loss, logs

    # -------------------------------------------------------------------- reference weights
    #: (reference key pattern, our key) for the keys of the reference's Obsurf module.
    REFERENCE_RULES = [
        (r"encoder\.resnet\.(.*)", r"encoder.cnn.\1"),
        (r"encoder\.norm\.(.*)", r"encoder.pixel_mlp.0.\1"),
        (r"encoder\.fc1\.(.*)", r"encoder.pixel_mlp.1.\1"),
        (r"encoder\.fc2\.(.*)", r"encoder.pixel_mlp.3.\1"),
        (r"encoder\.slot_att\.self_att\.(.*)", r"encoder.slot_attention.self_attention.\1"),
        (r"encoder\.slot_att\.norm_pre_ff\.(.*)", r"encoder.slot_attention.norm_pre_mlp.\1"),
        (r"encoder\.slot_att\.(.*)", r"encoder.slot_attention.\1"),
        (r"decoder\.net\.net\.cond_layers\.(.*)", r"decoder.conditioning.\1"),
        (r"decoder\.net\.net\.main_layers\.(.*)", r"decoder.layers.\1"),
        (r"decoder\.net\.color_predictor\.(.*)", r"decoder.color_head.\1"),
    ]

    @classmethod
    def from_reference(cls, reference_state: dict) -> dict:
        """Our state dict from the reference's ``model.pt`` (CheckpointIO: {"model": Obsurf
        state dict, "optimizer", "it", "epoch_it", ...}) or from the Obsurf state dict itself.
        Multi-GPU runs saved the DataParallel-wrapped encoder and decoder (``.module.``)."""
        state = reference_state.get("model", reference_state)
        out, unknown = {}, []
        for key, value in state.items():
            key = key.replace(".module.", ".", 1)
            for pattern, replacement in cls.REFERENCE_RULES:
                if re.fullmatch(pattern, key):
                    name = re.sub(f"^{pattern}$", replacement, key)
                    out[name] = value.reshape(-1) if name.endswith(("slots_mu", "slots_sigma")) else value
                    break
            else:
                unknown.append(key)
        if unknown:
            raise BadInput(f"not an ObSuRF checkpoint: unknown keys {unknown[:3]}")
        return out


def _ramp(step: int, start, until) -> float:
    """0 before ``start``, linear up to 1 at ``until``, 1 after (1 throughout if ``until`` is None)."""
    if until is None:
        return 1.0
    return min(max((step - start) / (until - start), 0.0), 1.0)


def _settings(section: str, defaults: dict, given: dict | None) -> dict:
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise TypeError(f"unknown {section} settings {unknown} (known: {', '.join(defaults)})")
    return {**defaults, **(given or {})}
