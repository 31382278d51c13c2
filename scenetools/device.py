"""Where models run: the device, bf16 autocast where the device does it natively, and
batches moved onto it. Every command chooses its device here."""
from __future__ import annotations

import contextlib
import ctypes

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


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory this process frees for its next allocations, rather
    than hand it back to the kernel. Returns False where the C library is not glibc.

    Why: a training step on the CPU allocates and frees the same few hundred MB every time
    (autocast's bf16 copies of the weights, their gradients back in fp32, the activations).
    glibc maps large blocks straight from the kernel and unmaps them when freed, and trims
    the top of its heap, so each step faults the same pages in again: 11,000 faults (45 MB)
    in every step of SRT at the reference CLEVR3D size. Where brk cannot serve a block, glibc
    still falls back to mmap. (PyTorch's CPU tuning guide swaps in jemalloc or tcmalloc for
    the same reason.)
    """
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
