"""LPIPS (Zhang et al., CVPR 2018), the AlexNet v0.1 metric as the ``lpips`` package computes
it, built from two local weight files and without torchvision (whose PyPI wheels do not load
beside the pinned CPU torch). Nothing is downloaded.

* ``alexnet-owt-7be5be79.pth``: torchvision's ImageNet AlexNet; its ``features.*`` convolutions.
* ``alex.pth``: LPIPS v0.1's linear layers (``lin0.model.1.weight`` ... ``lin4``), shipped inside
  the ``lpips`` package as ``lpips/weights/v0.1/alex.pth`` (``pip install --no-deps lpips``
  puts it there without torchvision).

``scene-eval --lpips DIR`` reads both from DIR. Without it, they are looked for where torch and
the ``lpips`` package keep them (:func:`default_files`).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import read_dict
from .errors import BadInput

BACKBONE_FILE, LINEAR_FILE = "alexnet-owt-7be5be79.pth", "alex.pth"
#: The lpips package's input scaling, for images in [-1, 1].
SHIFT, SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
#: AlexNet's convolutions by their index in torchvision's ``features``: (in, out, kernel, stride,
#: padding). LPIPS compares the ReLU output of each; a 3x3, stride-2 max-pool precedes the
#: second and the third.
CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
         10: (256, 256, 3, 1, 1)}
POOLED = (3, 6)
#: The smallest image side AlexNet's two max-pools leave a pixel of (the lpips package fails below).
MIN_SIZE = 31


def unit_channels(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each pixel's feature vector [N, C, H, W] scaled to unit length over C (as lpips does)."""
    return features / (features.square().sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Distances [N] between images a and b [N, 3, H, W] in [-1, 1]; 0 for equal images."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleDict({str(i): nn.Conv2d(c_in, c_out, k, s, p)
                                    for i, (c_in, c_out, k, s, p) in CONVS.items()})
        self.lins = nn.ModuleList(nn.Conv2d(c_out, 1, 1, bias=False) for _, c_out, *_ in CONVS.values())
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])

    def features(self, x: torch.Tensor) -> list:
        x, out = (x - self.shift) / self.scale, []
        for index, conv in self.convs.items():
            if int(index) in POOLED:
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        distance = 0
        for fa, fb, lin in zip(self.features(a), self.features(b), self.lins):
            distance = distance + lin((unit_channels(fa) - unit_channels(fb)).square()).mean((2, 3))
        return distance[:, 0]


def default_files() -> tuple:
    """(AlexNet weights, LPIPS linear layers): where torch's hub cache and an installed ``lpips``
    package keep them, whether or not they exist; the second is None without the package."""
    backbone = Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILE
    spec = importlib.util.find_spec("lpips")  # finds the package without importing torchvision
    linear = Path(spec.origin).parent / "weights" / "v0.1" / LINEAR_FILE if spec and spec.origin else None
    return backbone, linear


def load(backbone_path, linear_path) -> LPIPS:
    """The metric with the weights of these two files; BadInput naming the file if one is
    missing, unreadable or of another network."""
    model = LPIPS()
    state = model.state_dict()
    for path, keys in ((backbone_path, {f"convs.{i}.{p}": f"features.{i}.{p}" for i in CONVS for p in ("weight", "bias")}),
                       (linear_path, {f"lins.{k}.weight": f"lin{k}.model.1.weight" for k in range(len(CONVS))})):
        saved = read_dict(path, "weight file")
        for ours, theirs in keys.items():
            if theirs not in saved:
                raise BadInput(f"not LPIPS's AlexNet weights: no {theirs}", path)
            if saved[theirs].shape != state[ours].shape:
                raise BadInput(f"{theirs} has shape {tuple(saved[theirs].shape)}, not {tuple(state[ours].shape)}",
                               path)
            state[ours] = saved[theirs]
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def from_folder(folder) -> LPIPS:
    """``scene-eval --lpips DIR``: both files from DIR."""
    return load(Path(folder) / BACKBONE_FILE, Path(folder) / LINEAR_FILE)


def find() -> tuple:
    """(the metric, None) from :func:`default_files`, or (None, why it is not available)."""
    backbone, linear = default_files()
    missing = [str(backbone)] if not backbone.is_file() else []
    if linear is None:
        missing.append(f"lpips package for {LINEAR_FILE}")
    elif not linear.is_file():
        missing.append(str(linear))
    if missing:
        return None, (f"LPIPS not scored: no {' and no '.join(missing)} (--lpips DIR reads {BACKBONE_FILE} "
                      f"and {LINEAR_FILE} from DIR)")
    try:
        return load(backbone, linear), None
    except BadInput as error:
        return None, f"LPIPS not scored: {error}"
