"""Memory per training process: an estimate from the config, and the memory a device has.

The estimate has two parts:

* persistent state: float32 weights, gradients and Adam's two moments, 16 bytes per trainable
  parameter;
* activations: what autograd keeps for the backward pass, measured by running the training
  objective on one scene on the CPU (at fp32; bf16 autocast roughly halves it) and scaled by
  the scenes in a micro-batch.

Not counted: the CUDA context, allocator fragmentation, the batch itself where no op saves it,
DDP's gradient buckets and the transient peak inside an op, which the margin of
``--accumulate auto`` is for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

#: float32 weight + gradient + Adam's exp_avg + exp_avg_sq, per trainable parameter.
BYTES_PER_PARAMETER = 16
GIB = 2 ** 30


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def saved_tensor_bytes(function, exclude=()):
    """Run ``function()`` and count the bytes autograd saves for its backward pass.

    Each distinct storage counts once, whole (views of one tensor share it); storages of
    ``exclude`` (e.g. the parameters, counted elsewhere) count not at all. Returns
    (``function()``'s result, bytes).
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = function()
    return result, sum(seen.values())


def activation_bytes(model, batch: dict, step: int = 0) -> int:
    """Bytes autograd keeps for backward after the training objective ``model(batch, step)``
    on ``batch`` (in training mode, fp32, on the model's device), parameters excluded. Runs
    under its own RNG state, so that measuring changes no later draw."""
    model.train()
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        _, count = saved_tensor_bytes(lambda: model(batch, step), exclude=list(model.parameters()))
    return count


@dataclass
class Estimate:
    """Memory per training process in bytes: ``persistent`` + ``per_scene`` x ``scenes``.

    ``per_scene`` is None when no batch could be built (``missing`` says why)."""

    parameters: int  # trainable parameters
    scenes: int  # scenes per micro-batch per process
    per_scene: int | None  # activation bytes per scene
    missing: str = ""

    def accumulated(self, n: int) -> "Estimate":
        """The estimate with the micro-batch split into ``n`` accumulated ones."""
        return replace(self, scenes=self.scenes // n)

    @property
    def persistent(self) -> int:
        return BYTES_PER_PARAMETER * self.parameters

    @property
    def activations(self) -> int:
        return (self.per_scene or 0) * self.scenes

    @property
    def total(self) -> int:
        return self.persistent + self.activations

    def line(self) -> str:
        state = (f"{gib(self.persistent)} weights, gradients and Adam state "
                 f"({BYTES_PER_PARAMETER} B x {self.parameters:,} parameters)")
        if self.per_scene is None:
            return (f"memory per process (estimate): at least {gib(self.total)} = {state}; activations not "
                    f"measured: {self.missing}")
        return (f"memory per process (estimate): {gib(self.total)} = {state} + {gib(self.activations)} activations "
                f"({gib(self.per_scene, 2)} per scene x {self.scenes:,} scenes per micro-batch)")


def gib(count: int, digits: int | None = None) -> str:
    """``count`` bytes in GiB, to 0.1 GiB from 1 GiB on and to 0.01 GiB below."""
    return f"{count / GIB:.{digits if digits is not None else 1 if count >= GIB else 2}f} GiB"


def device_memory(device: torch.device) -> tuple:
    """(bytes, description) of the memory a process on ``device`` may use: free memory on a
    GPU; on the CPU, MemAvailable (else total RAM) shared by the local processes."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free on {device}"
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    share = f" / {local} local processes" if local > 1 else ""
    return _available_ram() // local, f"available RAM{share} on cpu"


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_accumulate(estimates: list, memory: int, margin: float = 0.1) -> tuple:
    """The smallest N dividing every stage's batch per process whose peak estimate over the
    stages fits in ``memory`` bytes with ``margin`` to spare. ``estimates``: one per stage, at
    accumulate 1 (``scenes`` = the batch per process). Returns (N, the peak estimate at N), or
    (None, the peak estimate at the largest N) when none fits."""
    def peak(n):
        return max((e.accumulated(n) for e in estimates), key=lambda e: e.total)

    smallest = min(e.scenes for e in estimates)
    divisors = [n for n in range(1, smallest + 1) if all(e.scenes % n == 0 for e in estimates)]
    for n in divisors:
        if peak(n).total * (1 + margin) <= memory:
            return n, peak(n)
    return None, peak(divisors[-1])
