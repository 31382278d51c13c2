"""Scene Representation Transformer (Sajjadi et al., CVPR 2022) and its improved variant
(OSRT paper, appendix A.4), layer for layer as the reviewed reference stelzner/srt has them.

Encoder: each input image is concatenated with its per-pixel ray encoding (180 channels:
camera position from 2^-5 and ray direction, 15 octaves each), run through SRT conv blocks
(each halves the resolution) and a 1x1 projection to tokens; the tokens of all views form one
set that a pre-norm transformer turns into the scene representation.

Decoder ("light field"): each query ray, encoded the same way, cross-attends into the scene
tokens; an MLP maps the result to a colour. Rays are decoded independently.

Canonical frame: with ``canonical_frame`` (SRT, not OSRT) all positions and directions are
expressed in the first input camera's frame (OpenCV axes) before encoding and decoding. It
equals the reference's frame whenever that camera is level, which holds for every reference
dataset.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import SceneModel
from .reference import map_state_dict
from .layers import ConvBlock, RayEncoder, Transformer, conv2d, mlp

#: Largest patch grid the learned patch embedding covers (CLEVR 240x320 / 16).
PATCH_GRID = (15, 20)


class SRTEncoder(nn.Module):
    """Images, camera positions and rays of I input views -> scene tokens [B, I * P, dim].

    ``improved=False`` is the CVPR SRT encoder (4 conv blocks, learned patch and
    canonical/non-canonical camera embeddings, 10 transformer layers). ``improved=True`` is the
    OSRT-paper variant (3 conv blocks, no embeddings, 5 layers).
    """

    def __init__(self, num_conv_blocks: int = 4, num_att_blocks: int = 10, pos_start_octave: int = -5,
                 dim: int = 768, heads: int = 12, dim_head: int = 64, mlp_dim: int = 1536,
                 conv_channels: int = 96, improved: bool = False, init_scheme: str = "torch"):
        super().__init__()
        self.ray_encoder = RayEncoder(pos_start_octave=pos_start_octave)
        blocks, channels = [ConvBlock(self.ray_encoder.dim + 3, conv_channels, 2 * conv_channels)], 2 * conv_channels
        for _ in range(num_conv_blocks - 1):
            blocks.append(ConvBlock(channels, channels, 2 * channels))
            channels *= 2
        self.conv_blocks = nn.Sequential(*blocks)
        self.patch_projection = nn.Conv2d(channels, dim, kernel_size=1)
        self.improved = improved
        if not improved:
            self.patch_embedding = nn.Parameter(torch.randn(1, dim, *PATCH_GRID))
            self.canonical_camera_embedding = nn.Parameter(torch.randn(1, 1, dim))
            self.non_canonical_camera_embedding = nn.Parameter(torch.randn(1, 1, dim))
        self.transformer = Transformer(dim, num_att_blocks, heads, dim_head, mlp_dim, init_scheme=init_scheme)

    def forward(self, images, camera_pos, rays):
        """images [B, I, 3, H, W], camera_pos [B, I, 3], rays [B, I, H, W, 3] -> [B, I * P, dim]."""
        B, I = images.shape[:2]
        # conv input per pixel: [image, camera position encoding, ray encoding]; the position
        # encoding is the same at every pixel of a view, so it goes in as constants. The rays
        # are encoded channels-first: a vectorised sine takes its slow path for the whole
        # vector when one lane has a large argument, so each octave is kept contiguous (2.7x)
        ray_encoder = self.ray_encoder
        x = self.conv_blocks[0](images.flatten(0, 1), ray_encoder.pos_encoding(camera_pos.flatten(0, 1)),
                                ray_encoder.ray_encoding(rays.flatten(0, 1).permute(0, 3, 1, 2), dim=1))
        projection = self.patch_projection
        x = conv2d(self.conv_blocks[1:](x), projection.weight, projection.bias)  # [B * I, dim, h, w]
        if not self.improved:
            h, w = x.shape[-2:]
            x = x + self.patch_embedding[:, :, :h, :w]
        x = x.flatten(2).transpose(1, 2)  # [B * I, P, dim]
        if not self.improved:
            first = torch.zeros(B, I, 1, 1, dtype=x.dtype, device=x.device)
            first[:, 0] = 1
            x = x + (first * self.canonical_camera_embedding + (1 - first) * self.non_canonical_camera_embedding
                     ).flatten(0, 1)
        return self.transformer(x.unflatten(0, (B, I)).flatten(1, 2))


class RayPredictor(nn.Module):
    """Query rays cross-attend into scene tokens: (z [B, N, z_dim], camera_pos [B, R, 3],
    rays [B, R, 3]) -> (features [B, R, 180], encoded queries [B, R, 180])."""

    def __init__(self, num_att_blocks: int = 2, pos_start_octave: int = -5, z_dim: int = 768, heads: int = 12,
                 input_mlp: bool = False, init_scheme: str = "torch"):
        super().__init__()
        self.query_encoder = RayEncoder(pos_start_octave=pos_start_octave)
        dim = self.query_encoder.dim
        mlp_init = "xavier" if init_scheme == "jax" else init_scheme
        self.input_mlp = mlp([dim, 2 * dim, dim], init_scheme=mlp_init) if input_mlp else None
        self.transformer = Transformer(dim, num_att_blocks, heads, z_dim // heads, 2 * z_dim, context_dim=z_dim,
                                       init_scheme=init_scheme)

    def forward(self, z, camera_pos, rays):
        queries = self.query_encoder(camera_pos, rays)
        if self.input_mlp is not None:
            queries = self.input_mlp(queries)
        return self.transformer(queries, z), queries


class LightFieldDecoder(nn.Module):
    """SRT's decoder: 2 cross-attention layers, then 180 -> 128 -> 3 and a sigmoid."""

    def __init__(self, num_att_blocks: int = 2, pos_start_octave: int = -5, z_dim: int = 768, heads: int = 12,
                 hidden: int = 128):
        super().__init__()
        self.ray_predictor = RayPredictor(num_att_blocks, pos_start_octave, z_dim, heads)
        self.output_mlp = mlp([self.ray_predictor.query_encoder.dim, hidden, 3])

    def forward(self, z, camera_pos, rays) -> dict:
        features, _ = self.ray_predictor(z, camera_pos, rays)
        return {"rgb": torch.sigmoid(self.output_mlp(features))}


class ImprovedDecoder(nn.Module):
    """The OSRT paper's improved SRT decoder: input MLP on the query, 2 cross-attention layers,
    then a render MLP 180 -> 4 x ``hidden`` -> 3.

    stelzner/srt's version (``decoder: isrt``) uses ReLU and no output sigmoid; stelzner/osrt's
    (``decoder: srt``) LeakyReLU and a sigmoid: ``activation`` and ``sigmoid`` choose.
    """

    def __init__(self, num_att_blocks: int = 2, pos_start_octave: int = -5, z_dim: int = 768, heads: int = 12,
                 hidden: int = 1536, activation: str = "relu", sigmoid: bool = False, init_scheme: str = "torch"):
        super().__init__()
        self.ray_predictor = RayPredictor(num_att_blocks, pos_start_octave, z_dim, heads, input_mlp=True,
                                          init_scheme=init_scheme)
        dim = self.ray_predictor.query_encoder.dim
        self.render_mlp = mlp([dim] + [hidden] * 4 + [3], activation,
                              init_scheme="xavier" if init_scheme == "jax" else init_scheme)
        self.sigmoid = sigmoid

    def forward(self, z, camera_pos, rays) -> dict:
        features, _ = self.ray_predictor(z, camera_pos, rays)
        rgb = self.render_mlp(features)
        return {"rgb": torch.sigmoid(rgb) if self.sigmoid else rgb}


DECODERS = {"lightfield": LightFieldDecoder, "isrt": ImprovedDecoder}


class SRT(SceneModel):
    """Encoder + decoder, with the canonical frame handled here so callers stay in world space.
    Trains on the default objective (RGB MSE of rendered target rays).

    Config (the ``model`` section of a run config)::

        encoder: {num_conv_blocks, num_att_blocks, pos_start_octave, dim, heads, dim_head,
                  mlp_dim, conv_channels, improved}
        decoder: {type: lightfield | isrt, num_att_blocks, pos_start_octave, ...}
        canonical_frame: true
    """

    def __init__(self, encoder: dict, decoder: dict, canonical_frame: bool = True):
        super().__init__()
        self.encoder = SRTEncoder(**encoder)
        decoder = dict(decoder)
        decoder_cls = DECODERS[decoder.pop("type", "lightfield")]
        self.decoder = decoder_cls(z_dim=encoder.get("dim", 768), **decoder)
        self.canonical_frame = canonical_frame

    def encode(self, inputs: dict) -> dict:
        """Scene representation of the input views (world-frame cameras):
        {"tokens": [B, N, dim], "world_to_frame": [B, 4, 4] (identity without canonical frame)}."""
        rays, c2w = inputs["input_rays"], inputs["input_camera_to_world"]
        if self.canonical_frame:
            world_to_frame = rigid_inverse(c2w[:, 0])
        else:
            world_to_frame = torch.eye(4, dtype=rays.dtype, device=rays.device).expand(len(rays), 4, 4)
        pos, rays = to_frame(world_to_frame, inputs["input_camera_pos"], rays)
        return {"tokens": self.encoder(inputs["input_images"], pos, rays), "world_to_frame": world_to_frame}

    def render(self, scene: dict, camera_pos, rays, near=None, far=None, outputs=None) -> dict:
        """Colours of world-frame rays: camera_pos, rays [B, R, 3] -> {"rgb": [B, R, 3]}. A light
        field needs no near/far."""
        pos, rays = to_frame(scene["world_to_frame"], camera_pos, rays)
        return self.decoder(scene["tokens"], pos, rays)

    @classmethod
    def from_reference(cls, reference: dict) -> dict:
        """Our state dict from a stelzner/srt ``model.pt``."""
        return map_state_dict(reference)


def rigid_inverse(c2w: torch.Tensor) -> torch.Tensor:
    """[..., 4, 4] inverse of rigid transforms (R^T, -R^T t).

    Elementwise only, so autocast leaves it in the input's precision (see ``to_frame``)."""
    R, t = c2w[..., :3, :3], c2w[..., :3, 3:]
    inverse = torch.zeros_like(c2w)
    inverse[..., :3, :3] = R.transpose(-1, -2)
    inverse[..., :3, 3:] = -(R.transpose(-1, -2) * t.transpose(-1, -2)).sum(-1, keepdim=True)
    inverse[..., 3, 3] = 1
    return inverse


def to_frame(world_to_frame: torch.Tensor, camera_pos: torch.Tensor, rays: torch.Tensor):
    """Express positions [B, ..., 3] and directions [B, ..., 3] in another frame [B, 4, 4].

    Always float32, also under bf16 autocast: the ray encoding multiplies these by up to
    2^9 pi, so bf16 rounding would turn its high octaves into noise that the model then fits.
    """
    with torch.autocast(world_to_frame.device.type, enabled=False):
        R, t = world_to_frame[:, :3, :3].float(), world_to_frame[:, :3, 3].float()
        t = t.reshape(t.shape[:1] + (1,) * (camera_pos.dim() - 2) + (3,))
        pos = torch.einsum("bij,b...j->b...i", R, camera_pos.float()) + t
        return pos, torch.einsum("bij,b...j->b...i", R, rays.float())
