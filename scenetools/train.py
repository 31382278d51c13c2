"""Training: one loop for every model, on one CPU/GPU or many through DDP.

The run folder (``formats/run-folder.md``) holds ``config.yaml``, ``checkpoints/latest.pt``
and ``step-N.pt``, ``metrics.jsonl``, TensorBoard events and ``renders/step-N.png``. Running
the same command again continues from ``latest.pt``: weights, optimizer, step (and with it
the learning rate and the data position) and RNG. SIGINT and SIGTERM save a checkpoint and
stop.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from . import config as configs
from . import distributed
from . import memory
from .device import autocast, keep_freed_memory, to_device
from .atomic import atomic_output
from .data import ShardedSampler, make_dataset, scene_keys
from .errors import BadInput
from .interrupts import StopRequest, ignore_stop_signals
from .metrics import psnr_from_mse, segmentation_scores
from .models import build_model, count_parameters, model_class
from .models.base import encode_for_inference, encoder_inputs, near_far, rgb_mse
from .progress import note, progress
from .render import orbit_grid, render_rays
from .scenefile import SceneFile


@dataclass
class Options:
    """How to run, as opposed to what to train (the config)."""

    precision: str = "fp32"  # fp32 | bf16 (autocast, where the device supports it)
    compile: bool = False
    wandb: bool = False
    dry_run: bool = False
    device: str | None = None  # default: cuda if available, else cpu
    config_name: str | None = None  # the preset or file the config came from (for messages)


# ----------------------------------------------------------------------------- pieces

def learning_rate(step: int, training: dict) -> float:
    """Linear warmup to ``lr`` over ``lr_warmup`` steps, then ×``lr_decay_rate`` every
    ``lr_decay_steps`` (exponentially), as the reference LrScheduler."""
    peak, warmup = training["lr"], training["lr_warmup"]
    if step < warmup:
        return peak * step / warmup
    return peak * training["lr_decay_rate"] ** ((step - warmup) / training["lr_decay_steps"])


def make_optimizer(model, lr: float, device: torch.device):
    """Adam (default betas/eps, as the reference) over the trainable parameters (a semantic
    head leaves its SRN frozen), fused into one kernel where torch can."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused not available for this device/build
        return torch.optim.Adam(parameters, lr=lr)


def clip_gradients(model, limit: float | None) -> float:
    """The total norm of the gradients (before clipping), which the bad-step guard reads;
    with a ``limit``, gradients above it are scaled down to it. Without one only the norm is
    taken: clip_grad_norm_ to infinity would also multiply every gradient by 1."""
    if limit:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit))
    return float(torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None]))


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
            self.tensorboard = summary_writer(self.folder / "tensorboard")
            if use_wandb:
                self.wandb = _start_wandb(self.folder, config)

    def log(self, step: int, split: str, values: dict) -> None:
        """Append to metrics.jsonl (strict JSON: a non-finite value is null) and TensorBoard."""
        if not self.main:
            return
        finite = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in values.items()}
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "split": split, **finite}) + "\n")
        for key, value in values.items():
            self.tensorboard.add_scalar(f"{split}/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"{split}/{k}": v for k, v in values.items()}, step=step)

    def flush(self) -> None:
        """Make the logs so far survive a kill (called with each checkpoint)."""
        if self.tensorboard is not None:
            self.tensorboard.flush()

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def summary_writer(folder: Path):
    """A TensorBoard writer for ``folder`` that uses tensorboard's own TF stub even where
    tensorflow is installed (the kubric extra): importing tensorflow costs every training
    start 3 s and prints its log lines, and the event files are the same. Registering
    ``tensorboard.compat.notf`` is tensorboard's switch for this (tensorboard/compat)."""
    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(folder))


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


def with_data_settings(config: dict, data_path: Path) -> dict:
    """The config with ``model.num_classes: null`` set to the number of the scene file's
    ``semantic_classes`` (left as it is when the file names none)."""
    if "num_classes" not in config["model"] or config["model"]["num_classes"] is not None:
        return config
    try:
        classes = SceneFile(data_path).semantic_classes
    except BadInput:
        return config  # build_inputs reports the file
    return configs.merge(config, {"model": {"num_classes": len(classes)}}) if classes else config


def initial_checkpoint(run_dir: Path, config: dict) -> tuple:
    """(checkpoint file, its contents) of ``training.init_from`` (relative to the run folder;
    a run folder stands for its latest checkpoint), or (None, None)."""
    value = config["training"].get("init_from")
    if not value:
        return None, None
    path, _ = ckpt.locate(os.path.normpath(Path(run_dir) / value))  # normpath: the run folder may not exist yet
    return path, ckpt.load(path)


def with_initial_settings(model_name: str, config: dict, initial: dict | None) -> dict:
    """The config with what its model takes from the checkpoint ``initial`` it starts from
    (``SceneModel.completed_config``)."""
    if initial is None:
        return config
    return {**config, "model": model_class(model_name).completed_config(config["model"], initial)}


def lock_run_folder(run_dir: Path):
    """Hold an exclusive lock on the run folder for as long as the returned file is open; a
    second run on the same folder is refused, naming the process that holds it."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise BadInput(f"is in use by process {holder} (another scene-train on this run folder)", run_dir) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    for stale in run_dir.glob("checkpoints/.*.partial*"):  # left by a kill during a save
        stale.unlink()
    return handle


def trim_metrics(path: Path, step: int) -> None:
    """Drop the log lines past ``step`` (written after the checkpoint a run resumes from), so
    a resumed run's log reads as an uninterrupted one's."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        with atomic_output(path) as tmp:
            tmp.write_text("".join(kept))


def next_batch(batches):
    """The next batch. An error inside a DataLoader worker arrives with the worker's
    traceback in its text: it becomes a one-line BadInput of the worker's own message."""
    try:
        return next(batches)
    except Exception as error:  # noqa: BLE001 - any worker error, re-raised by the DataLoader
        message = str(error)
        if "Original Traceback" not in message:
            raise
        last = message.strip().splitlines()[-1]  # "module.ErrorType: the worker's message"
        raise BadInput(last.split(": ", 1)[-1] if "BadInput" in last.split(": ", 1)[0] else last) from None


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
    if process.device.type == "cpu":
        keep_freed_memory()
    training, data_config = config["training"], config["data"]
    torch.manual_seed(training["seed"] + process.rank)
    run_dir, data_path = Path(run_dir), Path(data_path)
    config = with_data_settings(with_run_section(config, model_name, data_path, run_dir), data_path)
    initial_path, initial = initial_checkpoint(run_dir, config)
    config = with_initial_settings(model_name, config, initial)
    if options.dry_run:
        dry_run(model_name, data_path, config, process, options.config_name)
        return Result(0, {}, None)
    if training.get("accumulate") == "auto":
        config = with_accumulate(config, auto_accumulate(model_name, data_path, config, process, options.config_name))
        training = config["training"]
    # Everything is checked before anything is written.
    model, scenes, train_set, _, _ = build_inputs(model_name, data_path, config, process)
    resuming = run_dir.joinpath("checkpoints", "latest.pt").exists()
    if not resuming and initial is not None:
        init_weights(initial_path, initial, model_name, model)
    lock = None
    if process.is_main:
        lock = lock_run_folder(run_dir)
        prepare_run_folder(run_dir, config)
    if process.world_size > 1:
        torch.distributed.barrier()
    optimizer = make_optimizer(model, learning_rate(0, training), process.device)
    step = 0
    if resuming:
        step = resume(run_dir / "checkpoints" / "latest.pt", model_name, model, optimizer)
        if process.is_main:
            note(f"resuming {run_dir} from step {step}")
            trim_metrics(run_dir / "metrics.jsonl", step)
    elif initial is not None and process.is_main:
        note(f"starting from the weights of {initial_path}")
    del initial  # copied into the model: not kept through training
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
    state = dict(model_name=model_name, config=config, data=config["run"]["data"],
                 preview=ckpt.preview(scenes, scenes.first_held_out()),
                 **({"init_from": training["init_from"]} if training.get("init_from") else {}))
    bar = progress(total=max_steps, desc="training", unit="steps", initial=step) if process.is_main else None
    last, validation, bad_steps = {}, {}, BadSteps(training)
    window_start, window_rays = time.perf_counter(), 0
    schedule, stage, batches = stages(training, data_config), None, iter(())
    accumulate = micro_batches(training)
    try:
        while step < max_steps:
            if stage is None or step >= stage.end:
                getattr(batches, "_shutdown_workers", lambda: None)()
                stage = next(s for s in schedule if s.start <= step < s.end)
                batches = stage_batches(train_set, stage, step, process, training)
                if process.is_main and len(schedule) > 1:
                    note(f"stage {schedule.index(stage) + 1} of {len(schedule)} from step {step}: "
                         f"batch {stage.batch_size}, resolution {stage.resolution or 'of the data'}, "
                         f"{stage.num_rays} rays per scene")
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, training)
            optimizer.zero_grad(set_to_none=True)
            loss, logs, prediction, batch = forward_backward(net, batches, step, precision, accumulate, process.device)
            if bad_steps.check(step, clip_gradients(model, training.get("grad_clip"))):
                optimizer.step()
            step += 1
            window_rays += batch["target_rays"].shape[0] * batch["target_rays"].shape[1] * process.world_size * accumulate

            if step % training["log_every"] == 0 or step == max_steps:
                values = {"loss": loss.detach(), **logs}
                values = {k: distributed.all_reduce_mean(float(v), process) for k, v in values.items()}
                seconds = time.perf_counter() - window_start
                last = {**values, "lr": optimizer.param_groups[0]["lr"], "rays_per_second": window_rays / seconds,
                        "skipped_steps": bad_steps.total}
                if "mse" in values:
                    last["psnr"] = float(psnr_from_mse(torch.tensor(values["mse"])))
                if prediction is not None and "segmentation" in prediction and "target_instance" in batch:
                    last.update(segmentation_scores(prediction["segmentation"].detach(), batch["target_instance"]))
                run.log(step, "train", last)
                if bar is not None:
                    bar.set_postfix({k: f"{last[k]:.4g}" for k in ("loss", "psnr", "fg_ari") if k in last})
                window_start, window_rays = time.perf_counter(), 0
            if bar is not None:
                bar.update(1)
            stopping = distributed.all_reduce_any(stop.requested, process)
            if process.is_main:
                if step % training["checkpoint_every"] == 0 or step == max_steps or stopping:
                    save(run.latest, model, optimizer, step, state)
                    run.flush()
                if step % training["backup_every"] == 0 or step == max_steps:
                    save(run.checkpoints / f"step-{step}.pt", model, optimizer, step, state)
                if step % training["validate_every"] == 0 or step == max_steps:
                    validation = validate(model, val_set, process.device, precision)
                    run.log(step, "val", validation)
                if (step % training["visualize_every"] == 0 or step == max_steps) and val_set is not None:
                    orbit_grid(model, val_set, process.device, run.renders / f"step-{step}.png", autocast=precision)
            if stopping:
                raise KeyboardInterrupt(f"interrupted at step {step}, saved {run.latest}")
    finally:
        getattr(batches, "_shutdown_workers", lambda: None)()  # a worker error must not leave workers behind
        stop.restore()
        if bar is not None:
            bar.close()
        run.close()
        distributed.teardown()
        if lock is not None:
            lock.close()
    if process.is_main:
        figures = ", ".join(f"{k} {validation[k]:.4g}" for k in ("psnr", "fg_ari", "ari") if k in validation)
        note(f"trained to step {step}" + (f"; validation {figures}" if figures else "") + f"; checkpoint {run.latest}")
    return Result(step, last, model)


@dataclass
class Stage:
    """Steps [start, end) of a training curriculum, with their batch size (global), image
    resolution (height; None: the data's) and target rays per scene."""

    start: int
    end: int
    batch_size: int
    resolution: int | None
    num_rays: int


def stages(training: dict, data_config: dict) -> list:
    """The run's stages: ``training.curriculum`` (each stage ``steps`` long, the last one on to
    ``max_steps``; stages past ``max_steps`` are cut), or one stage of the run's own values."""
    spec, out, start = training.get("curriculum") or [{}], [], 0
    for i, stage in enumerate(spec):
        end = training["max_steps"] if i == len(spec) - 1 else min(start + stage["steps"], training["max_steps"])
        out.append(Stage(start, end, stage.get("batch_size", training["batch_size"]),
                         stage.get("resolution", data_config.get("resolution")),
                         stage.get("num_rays", data_config["num_rays"])))
        start = end
        if start >= training["max_steps"]:
            break
    return out


def micro_batches(training: dict) -> int:
    """Batches whose gradients each optimizer step sums (``training.accumulate``, default 1;
    values below 1 are refused by ``build_inputs``)."""
    return max(1, training.get("accumulate") or 1)


def micro_batch_size(batch_size: int, world_size: int, training: dict) -> int:
    """Scenes per forward pass of one process: the global ``batch_size`` split over the
    processes and then over the accumulated batches (0 when it does not split that far)."""
    return batch_size // world_size // micro_batches(training)


def forward_backward(net, batches, step: int, precision, micro: int, device) -> tuple:
    """Gradients of one optimizer step from ``micro`` batches (gradient accumulation: the
    gradient of the mean loss over all of them, as one batch that many times larger gives;
    DDP syncs once, after the last). Returns the loss and logs averaged over them, and the
    last batch with its prediction (for the training metrics)."""
    totals = {}
    for k in range(micro):
        batch = to_device(next_batch(batches), device)
        last = k == micro - 1
        with contextlib.nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync():
            with precision:
                loss, logs = net(batch, step)
            (loss / micro if micro > 1 else loss).backward()
        prediction = logs.pop("prediction", None)
        for name, value in {"loss": loss, **logs}.items():
            value = torch.as_tensor(value).detach() / micro
            totals[name] = totals[name] + value if name in totals else value
    return totals.pop("loss"), totals, prediction, batch


def stage_dataset(train_set, stage: Stage):
    """The training items of ``stage``: at its resolution and rays per scene, drawing other
    rays than the stages before it (seed + its start step)."""
    dataset = copy.copy(train_set)
    dataset.resolution, dataset.num_rays, dataset.seed = stage.resolution, stage.num_rays, train_set.seed + stage.start
    return dataset


def stage_batches(train_set, stage: Stage, step: int, process, training: dict):
    """An iterator over the training batches of ``stage`` from ``step`` on: a DataLoader of its
    batch size over the training items at its resolution, positioned where the step says (so a
    resumed run sees the data an uninterrupted one would)."""
    dataset = stage_dataset(train_set, stage)
    micro = micro_batches(training)
    per_process = micro_batch_size(stage.batch_size, process.world_size, training)
    sampler = ShardedSampler(len(dataset), process.rank, process.world_size, seed=training["seed"] + stage.start,
                             batch_size=per_process, infinite=True)
    epoch, position = divmod((step - stage.start) * micro, sampler.batches_per_epoch)
    sampler.set_epoch(epoch, start=position * per_process)
    workers = training["num_workers"]
    return iter(DataLoader(dataset, batch_size=per_process, sampler=sampler, num_workers=workers,
                           persistent_workers=workers > 0, pin_memory=process.device.type == "cuda",
                           prefetch_factor=4 if workers else None, worker_init_fn=ignore_stop_signals))


def save(path, model, optimizer, step, state) -> None:
    """Write a checkpoint, never of non-finite weights (a good one stays in place)."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise TrainingDiverged(f"the weights are not finite at step {step}; {path} keeps its last good state")
    ckpt.save(path, model=model, step=step, optimizer=optimizer, rng=torch.get_rng_state(), **state)


def init_weights(path, checkpoint: dict, model_name: str, model) -> None:
    """Load the weights of ``checkpoint`` (read from ``path``) of the same model, or of one
    the model starts from (``starts_from``), into a new run (fresh optimizer)."""
    name = checkpoint.get("model_name")
    if name != model_name and name not in model.starts_from:
        starts = " or ".join(repr(n) for n in (model_name,) + tuple(model.starts_from))
        raise BadInput(f"checkpoint of model {name!r}, not {starts}", path)
    try:
        state = model.initial_state(name, checkpoint["model"])
        model.size_for_state(state)
        model.load_state_dict(state)
    except RuntimeError as error:
        raise BadInput(f"weights do not fit this config ({' '.join(str(error).split())[:200]})", path) from None


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


def validate(model, dataset, device, precision) -> dict:
    """PSNR on a fixed set of validation items (sampled target rays), as the reference
    reports it: per-scene MSE -> PSNR, averaged over scenes; ARI and FG-ARI for models that
    segment. Through ``encode`` and ``render``, as evaluation."""
    if dataset is None:
        return {}
    model.eval()
    psnrs, mses, segmentation = [], [], []
    for batch in DataLoader(dataset, batch_size=8):
        batch = to_device(batch, device)
        with precision:
            scene = encode_for_inference(model, encoder_inputs(batch))
        prediction = render_rays(model, scene, batch["target_camera_pos"], batch["target_rays"],
                                 *near_far(batch), autocast=precision, outputs=("segmentation",))
        mse = rgb_mse(prediction["rgb"], batch["target_pixels"].cpu())
        mses += mse.tolist()
        psnrs += psnr_from_mse(mse).tolist()
        if "segmentation" in prediction and "target_instance" in batch:
            segmentation.append(segmentation_scores(prediction["segmentation"], batch["target_instance"].cpu()))
    model.train()
    values = {"psnr": float(np.mean(psnrs)), "mse": float(np.mean(mses)), "scenes": len(psnrs)}
    for key in ("ari", "fg_ari") if segmentation else ():
        values[key] = float(np.nanmean([s[key] for s in segmentation]))
    return values


class BadSteps:
    """Decides which optimizer steps to take, from the gradient norm (the same on every DDP
    rank, so all ranks agree).

    A non-finite gradient (a NaN or inf loss) skips the step; so does a norm above
    ``skip_grad_norm_above`` once past step ``skip_grad_after`` (ObSuRF's guard against
    spikes). ``max_bad_steps`` skipped steps in a row stop the run: the weights stay as the
    last good step left them.
    """

    def __init__(self, training: dict):
        self.threshold = training.get("skip_grad_norm_above")
        self.after = training.get("skip_grad_after", 0)
        self.limit = training.get("max_bad_steps", 10)
        self.total = self.in_a_row = 0

    def check(self, step: int, grad_norm: float) -> bool:
        """True if the step may be taken."""
        bad = not math.isfinite(grad_norm) or (self.threshold is not None and step >= self.after
                                               and grad_norm > self.threshold)
        if not bad:
            self.in_a_row = 0
            return True
        self.total += 1
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            what = "non-finite" if not math.isfinite(grad_norm) else f"above {self.threshold}"
            raise TrainingDiverged(f"{self.in_a_row} steps in a row up to step {step + 1} had a gradient norm "
                                   f"{what} (last: {grad_norm:g}); stopped without saving them. Lower "
                                   f"training.lr or set training.grad_clip, then run again to resume")
        return False


class TrainingDiverged(RuntimeError):
    """Training stopped because its gradients stayed non-finite or too large."""


def build_inputs(model_name: str, data_path: Path, config: dict, process, problems: list | None = None) -> tuple:
    """(model, scene file, training set, its sampler, batch per process), each checked.

    Without ``problems`` the first problem raises its BadInput; with a list, each problem is
    noted there and the rest is still built where it can be (what ``--dry-run`` reports).
    """
    def problem(error: BadInput):
        if problems is None:
            raise error
        problems.append(str(error))

    training, data_config = config["training"], config["data"]
    model = scenes = train_set = sampler = None
    try:
        model = build_model(model_name, config["model"]).to(process.device)
    except BadInput as error:
        problem(error)
    try:
        scenes = SceneFile(data_path)
        train_set = make_dataset(scenes, "train", data_config, training["seed"])
    except BadInput as error:
        problem(error)
    if (training.get("accumulate") or 1) < 1:
        problem(BadInput(f"training.accumulate must be at least 1, not {training['accumulate']}"))
    parts = process.world_size * micro_batches(training)
    per_process = micro_batch_size(training["batch_size"], process.world_size, training)
    for stage in stages(training, data_config):
        batch = stage.batch_size
        micro_batch = micro_batch_size(batch, process.world_size, training)
        if micro_batch < 1 or batch % parts:
            problem(BadInput(f"batch_size {batch} does not split over {process.world_size} processes"
                             + (f" x {micro_batches(training)} accumulated batches" if parts > process.world_size else "")))
        elif train_set is not None and len(train_set) < micro_batch:
            problem(BadInput(f"the train split has {len(train_set)} items, fewer than a batch of "
                             f"{micro_batch}", data_path))
    if train_set is not None and per_process >= 1 and len(train_set) >= per_process:
        sampler = ShardedSampler(len(train_set), process.rank, process.world_size, seed=training["seed"],
                                 batch_size=per_process, infinite=True)
    if model is not None and train_set is not None and model.per_scene_parameters:
        model.use_training_scenes(scene_keys(scenes, train_set.scene_indices).to(process.device))
    if model is not None and scenes is not None:
        missing = [field for field in model.needs if field not in scenes.fields]
        if missing:
            problem(BadInput(f"model {model_name} trains on {', '.join(missing)}, which this file does not have",
                             data_path))
    return model, scenes, train_set, sampler, per_process


def with_accumulate(config: dict, accumulate: int) -> dict:
    return configs.merge(config, {"training": {"accumulate": accumulate}})


def memory_estimates(model, train_set, config: dict, world_size: int) -> list:
    """Memory per process of each stage (``memory.Estimate``), at the config's accumulation:
    16 B per trainable parameter, and the activations of the training objective on one scene
    (the first training item at the stage's resolution and rays, on the model's device)
    times the scenes of a micro-batch. A stage whose batch does not split, or whose scene
    cannot be run (``train_set`` None, a failing forward), gets no activation figure and the
    reason."""
    training, measured, out = config["training"], {}, []
    parameters = memory.trainable_parameters(model)
    for stage in stages(training, config["data"]):
        scenes = micro_batch_size(stage.batch_size, world_size, training)
        key = (stage.resolution, stage.num_rays)
        if key not in measured:
            measured[key] = _scene_activations(model, train_set, stage)
        value = measured[key] if scenes >= 1 else "the batch does not split (see the problems below)"
        out.append(memory.Estimate(parameters, scenes, None, value) if isinstance(value, str)
                   else memory.Estimate(parameters, scenes, value))
    return out


def _scene_activations(model, train_set, stage: Stage):
    """Activation bytes of one scene at ``stage`` (see ``memory_estimates``), or why there are none."""
    if train_set is None:
        return "no training data (see the problems below)"
    try:
        scene = next(iter(DataLoader(stage_dataset(train_set, stage), batch_size=1)))
        return memory.activation_bytes(model, to_device(scene, next(model.parameters()).device), stage.start)
    except Exception as error:  # noqa: BLE001 - reported in the estimate (e.g. a field the file lacks)
        return f"the forward pass on one scene failed ({type(error).__name__}: {' '.join(str(error).split())[:200]})"


def resolve_accumulate(estimates: list, process, config_name: str | None) -> tuple:
    """``--accumulate auto`` from the estimates at accumulate 1: the smallest N splitting every
    stage's batch per process whose estimate fits this process's device memory with 10% to
    spare. Returns (N, the line saying why); nothing fitting is a BadInput."""
    missing = [e.missing for e in estimates if e.per_scene is None]
    if missing:
        raise BadInput(f"--accumulate auto needs a memory estimate, and has none: {missing[0]}")
    available, where = memory.device_memory(process.device)
    n, peak = memory.choose_accumulate(estimates, available)
    at = f"at batch {max(e.scenes for e in estimates)} per process"
    if n is None:
        scenes = f"{peak.scenes} scene{'s' if peak.scenes > 1 else ''}"
        raise BadInput(f"--accumulate auto: config {config_name or '(given)'} needs an estimated "
                       f"{memory.gib(peak.total)} per process even at {scenes} per micro-batch "
                       f"({memory.gib(peak.persistent)} state + {memory.gib(peak.activations)} activations), more "
                       f"than {memory.gib(available)} {where} with 10% to spare; use more processes or a smaller batch")
    return n, (f"--accumulate auto: {n} (estimate {memory.gib(peak.total)} per process {at}, {peak.scenes} per "
               f"micro-batch, against {memory.gib(available)} {where})")


def auto_accumulate(model_name, data_path, config: dict, process, config_name: str | None = None) -> int:
    """Resolve ``--accumulate auto`` on the main process (a model on the CPU measured on one
    scene, the training RNG untouched) and give every process its N; a BadInput there is
    raised on every process."""
    answer = None
    if process.is_main:
        try:
            answer, line = resolve_accumulate(_estimates_at_one(model_name, data_path, config, process), process,
                                             config_name)
            note(line)
        except BadInput as error:
            answer = str(error)
    answer = distributed.broadcast_from_main(answer, process)
    if isinstance(answer, str):
        raise BadInput(answer)
    return answer


def _estimates_at_one(model_name, data_path, config, process) -> list:
    at_one, cpu = with_accumulate(config, 1), _on_cpu(process)
    with torch.random.fork_rng(devices=[]):
        model, _, train_set, _, _ = build_inputs(model_name, Path(data_path), at_one, cpu)
    return memory_estimates(model, train_set, at_one, process.world_size)


def _on_cpu(process):
    return dataclasses.replace(process, device=torch.device("cpu"))


def dry_run(model_name, data_path, config, process, config_name: str | None = None) -> None:
    """Print the model summary, parameter counts, the memory estimate per process and one
    batch's shapes, train nothing, and write nothing; then name every problem found (a
    BadInput listing them all). Everything is built on the CPU."""
    problems = []
    auto = config["training"].get("accumulate") == "auto"
    if auto:
        config = with_accumulate(config, 1)
    model, _, dataset, sampler, _ = build_inputs(model_name, Path(data_path), config, _on_cpu(process), problems)
    if not process.is_main:
        return
    if model is not None:
        _print_model(model_name, model, dataset)
        estimates = memory_estimates(model, dataset, config, process.world_size)
        if auto:
            config = _print_auto(estimates, config, process, config_name, problems)
            estimates = [e.accumulated(micro_batches(config["training"])) for e in estimates]
        for i, estimate in enumerate(estimates):
            print(("" if len(estimates) == 1 else f"stage {i + 1} of {len(estimates)}: ") + estimate.line())
        print("  (activations: what autograd keeps for backward at fp32, measured on one scene on the CPU; "
              "bf16 autocast roughly halves them)")
        _print_modules(model)
    else:
        print("memory per process (estimate): none, without a model (see the problems below)")
    if sampler is not None:
        _print_batch(dataset, sampler, config, process)
    print("config:")
    print("  " + json.dumps(config, default=str))
    if problems:
        raise BadInput(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}: " + "; ".join(problems))


def _print_auto(estimates, config, process, config_name, problems) -> dict:
    """Print what ``--accumulate auto`` chooses and return the config with it (1 when nothing
    fits, which is noted in ``problems``)."""
    try:
        n, line = resolve_accumulate(estimates, process, config_name)
        print(line)
        return with_accumulate(config, n)
    except BadInput as error:
        problems.append(str(error))
        return config


def _print_model(model_name, model, dataset) -> None:
    print(f"model {model_name}: {count_parameters(model):,} parameters")
    if model.per_scene_parameters and dataset is not None:
        scenes, per_scene = len(dataset.scene_indices), model.per_scene_parameters
        print(f"  = {count_parameters(model) - scenes * per_scene:,} networks + {per_scene:,} per training "
              f"scene x {scenes:,} training scenes ({scenes * per_scene:,})")


def _print_modules(model) -> None:
    for name, module in model.named_children():
        print(f"  {name:<10} {type(module).__name__:<22} {count_parameters(module):>14,}")
        for child_name, child in module.named_children():
            print(f"    {child_name:<20} {type(child).__name__:<20} {count_parameters(child):>12,}")


def _print_batch(dataset, sampler, config, process) -> None:
    first = stages(config["training"], config["data"])[0]
    micro = micro_batches(config["training"])
    per_process = micro_batch_size(first.batch_size, process.world_size, config["training"])
    batch = next(iter(DataLoader(stage_dataset(dataset, first), batch_size=per_process, sampler=sampler)))
    print(f"data: {len(dataset)} train items, {len(batch['scene_index'])} per process-batch"
          + (f", {micro} batches accumulated per step" if micro > 1 else ""))
    for key, value in batch.items():
        print(f"  {key:<24} {str(tuple(value.shape)):<22} {str(value.dtype).replace('torch.', '')}")
