"""Training: one loop for every model, on one CPU/GPU or many through DDP.

The run folder (``formats/run-folder.md``) holds ``config.yaml``, ``checkpoints/latest.pt``
and ``step-N.pt``, ``metrics.jsonl``, TensorBoard events and ``renders/step-N.png``. Running
the same command again continues from ``latest.pt``: weights, optimizer, step (and with it
the learning rate and the data position) and RNG. SIGINT and SIGTERM save a checkpoint and
stop.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from . import config as configs
from . import distributed
from .data import PROTOCOLS, SceneDataset, ShardedSampler, ViewSelection
from .errors import BadInput
from .interrupts import StopRequest, ignore_stop_signals
from .metrics import segmentation_scores
from .models import build_model, count_parameters
from .progress import note, progress
from .render import orbit_grid
from .scenefile import SceneFile


@dataclass
class Options:
    """How to run, as opposed to what to train (the config)."""

    precision: str = "fp32"  # fp32 | bf16 (autocast, where the device supports it)
    compile: bool = False
    wandb: bool = False
    dry_run: bool = False
    device: str | None = None  # default: cuda if available, else cpu


# ----------------------------------------------------------------------------- pieces

def view_selection(data_config: dict) -> ViewSelection:
    """The config's protocol, with num_inputs/inputs/targets overriding it."""
    protocol = data_config.get("protocol", "msn")
    if protocol not in PROTOCOLS:
        raise BadInput(f"unknown data protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    base = PROTOCOLS[protocol]
    return ViewSelection(data_config.get("num_inputs", base.num_inputs), data_config.get("inputs", base.inputs),
                         data_config.get("targets", base.targets))


def make_dataset(scenes: SceneFile, split: str, data_config: dict, seed: int, num_rays="config") -> SceneDataset:
    try:
        return SceneDataset(scenes, split, view_selection(data_config),
                            data_config["num_rays"] if num_rays == "config" else num_rays, seed=seed,
                            input_stride=data_config.get("input_stride", 1))
    except ValueError as error:
        raise BadInput(str(error)) from None


def learning_rate(step: int, training: dict) -> float:
    """Linear warmup to ``lr`` over ``lr_warmup`` steps, then ×``lr_decay_rate`` every
    ``lr_decay_steps`` (exponentially), as the reference LrScheduler."""
    peak, warmup = training["lr"], training["lr_warmup"]
    if step < warmup:
        return peak * step / warmup
    return peak * training["lr_decay_rate"] ** ((step - warmup) / training["lr_decay_steps"])


def make_optimizer(model, lr: float, device: torch.device):
    """Adam (default betas/eps, as the reference), fused into one kernel where torch can."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused not available for this device/build
        return torch.optim.Adam(model.parameters(), lr=lr)


def autocast(device: torch.device, precision: str):
    """bf16 autocast where the device does bf16 matmuls natively; otherwise fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise BadInput(f"unknown precision {precision!r} (fp32 or bf16)")
    if not bf16_supported(device):
        note(f"bf16 is not supported natively on {device}; training in fp32")
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def mse_per_scene(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] mean squared error over each scene's rays and channels."""
    return ((pred.float() - target) ** 2).mean(dim=(1, 2))


def psnr(mse) -> float:
    return float(-10 * math.log10(max(float(mse), 1e-10)))


# ----------------------------------------------------------------------------- run folder

class Run:
    """Paths of a run folder, and its logs (written by the main process only)."""

    def __init__(self, folder, process: distributed.Process, use_wandb: bool = False, config=None):
        self.folder = Path(folder)
        self.checkpoints = self.folder / "checkpoints"
        self.latest = self.checkpoints / "latest.pt"
        self.renders = self.folder / "renders"
        self.main = process.is_main
        self.tensorboard = self.wandb = None
        if self.main:
            for path in (self.checkpoints, self.renders):
                path.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # tensorboard imports tensorflow when present
            os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(self.folder / "tensorboard"))
            if use_wandb:
                self.wandb = _start_wandb(self.folder, config)

    def log(self, step: int, split: str, values: dict) -> None:
        if not self.main:
            return
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "split": split, **values}) + "\n")
        for key, value in values.items():
            self.tensorboard.add_scalar(f"{split}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{split}/{k}": v for k, v in values.items()}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(folder: Path, config: dict):
    try:
        import wandb
    except ImportError:
        raise BadInput("--wandb needs the wandb package (pip install wandb)") from None
    return wandb.init(project="scenetools", name=str(folder), dir=str(folder), config=config, resume="allow",
                      id=folder.resolve().as_posix().replace("/", "_")[-64:])


def with_run_section(config: dict, model_name: str, data_path: Path, run_dir: Path) -> dict:
    """The config plus what it trains on: the model name and the data path, relative to the
    run folder so that the folder (with its data) can move."""
    relative = os.path.relpath(Path(data_path).resolve(), Path(run_dir).resolve())
    return configs.merge(config, {"run": {"model": model_name, "data": relative}})


def prepare_run_folder(run_dir: Path, config: dict) -> None:
    """Write config.yaml, or check that an existing run was started with the same model and
    data settings."""
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path = run_dir / "config.yaml"
    if saved_path.exists():
        saved = configs.load_yaml(saved_path)
        for section in ("run", "model", "data"):
            if saved.get(section) != config.get(section):
                raise BadInput(f"holds a run with another {section} config; use another --out "
                               f"(or delete the folder)", run_dir)
    configs.save(config, saved_path)


# ----------------------------------------------------------------------------- the loop

@dataclass
class Result:
    step: int
    metrics: dict  # the last logged training values
    model: torch.nn.Module  # this process's model (DDP unwrapped)


def train(model_name: str, data_path, config: dict, run_dir, options: Options) -> Result:
    """Train ``model_name`` on ``data_path`` in ``run_dir``.

    Runs as one process, or as one of several when launched by torchrun or ``--gpus``.
    """
    process = distributed.setup(options.device)
    training, data_config = config["training"], config["data"]
    torch.manual_seed(training["seed"] + process.rank)
    run_dir, data_path = Path(run_dir), Path(data_path)
    config = with_run_section(config, model_name, data_path, run_dir)
    if process.is_main and not options.dry_run:
        prepare_run_folder(run_dir, config)
    if process.world_size > 1:
        torch.distributed.barrier()
    scenes = SceneFile(data_path)
    train_set = make_dataset(scenes, "train", data_config, training["seed"])
    per_process = training["batch_size"] // process.world_size
    if per_process < 1 or training["batch_size"] % process.world_size:
        raise BadInput(f"batch_size {training['batch_size']} does not split over {process.world_size} processes")
    sampler = ShardedSampler(len(train_set), process.rank, process.world_size, seed=training["seed"],
                             batch_size=per_process, infinite=True)
    if sampler.batches_per_epoch == 0:
        raise BadInput(f"the train split has {len(train_set)} items, fewer than a batch of {per_process}", data_path)

    model = build_model(model_name, config["model"]).to(process.device)
    optimizer = make_optimizer(model, learning_rate(0, training), process.device)
    step = 0
    if run_dir.joinpath("checkpoints", "latest.pt").exists() and not options.dry_run:
        step = resume(run_dir / "checkpoints" / "latest.pt", model_name, model, optimizer)
        if process.is_main:
            note(f"resuming {run_dir} from step {step}")
    epoch, position = divmod(step, sampler.batches_per_epoch)
    sampler.set_epoch(epoch, start=position * per_process)
    workers = training["num_workers"]
    loader = DataLoader(train_set, batch_size=per_process, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=process.device.type == "cuda",
                        prefetch_factor=4 if workers else None, worker_init_fn=ignore_stop_signals)
    if options.dry_run:
        dry_run(model_name, model, train_set, loader, config, process)
        return Result(step, {}, model)

    net = model
    if options.compile:
        net = torch.compile(net)
    if process.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[process.local_rank] if process.device.type == "cuda" else None)
    run = Run(run_dir, process, options.wandb, config)
    val_set = _validation_set(scenes, data_config, training)
    stop = StopRequest()
    precision = autocast(process.device, options.precision)
    max_steps = training["max_steps"]
    state = dict(model_name=model_name, config=config, data=config["run"]["data"])
    bar = progress(total=max_steps, desc="training", unit="steps", initial=step) if process.is_main else None
    last = {}
    window_start, window_rays = time.perf_counter(), 0
    batches = iter(loader)
    try:
        while step < max_steps:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, training)
            batch = to_device(next(batches), process.device)
            with precision:
                prediction = net(batch)
            loss = mse_per_scene(prediction["rgb"], batch["target_pixels"]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if training.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), training["grad_clip"])
            optimizer.step()
            step += 1
            window_rays += batch["target_rays"].shape[0] * batch["target_rays"].shape[1] * process.world_size

            if step % training["log_every"] == 0 or step == max_steps:
                mse = distributed.all_reduce_mean(loss.item(), process)
                seconds = time.perf_counter() - window_start
                last = {"loss": mse, "psnr": psnr(mse), "lr": optimizer.param_groups[0]["lr"],
                        "rays_per_second": window_rays / seconds}
                if "segmentation" in prediction and "target_instance" in batch:  # on this process's rays
                    last.update(segmentation_scores(prediction["segmentation"].detach(), batch["target_instance"]))
                run.log(step, "train", last)
                if bar is not None:
                    shown = {"loss": f"{mse:.4f}", "psnr": f"{psnr(mse):.2f}", "rays_s": f"{last['rays_per_second']:.0f}"}
                    if "fg_ari" in last:
                        shown["fg_ari"] = f"{last['fg_ari']:.3f}"
                    bar.set_postfix(shown)
                window_start, window_rays = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
            stopping = distributed.all_reduce_any(stop.requested, process)
            if process.is_main:
                if step % training["checkpoint_every"] == 0 or step == max_steps or stopping:
                    save(run.latest, model, optimizer, step, state)
                if step % training["backup_every"] == 0 or step == max_steps:
                    save(run.checkpoints / f"step-{step}.pt", model, optimizer, step, state)
                if step % training["validate_every"] == 0 or step == max_steps:
                    run.log(step, "val", validate(model, val_set, process.device, precision))
                if (step % training["visualize_every"] == 0 or step == max_steps) and val_set is not None:
                    orbit_grid(model, val_set, process.device, run.renders / f"step-{step}.png")
            if stopping:
                raise KeyboardInterrupt
    finally:
        stop.restore()
        if bar is not None:
            bar.close()
        run.close()
        distributed.teardown()
    return Result(step, last, model)


def save(path, model, optimizer, step, state) -> None:
    ckpt.save(path, model_name=state["model_name"], config=state["config"], model=model, step=step,
              optimizer=optimizer, data=state["data"], rng=torch.get_rng_state())


def resume(path, model_name: str, model, optimizer) -> int:
    """Load weights, optimizer and RNG from ``path``; return its step."""
    checkpoint = ckpt.load(path)
    if checkpoint.get("model_name") != model_name:
        raise BadInput(f"checkpoint of model {checkpoint.get('model_name')!r}, not {model_name!r}", path)
    model.load_state_dict(checkpoint["model"])
    if checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("rng") is not None:
        torch.set_rng_state(checkpoint["rng"])
    return int(checkpoint["step"])


def _validation_set(scenes, data_config, training):
    split = data_config.get("val_split", "val")
    if split not in scenes.splits():
        return None
    dataset = make_dataset(scenes, split, data_config, seed=training["seed"] + 1)
    dataset.items = dataset.items[:training["validate_scenes"]]
    return dataset


@torch.no_grad()
def validate(model, dataset, device, precision) -> dict:
    """PSNR on a fixed set of validation items (sampled target rays), as the reference
    reports it: per-scene MSE -> PSNR, averaged over scenes."""
    if dataset is None:
        return {}
    model.eval()
    psnrs, mses, segmentation = [], [], []
    for batch in DataLoader(dataset, batch_size=8):
        batch = to_device(batch, device)
        with precision:
            prediction = model(batch)
        mse = mse_per_scene(prediction["rgb"], batch["target_pixels"])
        mses += mse.tolist()
        psnrs += [psnr(m) for m in mse.tolist()]
        if "segmentation" in prediction and "target_instance" in batch:
            segmentation.append(segmentation_scores(prediction["segmentation"], batch["target_instance"]))
    model.train()
    values = {"psnr": float(np.mean(psnrs)), "mse": float(np.mean(mses)), "scenes": len(psnrs)}
    for key in ("ari", "fg_ari") if segmentation else ():
        values[key] = float(np.nanmean([s[key] for s in segmentation]))
    return values


def dry_run(model_name, model, dataset, loader, config, process) -> None:
    """Print the model summary, parameter count and one batch's shapes; train nothing."""
    if process.is_main:
        print(f"model {model_name}: {count_parameters(model):,} parameters")
        for name, module in model.named_children():
            print(f"  {name:<10} {type(module).__name__:<22} {count_parameters(module):>14,}")
            for child_name, child in module.named_children():
                print(f"    {child_name:<20} {type(child).__name__:<20} {count_parameters(child):>12,}")
        batch = next(iter(loader))
        print(f"data: {len(dataset)} train items, {len(batch['scene_index'])} per process-batch")
        for key, value in batch.items():
            print(f"  {key:<24} {str(tuple(value.shape)):<22} {str(value.dtype).replace('torch.', '')}")
        print("config:")
        print("  " + json.dumps(config, default=str))
