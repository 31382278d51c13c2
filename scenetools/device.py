"""Where models run: the device, bf16 autocast where the device does it natively, and
batches moved onto it. Every command chooses its device here."""
from __future__ import annotations

import contextlib

import torch

from .errors import BadInput
from .progress import note


def pick(name: str | None = None) -> torch.device:
    """``cuda`` when asked for or available, else ``cpu``; asking for CUDA without it is a
    BadInput (before anything is written)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(f"--device {name}: this machine has no CUDA device (use --device cpu)")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def autocast(device: torch.device, precision: str):
    """bf16 autocast where the device does bf16 matmuls natively; otherwise fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise BadInput(f"unknown precision {precision!r} (fp32 or bf16)")
    if not bf16_supported(device):
        note(f"bf16 is not supported natively on {device}; running in fp32")
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
