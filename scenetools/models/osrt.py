"""Object Scene Representation Transformer (Sajjadi et al., NeurIPS 2022), as stelzner/osrt
has it.

Encoder: the improved SRT encoder (3 conv blocks, 5 transformer layers) turns the input views
into a set of tokens; slot attention (1 iteration, learned initial slots) turns those into
S object slots of 1536 channels.

Slot Mixer decoder: each query ray cross-attends into the slots (2-layer "allocation
transformer"); a mixing block computes softmax weights over the slots from the result, which
are the predicted segmentation, mixes the slots with them, and a render MLP (4 x 1536,
LeakyReLU, sigmoid) maps [mixed slot, encoded ray] to a colour. The spatial broadcast
decoder (the paper's ablation) decodes every (ray, slot) pair into a colour and a logit and
mixes the colours by the softmax of the logits.

OSRT works in world coordinates (no canonical frame). Initialisation follows the reference
(``init: reference``): JAX-style truncated normal for attention and slot projections,
ViT-style xavier for transformer MLPs, xavier with zero bias for decoder MLPs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import SceneModel
from .layers import RayEncoder, linear, mlp, slot_attention_round
from .reference import map_state_dict
from .srt import RayPredictor, SRTEncoder


class SlotAttention(nn.Module):
    """Slot attention (Locatello et al. 2020): tokens [B, N, input_dim] -> slots [B, S, slot_dim].

    Attention is normalised over slots (they compete for tokens), then over tokens, and each
    slot is updated by a GRU and a residual MLP. Initial slots are learned parameters shared by
    all scenes; with ``randomize_initial_slots`` they are sampled around them with a learned
    per-channel standard deviation (the reference's version of this option crashes).
    """

    def __init__(self, num_slots: int, input_dim: int = 768, slot_dim: int = 1536, hidden_dim: int = 3072,
                 iters: int = 1, eps: float = 1e-8, randomize_initial_slots: bool = False, init_scheme="jax"):
        super().__init__()
        self.num_slots, self.iters, self.eps, self.scale = num_slots, iters, eps, slot_dim ** -0.5
        self.initial_slots = nn.Parameter(torch.randn(num_slots, slot_dim))
        self.randomize_initial_slots = randomize_initial_slots
        if randomize_initial_slots:
            self.initial_slots_log_std = nn.Parameter(torch.zeros(slot_dim))
        self.to_q = linear(slot_dim, slot_dim, bias=False, init_scheme=init_scheme)
        self.to_k = linear(input_dim, slot_dim, bias=False, init_scheme=init_scheme)
        self.to_v = linear(input_dim, slot_dim, bias=False, init_scheme=init_scheme)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.mlp = mlp([slot_dim, hidden_dim, slot_dim], init_scheme=init_scheme)
        self.norm_input = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.norm_pre_mlp = nn.LayerNorm(slot_dim)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        B = inputs.shape[0]
        inputs = self.norm_input(inputs)
        slots = self.initial_slots.expand(B, -1, -1)
        if self.randomize_initial_slots and self.training:
            slots = slots + torch.randn_like(slots) * self.initial_slots_log_std.exp()
        k, v = self.to_k(inputs), self.to_v(inputs)
        for _ in range(self.iters):
            slots = slot_attention_round(slots, self.to_q(self.norm_slots(slots)), k, v, self.gru, self.scale,
                                         self.eps)
            slots = slots + self.mlp(self.norm_pre_mlp(slots))
        return slots


class MixingBlock(nn.Module):
    """Softmax weights of each ray over the slots, and the slots mixed with them (no value
    projection): (rays [B, R, input_dim], slots [B, S, slot_dim]) -> ([B, R, slot_dim], [B, R, S])."""

    def __init__(self, input_dim: int = 180, slot_dim: int = 1536, att_dim: int = 1536, layer_norm: bool = False,
                 init_scheme: str = "xavier"):
        super().__init__()
        self.to_q = linear(input_dim, att_dim, bias=False, init_scheme=init_scheme)
        self.to_k = linear(slot_dim, att_dim, bias=False, init_scheme=init_scheme)
        self.norm_rays = nn.LayerNorm(input_dim) if layer_norm else nn.Identity()
        self.norm_mix = nn.LayerNorm(slot_dim) if layer_norm else nn.Identity()
        self.scale = att_dim ** -0.5

    def weights(self, x, slots):
        """The rays' softmax weights over the slots, [B, R, S]."""
        q, k = self.to_q(self.norm_rays(x)), self.to_k(slots)
        return (torch.einsum("brd,bsd->brs", q, k) * self.scale).softmax(dim=-1)

    def forward(self, x, slots):
        weights = self.weights(x, slots)
        return self.norm_mix(torch.einsum("brs,bsd->brd", weights, slots)), weights


class SlotMixerDecoder(nn.Module):
    """OSRT's decoder: -> {"rgb": [B, R, 3], "segmentation": [B, R, S] (the mixing weights)}."""

    def __init__(self, num_att_blocks: int = 2, pos_start_octave: int = -5, slot_dim: int = 1536, heads: int = 12,
                 hidden: int = 1536, layer_norm: bool = False, init_scheme: str = "jax"):
        super().__init__()
        self.ray_predictor = RayPredictor(num_att_blocks, pos_start_octave, slot_dim, heads, input_mlp=True,
                                          init_scheme=init_scheme)
        dim = self.ray_predictor.query_encoder.dim
        decoder_init = "xavier" if init_scheme == "jax" else init_scheme
        self.mixing_block = MixingBlock(dim, slot_dim, slot_dim, layer_norm, init_scheme=decoder_init)
        self.render_mlp = mlp([slot_dim + dim] + [hidden] * 4 + [3], "leaky_relu", init_scheme=decoder_init)

    def forward(self, slots, camera_pos, rays) -> dict:
        features, queries = self.ray_predictor(slots, camera_pos, rays)
        if isinstance(self.mixing_block.norm_mix, nn.Identity):
            weights = self.mixing_block.weights(features, slots)
            hidden = mixed_first_layer(self.render_mlp[0], weights, slots, queries)
            rgb = torch.sigmoid(self.render_mlp[1:](hidden))
        else:
            mixed, weights = self.mixing_block(features, slots)
            rgb = torch.sigmoid(self.render_mlp(torch.cat([mixed, queries], -1)))
        return {"rgb": rgb, "segmentation": weights}


def mixed_first_layer(layer: nn.Linear, weights, slots, queries):
    """``layer(cat([weights @ slots, queries], -1))`` without mixing the slots for each ray:
    weights [B, R, S], slots [B, S, D], queries [B, R, Q] -> [B, R, out].

    The layer is linear in the mixed slot, which is linear in the slots, so the slots are
    projected once per scene and the projections mixed: the product over D channels costs S
    rows per scene instead of R (OSRT's 6 slots against 8,192 rays, 1536 x 1536 each).
    """
    slot_weight, query_weight = layer.weight[:, :slots.shape[-1]], layer.weight[:, slots.shape[-1]:]
    return weights @ F.linear(slots, slot_weight) + F.linear(queries, query_weight, layer.bias)


class SpatialBroadcastDecoder(nn.Module):
    """The ablation: every (ray, slot) pair -> MLP -> (logit, colour); colours are mixed by the
    softmax of the logits over slots, which is the segmentation."""

    def __init__(self, pos_start_octave: int = -5, slot_dim: int = 1536, hidden: int = 1536, init_scheme="jax"):
        super().__init__()
        self.query_encoder = RayEncoder(pos_start_octave=pos_start_octave)
        self.render_mlp = mlp([slot_dim + self.query_encoder.dim] + [hidden] * 4 + [4], "leaky_relu",
                              init_scheme="xavier" if init_scheme == "jax" else init_scheme)

    def forward(self, slots, camera_pos, rays) -> dict:
        S, R = slots.shape[1], rays.shape[1]
        queries = self.query_encoder(camera_pos, rays)
        pairs = torch.cat([queries[:, :, None].expand(-1, -1, S, -1), slots[:, None].expand(-1, R, -1, -1)], -1)
        out = self.render_mlp(pairs)  # [B, R, S, 4]
        weights = out[..., 0].softmax(dim=-1)
        rgb = (torch.sigmoid(out[..., 1:]) * weights[..., None]).sum(2)
        return {"rgb": rgb, "segmentation": weights}


DECODERS = {"slot_mixer": SlotMixerDecoder, "spatial_broadcast": SpatialBroadcastDecoder}


class OSRT(SceneModel):
    """Trains on the default objective (RGB MSE); its decoder's mixing weights are the
    segmentation.

    Config (the ``model`` section)::

        encoder: {num_conv_blocks: 3, num_att_blocks: 5, pos_start_octave: -5, dim: 768, ...}
        slot_attention: {num_slots, slot_dim: 1536, hidden_dim: 3072, iters: 1,
                         randomize_initial_slots: false}
        decoder: {type: slot_mixer | spatial_broadcast, num_att_blocks: 2, pos_start_octave: -5}
        init: reference | torch      # torch: PyTorch's defaults everywhere
    """

    outputs = ("segmentation",)

    def __init__(self, encoder: dict, slot_attention: dict, decoder: dict, init: str = "reference"):
        super().__init__()
        scheme = {"reference": "jax", "torch": "torch"}[init]
        self.encoder = SRTEncoder(**{"num_conv_blocks": 3, "num_att_blocks": 5, **encoder, "improved": True},
                                  init_scheme=scheme)
        dim = encoder.get("dim", 768)
        self.slot_attention = SlotAttention(input_dim=dim, init_scheme=scheme, **slot_attention)
        decoder = dict(decoder)
        decoder_cls = DECODERS[decoder.pop("type", "slot_mixer")]
        self.decoder = decoder_cls(slot_dim=slot_attention.get("slot_dim", 1536), init_scheme=scheme, **decoder)

    def encode(self, inputs: dict) -> dict:
        """World-frame input views -> {"slots": [B, S, slot_dim]}."""
        tokens = self.encoder(inputs["input_images"], inputs["input_camera_pos"], inputs["input_rays"])
        return {"slots": self.slot_attention(tokens)}

    def render(self, scene: dict, camera_pos, rays, near=None, far=None, outputs=None) -> dict:
        """{"rgb": [B, R, 3], "segmentation": [B, R, S]} of world-frame rays [B, R, 3]."""
        return self.decoder(scene["slots"], camera_pos, rays)

    @classmethod
    def from_reference(cls, reference: dict) -> dict:
        """Our state dict from a stelzner/osrt ``model.pt``."""
        return map_state_dict(reference)
