"""Processes for DDP training: join a process group from torchrun's environment, or start
N workers ourselves through torch.distributed's elastic launcher (torchrun's engine).

``scene-train ... --gpus 4`` and ``torchrun --nproc_per_node 4 -m scenetools.cli.train ...``
behave the same; several nodes work through torchrun's rendezvous options.
"""
from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import pick as pick_device


@dataclass(frozen=True)
class Process:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_launcher() -> bool:
    """Whether torchrun (or our own launcher) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def setup(device: str | None = None) -> Process:
    """Join the process group described by the environment (a no-op for one process).

    NCCL on CUDA, gloo on CPU; each process uses the GPU of its local rank.
    """
    device = pick_device(device).type
    if not under_launcher() or int(os.environ["WORLD_SIZE"]) == 1:
        return Process(device=torch.device(device))
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Process(rank, local_rank, world, target)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(num_processes: int, function, *args):
    """Run ``function(*args)`` in ``num_processes`` local workers with the torchrun
    environment set, as torchrun does; returns {rank: result}. ``function`` must be picklable
    (a module-level function)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed")]:
        logging.getLogger(name).setLevel(logging.ERROR)  # its shutdown warnings are not ours to show
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=num_processes, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=1)
    try:
        return elastic_launch(config, function)(*args)
    except SignalException:  # SIGTERM/SIGINT to this launcher: the workers saved and stopped
        raise SystemExit(130) from None
    except ChildFailedError as error:
        codes = {failure.exitcode for failure in error.failures.values()}
        if codes <= {130, -2, -15}:  # the workers stopped on a signal, after saving
            raise SystemExit(130) from None
        raise


def all_reduce_any(flag: bool, process: Process) -> bool:
    """True on every process if ``flag`` is true on any (e.g. a stop request)."""
    if process.world_size == 1:
        return flag
    value = torch.tensor([float(flag)], device=process.device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def all_reduce_mean(value: float, process: Process) -> float:
    if process.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=process.device)
    dist.all_reduce(tensor)
    return tensor.item() / process.world_size


def broadcast_from_main(value, process: Process):
    """The main process's ``value`` (any picklable object) on every process."""
    if process.world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=process.device if process.device.type == "cuda" else None)
    return box[0]
