"""Layers shared by the models: ray encodings, pre-norm transformers, conv blocks (the SRT
family), hypernetworks and an LSTM ray marcher (SRN).

Shapes use B = batch, N = tokens or rays, D = channels. Attention goes through
``torch.nn.functional.scaled_dot_product_attention``, except on the CPU over short contexts
(see :func:`attend`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import init


class PositionalEncoding(nn.Module):
    """x [..., C] -> [..., 2 * C * octaves]: sin(2^k pi x) for k = start .. start + octaves - 1,
    all sines then all cosines, each block coordinate-major ([x: k0..kn, y: ..., z: ...])."""

    def __init__(self, octaves: int, start_octave: int = 0):
        super().__init__()
        multipliers = 2.0 ** torch.arange(start_octave, start_octave + octaves, dtype=torch.float64) * math.pi
        self.register_buffer("multipliers", multipliers.float(), persistent=False)

    def forward(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The coordinates along ``dim`` of x (e.g. 1 for images [N, 3, H, W]) become the
        encoding there."""
        dim = dim % x.dim()
        octaves = self.multipliers.view((-1,) + (1,) * (x.dim() - 1 - dim))
        # contiguous: the product takes the layout of x, and flattening a product laid out
        # like a permuted x would copy it, at 15 times the size of x
        scaled = (x.contiguous().unsqueeze(dim + 1) * octaves).flatten(dim, dim + 1)
        return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim)


class RayEncoder(nn.Module):
    """Encodes a ray by its camera position and unit direction: [pos encoding, dir encoding].

    With 15 octaves each (positions from 2^start_octave) a ray becomes 180 numbers.
    """

    def __init__(self, pos_octaves: int = 15, pos_start_octave: int = 0, ray_octaves: int = 15,
                 ray_start_octave: int = 0):
        super().__init__()
        self.pos_encoding = PositionalEncoding(pos_octaves, pos_start_octave)
        self.ray_encoding = PositionalEncoding(ray_octaves, ray_start_octave)
        self.dim = 6 * (pos_octaves + ray_octaves)

    def forward(self, camera_pos: torch.Tensor, rays: torch.Tensor) -> torch.Tensor:
        """camera_pos [..., 3], rays [..., 3] -> [..., dim]."""
        return torch.cat([self.pos_encoding(camera_pos), self.ray_encoding(rays)], -1)


def linear(in_dim: int, out_dim: int, bias: bool = True, init_scheme: str = "torch") -> nn.Linear:
    """A Linear layer with one of the initialisations the reference code uses.

    ``torch``: PyTorch's default. ``jax``: truncated normal, std sqrt(1 / fan_in), zero bias
    (OSRT's attention projections). ``vit``: xavier uniform, bias N(0, 1e-6) (OSRT's
    transformer MLPs). ``xavier``: xavier uniform, zero bias (OSRT's decoder MLPs).
    """
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    if init_scheme == "jax":
        std = math.sqrt(1.0 / in_dim)
        init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        if bias:
            init.zeros_(layer.bias)
    elif init_scheme == "vit":
        init.xavier_uniform_(layer.weight)
        if bias:
            init.normal_(layer.bias, std=1e-6)
    elif init_scheme == "xavier":
        init.xavier_uniform_(layer.weight)
        if bias:
            init.zeros_(layer.bias)
    elif init_scheme != "torch":
        raise ValueError(f"unknown init scheme {init_scheme!r}")
    return layer


#: When :func:`attend` multiplies the attention out on the CPU instead of calling SDPA, whose
#: flash kernel loses to two plain products on small problems, by far in bf16: in bf16 up to
#: 512 keys, in fp32 up to 40,000 query-key pairs per head. Forward and backward of 2 x 12
#: heads of 64, one thread, SDPA against products in ms on an AMD EPYC (avx512_bf16; an Intel
#: Xeon with AMX agreed within the bounds). bf16: self-attention over 80 tokens (SRT's CLEVR3D
#: set-latent) 4.9 / 0.8; 1,024 rays onto those 80 tokens 22.9 / 15.3; over 300 tokens (OSRT's)
#: 24.8 / 7.8; over 512, 58 / 35; over 1,024, 179 / 160. fp32: over 80 tokens 2.0 / 1.6; over
#: 200, 10.0 / 8.9; over 300, 23.7 / 30.0; 1,024 rays onto 80 tokens 27.2 / 32.5.
SHORT_CONTEXT_BF16 = 512
SMALL_SCORES_FP32 = 40_000


def multiplies_out(q: torch.Tensor, k: torch.Tensor) -> bool:
    """Whether :func:`attend` writes out the products for queries ``q`` and keys ``k``."""
    if q.device.type != "cpu":
        return False
    if q.dtype == torch.bfloat16:
        return k.shape[-2] <= SHORT_CONTEXT_BF16
    return q.dtype == torch.float32 and q.shape[-2] * k.shape[-2] <= SMALL_SCORES_FP32


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d) v for q [B, H, N, d], k and v [B, H, M, d] -> [B, H, N, d]."""
    if not multiplies_out(q, k):
        return F.scaled_dot_product_attention(q, k, v)
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.matmul(scores.softmax(-1), v)


class Attention(nn.Module):
    """Multi-head self-attention (``context_dim=None``) or cross-attention to a context."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int | None = None, init_scheme="torch"):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.cross = heads, context_dim is not None
        if self.cross:
            self.to_q = linear(dim, inner, bias=False, init_scheme=init_scheme)
            self.to_kv = linear(context_dim, 2 * inner, bias=False, init_scheme=init_scheme)
        else:
            self.to_qkv = linear(dim, 3 * inner, bias=False, init_scheme=init_scheme)
        self.to_out = linear(inner, dim, init_scheme=init_scheme)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, N, dim], context [B, M, context_dim] -> [B, N, dim]."""
        if self.cross:
            q, (k, v) = self.to_q(x), self.to_kv(context).chunk(2, -1)
        else:
            q, k, v = self.to_qkv(x).chunk(3, -1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = attend(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(-2))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x) [, context]), then x + mlp(norm(x)). The context of
    cross-attention is not normalised (as in the reference)."""

    def __init__(self, dim, heads, dim_head, mlp_dim, context_dim=None, init_scheme="torch"):
        super().__init__()
        mlp_init = "vit" if init_scheme == "jax" else init_scheme
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = Attention(dim, heads, dim_head, context_dim, init_scheme)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(linear(dim, mlp_dim, init_scheme=mlp_init), nn.GELU(),
                                 linear(mlp_dim, dim, init_scheme=mlp_init))

    def forward(self, x, context=None):
        x = x + self.attention(self.attention_norm(x), context)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """A stack of pre-norm blocks (no final norm). Self-attention, or cross-attention from
    x to a context of ``context_dim`` channels."""

    def __init__(self, dim, depth, heads, dim_head, mlp_dim, context_dim=None, init_scheme="torch"):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(dim, heads, dim_head, mlp_dim, context_dim, init_scheme) for _ in range(depth))

    def forward(self, x, context=None):
        for layer in self.layers:
            x = layer(x, context)
        return x


#: Up to how many output pixels (over the whole batch) :func:`conv2d` computes a bf16 conv
#: on the CPU as one matrix product over the unfolded patches, where oneDNN's kernels lose.
#: Forward and backward in ms, one thread of an AMD EPYC (avx512_bf16), oneDNN against the
#: product: SRT's last conv (768 -> 1536, stride 2, 15 x 20 -> 8 x 10) at batch 2 (160
#: pixels) 76 / 34, batch 4 (320) 130 / 77, batch 8 (640) 189 / 139; 768 -> 768 at 15 x 20,
#: batch 1 (300) 31 / 30; 384 -> 768, stride 2, 30 x 40, batch 2 (600) 29 / 32. In fp32
#: oneDNN wins from about 100 pixels on.
SMALL_GRID_BF16 = 512


def computes_in_bf16(x: torch.Tensor) -> bool:
    """Whether a conv or linear layer on ``x`` runs in bf16 (x in bf16, or under bf16 autocast)."""
    device = x.device.type
    return x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.bfloat16)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias=None, stride=1, padding=0) -> torch.Tensor:
    """``F.conv2d`` (no dilation or groups): x [B, C, H, W], weight [O, C, kh, kw] ->
    [B, O, H', W']. On the CPU in bf16 with at most ``SMALL_GRID_BF16`` output pixels it is
    im2col and one product (the result then has channels-last strides)."""
    stride, padding = nn.modules.utils._pair(stride), nn.modules.utils._pair(padding)
    kernel = weight.shape[2:]
    out_h, out_w = ((size + 2 * pad - k) // s + 1
                    for size, pad, k, s in zip(x.shape[2:], padding, kernel, stride))
    if x.device.type != "cpu" or len(x) * out_h * out_w > SMALL_GRID_BF16 or not computes_in_bf16(x):
        return F.conv2d(x, weight, bias, stride, padding)
    patches = F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)  # [B, H' W', C kh kw]
    return F.linear(patches, weight.flatten(1), bias).transpose(1, 2).unflatten(2, (out_h, out_w))


def conv2d_of_parts(conv: nn.Conv2d, parts) -> torch.Tensor:
    """``conv`` of its input given in parts along the channels, without concatenating them.

    A part [B, C, H, W] varies over the pixels; a part [B, C] is the same at every pixel of an
    image (e.g. the encoding of its camera position). ``conv``: zero padding, no dilation or
    groups, as many input channels as the parts have. -> [B, out, H', W'], equal to ``conv``
    of the concatenation up to rounding.

    Why: constant channels often outnumber the varying ones (SRT: 90 of 183, ObSuRF: 99 of
    105), and the conv would spend most of its work on them. At an output pixel, a constant
    channel contributes the kernel taps that fall inside the image (the padding is zero) times
    its value, so its part is the per-image kernel ``taps = W_c @ constant`` [B, out, kh, kw]
    summed over the taps in range: a sum that separates into rows and columns. Each varying
    part takes its own slice of the kernel: a concatenated copy of the slices would be kept
    by autograd for the backward pass.
    """
    weight, first, varying, taps = conv.weight, 0, None, None
    for part in parts:
        kernel = weight[:, first:first + part.shape[1]]
        first += part.shape[1]
        if part.dim() == 2:
            part_taps = torch.einsum("ocij,bc->boij", kernel, part.to(kernel.dtype))
            taps = part_taps if taps is None else taps + part_taps
        else:
            out = conv2d(part, kernel, None, conv.stride, conv.padding)
            # in place: both are fresh conv outputs, which no backward pass needs
            varying = out if varying is None else varying.add_(out)
    if varying is None:
        raise ValueError("conv2d_of_parts needs at least one part [B, C, H, W]")
    if first != weight.shape[1]:
        raise ValueError(f"parts of {first} channels for a conv of {weight.shape[1]} input channels")
    if conv.bias is not None:
        varying = varying.add_(conv.bias[:, None, None].to(varying.dtype))
    if taps is None:
        return varying
    height, width = next(p.shape[2:] for p in parts if p.dim() == 4)

    def in_range(size, out_size, kernel, stride, padding):  # [kernel, out_size]: tap i reaches the image
        start = torch.arange(out_size, device=varying.device)[None] * stride - padding
        position = start + torch.arange(kernel, device=varying.device)[:, None]
        return ((position >= 0) & (position < size)).to(varying.dtype)

    kh, kw = conv.kernel_size
    rows = in_range(height, varying.shape[2], kh, conv.stride[0], conv.padding[0])
    cols = in_range(width, varying.shape[3], kw, conv.stride[1], conv.padding[1])
    # two products, not one einsum: the einsum's result comes out transposed ([B, O, x, y]
    # in memory), and adding it in place took ten times as long as this
    return varying.add_(torch.matmul(rows.t(), torch.matmul(taps.to(varying.dtype), cols)))


class ConvBlock(nn.Module):
    """SRT's conv block: 3x3 conv (stride 1) -> ReLU -> 3x3 conv (stride 2) -> ReLU, no bias.
    Halves the resolution (rounding up)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, hidden_channels, 3, stride=1, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden_channels, out_channels, 3, stride=2, padding=1, bias=False)

    def forward(self, *parts):
        """The input [B, C, H, W], or its channels in parts (see :func:`conv2d_of_parts`)."""
        # in place: the convs keep their inputs for the backward pass, not their outputs
        x = F.relu(conv2d_of_parts(self.conv1, parts), inplace=True)
        return F.relu(conv2d(x, self.conv2.weight, None, self.conv2.stride, self.conv2.padding), inplace=True)


def slot_attention_round(slots, q, k, v, gru: nn.GRUCell, scale: float, eps: float) -> torch.Tensor:
    """One round of slot attention (Locatello et al. 2020): slots [B, S, D] with their queries
    q [B, S, D] compete for tokens (keys k, values v [B, N, D]): attention is normalised over
    slots, then each slot takes the weighted mean of the values and a GRU updates it."""
    attention = (torch.einsum("bsd,bnd->bsn", q, k) * scale).softmax(dim=1) + eps
    attention = attention / attention.sum(dim=-1, keepdim=True)  # weighted mean over tokens
    updates = torch.einsum("bsn,bnd->bsd", attention, v)
    return gru(updates.flatten(0, 1), slots.flatten(0, 1)).unflatten(0, slots.shape[:2])


def mlp(dims: list, activation: str = "relu", init_scheme: str = "torch") -> nn.Sequential:
    """Linear layers through ``dims`` with ``activation`` between them (none after the last)."""
    act = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU}[activation]
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers.append(act())
        layers.append(linear(a, b, init_scheme=init_scheme))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- hypernetworks, ray marching

def fc_block(in_dim: int, hidden: int, num_layers: int, out_dim: int) -> nn.Sequential:
    """``num_layers`` x (Linear -> LayerNorm (affine) -> ReLU), the first from ``in_dim``, then a
    Linear to ``out_dim``. Linear weights are kaiming-normal (fan_in, ReLU), biases PyTorch's
    default: SRN's FCBlock with ``outermost_linear``. Flat: layer k is at 3k, 3k+1, 3k+2. The
    ReLU works in place on the LayerNorm's output (as the reference's FCLayer), which the
    LayerNorm's backward does not keep: one activation fewer to allocate per layer."""
    layers, width = [], in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    for layer in layers:
        if isinstance(layer, nn.Linear):
            init.kaiming_normal_(layer.weight, a=0.0, nonlinearity="relu", mode="fan_in")
    return nn.Sequential(*layers)


def batch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A different linear layer per batch element: x [B, N, I], weight [B, O, I], bias [B, O]
    -> [B, N, O]."""
    return torch.baddbmm(bias[:, None], x, weight.transpose(1, 2))


class HyperLinear(nn.Module):
    """Predicts the weights of a linear layer ``in_dim -> out_dim`` from a code [B, C]: an
    fc_block ``C -> hidden (x hidden_layers + 1) -> in_dim * out_dim + out_dim`` whose last
    layer starts at a tenth of its kaiming init, so the predicted layers start small. The
    output is read as the weight matrix (row-major [out, in]) and then the bias."""

    def __init__(self, code_dim: int, hidden: int, hidden_layers: int, in_dim: int, out_dim: int):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.params = fc_block(code_dim, hidden, hidden_layers + 1, in_dim * out_dim + out_dim)
        with torch.no_grad():
            self.params[-1].weight.mul_(0.1)

    def forward(self, code: torch.Tensor) -> tuple:
        """code [B, C] -> (weight [B, out, in], bias [B, out])."""
        flat = self.params(code)
        split = self.in_dim * self.out_dim
        return flat[:, :split].reshape(-1, self.out_dim, self.in_dim), flat[:, split:]


class HyperMLP(nn.Module):
    """A hypernetwork predicting an MLP ``in_dim -> hidden (x layers - 1) -> out_dim`` whose every
    layer (the last too) is a predicted linear layer, LayerNorm without affine, ReLU (SRN's
    HyperFC). ``forward(code)`` returns the predicted layers; :meth:`apply` evaluates them."""

    def __init__(self, code_dim: int, hyper_hidden: int, hyper_hidden_layers: int, in_dim: int, hidden: int,
                 out_dim: int, layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(HyperLinear(code_dim, hyper_hidden, hyper_hidden_layers, a, b)
                                    for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, code: torch.Tensor) -> list:
        """code [B, C] -> [(weight [B, O, I], bias [B, O]) per layer]."""
        return [layer(code) for layer in self.layers]

    @staticmethod
    def apply(params: list, x: torch.Tensor) -> torch.Tensor:
        """Evaluate predicted layers at x [B, N, in] -> [B, N, out]. The ReLU works in place
        on the LayerNorm's output (see :func:`fc_block`)."""
        for weight, bias in params:
            x = F.relu(F.layer_norm(batch_linear(x, weight, bias), (weight.shape[1],)), inplace=True)
        return x


def _clamp_grad(limit: float):
    return lambda grad: grad.clamp(-limit, limit)


class LSTMRayMarcher(nn.Module):
    """SRN's differentiable ray marcher: from a start distance along each ray, ``steps`` times
    read the scene function at the current point, update an LSTM cell with it, and step along
    the ray by the length a linear layer reads from the LSTM's hidden state. The gradient
    through each hidden state is clamped to +-``grad_clamp`` elementwise.

    Init as the reference leaves it: PyTorch's LSTMCell default, except that the forget-gate
    slice of both biases is 1 (the reference's recurrent-weight init does not match an
    LSTMCell and leaves its weights alone); the step layer is PyTorch's default Linear.
    """

    def __init__(self, feature_dim: int, hidden: int = 16, steps: int = 10, grad_clamp: float = 10.0):
        super().__init__()
        self.steps, self.grad_clamp = steps, grad_clamp
        self.lstm = nn.LSTMCell(feature_dim, hidden)
        with torch.no_grad():
            for bias in (self.lstm.bias_ih, self.lstm.bias_hh):
                bias[hidden:2 * hidden] = 1.0
        self.out_layer = nn.Linear(hidden, 1)

    def forward(self, phi, origins: torch.Tensor, directions: torch.Tensor, start: torch.Tensor) -> tuple:
        """March ``phi`` (points [B, N, 3] -> features [B, N, F]) along rays from ``origins``
        [B, N, 3] in unit ``directions`` [B, N, 3], starting ``start`` [B, N] along them.
        Returns (final points [B, N, 3], their distance along the ray [B, N])."""
        B, N, _ = origins.shape
        distance, state = start, None
        for _ in range(self.steps):
            points = origins + distance[..., None] * directions
            features = phi(points)
            state = self.lstm(features.reshape(B * N, -1), state)
            if state[0].requires_grad:
                state[0].register_hook(_clamp_grad(self.grad_clamp))
            distance = distance + self.out_layer(state[0]).reshape(B, N)
        return origins + distance[..., None] * directions, distance


# ----------------------------------------------------------------------------- U-Net (semantic SRN)

def conv_same(in_channels: int, out_channels: int, kernel: int, bias: bool) -> nn.Sequential:
    """A stride-1 convolution keeping the image size, with reflection padding (odd kernels)."""
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(in_channels, out_channels, kernel, bias=bias))


def _normed(layers: list, channels: int, norm: bool, activation: nn.Module) -> list:
    return layers + ([nn.BatchNorm2d(channels)] if norm else []) + [activation]


def down_block(in_channels: int, out_channels: int, norm: bool) -> nn.Sequential:
    """3x3 conv, then a 4x4 stride-2 conv halving the image; each + BatchNorm + LeakyReLU(0.2)."""
    leaky = lambda: nn.LeakyReLU(0.2, inplace=True)  # noqa: E731
    return nn.Sequential(*_normed([conv_same(in_channels, in_channels, 3, not norm)], in_channels, norm, leaky()),
                         *_normed([nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 4, 2, bias=not norm)],
                                  out_channels, norm, leaky()))


def up_block(in_channels: int, out_channels: int, norm: bool) -> nn.Sequential:
    """A 4x4 stride-2 transposed conv doubling the image, then a 3x3 conv; each + BatchNorm + ReLU."""
    return nn.Sequential(
        *_normed([nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=not norm)], out_channels, norm,
                 nn.ReLU(inplace=True)),
        *_normed([conv_same(out_channels, out_channels, 3, not norm)], out_channels, norm, nn.ReLU(inplace=True)))


class UNetLevel(nn.Module):
    """One level of the U-Net: down, the inner levels, up; its output is its input and the
    upsampled result side by side (2 x ``outer`` channels)."""

    def __init__(self, outer: int, inner: int, norm: bool, inner_level: nn.Module | None = None):
        super().__init__()
        self.down, self.inner = down_block(outer, inner, norm), inner_level or nn.Identity()
        self.up = up_block(inner * (2 if inner_level is not None else 1), outer, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.up(self.inner(self.down(x)))], 1)


class UNet(nn.Module):
    """pytorch_prototyping's 2D U-Net (transposed-conv upsampling, no dropout, linear output):
    [N, in, H, W] -> [N, out, H, W]. ``num_down`` levels (H and W divisible by 2^num_down),
    channels ``nf0`` doubling per level up to ``max_channels``; BatchNorm everywhere but in
    the innermost level (the reference's choice)."""

    def __init__(self, in_channels: int, out_channels: int, nf0: int = 64, num_down: int = 4,
                 max_channels: int = 128):
        super().__init__()
        width = lambda level: min(2 ** level * nf0, max_channels)  # noqa: E731
        self.in_layer = nn.Sequential(conv_same(in_channels, nf0, 3, False), nn.BatchNorm2d(nf0),
                                      nn.LeakyReLU(0.2, inplace=True))
        levels = UNetLevel(width(num_down - 1), width(num_down - 1), norm=False)
        for level in reversed(range(num_down - 1)):
            levels = UNetLevel(width(level), width(level + 1), norm=True, inner_level=levels)
        self.levels = levels
        self.out_layer = conv_same(2 * nf0, out_channels, 3, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(self.levels(self.in_layer(x)))
