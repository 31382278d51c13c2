"""Checkpoints: self-describing, atomic, loadable with ``torch.load(weights_only=True)``.

A checkpoint is a dict of plain values and tensors (``formats/checkpoint.md``): the format
and version, the model name, the whole resolved config, the weights, the optimizer state,
the step, the data position and the RNG state. Reference checkpoints of stelzner/srt and
stelzner/osrt (their ``model.pt``) load too, through ``models.reference``.
"""
from __future__ import annotations

import errno
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

from . import __version__
from .atomic import partial_path, remove
from .errors import BadInput, is_out_of_space, write_failure

FORMAT = "scenetools.checkpoint"
FORMAT_VERSION = 1


def save(path, *, model_name: str, config: dict, model, step: int, optimizer=None, **state) -> Path:
    """Write a checkpoint atomically. ``state`` holds more plain values (epoch, data position,
    rng, data path, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "module", model)  # unwrap DDP
    module = getattr(module, "_orig_mod", module)  # unwrap torch.compile
    checkpoint = {"format": FORMAT, "format_version": FORMAT_VERSION, "scenetools_version": __version__,
                  "model_name": model_name, "config": config, "step": int(step),
                  "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
                  "optimizer": optimizer.state_dict() if optimizer is not None else None, **state}
    return _write(checkpoint, path)


def preview(scenes, index: int) -> dict:
    """The preview scene of a checkpoint (``scenefile.preview_of``), its arrays as tensors so
    that ``torch.load(weights_only=True)`` reads it."""
    from .scenefile import preview_of

    scene = preview_of(scenes, index)
    scene["rgb_png"] = [torch.tensor(data) for data in scene["rgb_png"]]
    for key in ("camera_to_world", "intrinsics"):
        scene[key] = torch.tensor(scene[key])
    return scene


def _write(checkpoint: dict, path: Path) -> Path:
    """torch.save under a temporary name, renamed when complete. A failed write leaves
    nothing behind; a full disk (which torch reports only as "unexpected pos") becomes a
    WriteError naming the file."""
    tmp = partial_path(path)
    try:
        torch.save(checkpoint, tmp)
    except BaseException as error:
        stats = os.statvfs(tmp.parent)
        full = is_out_of_space(error) or stats.f_bavail * stats.f_frsize < 64 * 2**20
        remove(tmp)
        if full and not isinstance(error, KeyboardInterrupt):
            raise write_failure(OSError(errno.ENOSPC, "No space left on device"), path) from None
        raise
    os.replace(tmp, path)
    return path


def read_dict(path, noun: str = "checkpoint") -> dict:
    """The dict a torch file holds, read safely (``weights_only``); BadInput naming the file if
    it is missing, unreadable or holds no dict (``noun``: what the messages call it)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such {noun}", path)
    try:
        with warnings.catch_warnings():  # torch warns before refusing; our one-line error says it all
            warnings.simplefilter("ignore")
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise BadInput(f"not a readable {noun} ({' '.join(str(error).split())[:200]})", path) from None
    if not isinstance(saved, dict):
        raise BadInput(f"not a {noun} (no dict inside)", path)
    return saved


def load(path) -> dict:
    """Read a checkpoint (ours or a reference ``model.pt``) safely; BadInput if it is not one."""
    checkpoint = read_dict(path)
    if is_reference(checkpoint):
        return checkpoint
    if checkpoint.get("format") != FORMAT:
        raise BadInput("not a scenetools checkpoint", path)
    if checkpoint.get("format_version") != FORMAT_VERSION:
        raise BadInput(f"checkpoint format version {checkpoint.get('format_version')}; "
                       f"this scenetools reads {FORMAT_VERSION}", path)
    return checkpoint


def is_reference(checkpoint: dict) -> bool:
    """A reference implementation's checkpoint: encoder and decoder state dicts (stelzner/srt,
    stelzner/osrt), one model state dict under ``model`` (stelzner/obsurf's CheckpointIO,
    vsitzmann/scene-representation-networks' custom_save) or a bare state dict (only tensors)."""
    if "format" in checkpoint:
        return False
    return (isinstance(checkpoint.get("encoder"), dict) and isinstance(checkpoint.get("decoder"), dict)) or \
        isinstance(checkpoint.get("model"), dict) or \
        (bool(checkpoint) and all(isinstance(v, torch.Tensor) for v in checkpoint.values()))


def locate(run_or_checkpoint) -> tuple:
    """(checkpoint file, run folder or None) from a run folder or a checkpoint file.

    A checkpoint inside ``RUN/checkpoints/`` knows its run, so ``step-N.pt`` alone is enough.
    """
    path = Path(run_or_checkpoint)
    if path.is_dir():
        latest = path / "checkpoints" / "latest.pt"
        if not latest.is_file():
            raise BadInput("run folder has no checkpoints/latest.pt", path)
        return latest, path
    if not path.exists():
        raise BadInput("no such run folder or checkpoint", path)
    run = path.parent.parent if path.parent.name == "checkpoints" and (path.parent.parent / "config.yaml").is_file() \
        else None
    return path, run


def load_model(run_or_checkpoint, expected_model: str | None = None, reference_preset: str | None = None,
               overrides=()):
    """Build the model a checkpoint describes and load its weights.

    Returns (model, checkpoint dict, run folder or None). ``expected_model`` rejects a
    checkpoint of another model; ``reference_preset`` (a preset like ``srt/msn``, or
    ``MODEL:FILE.yaml``) is needed for a reference ``model.pt``, which does not describe
    itself. ``overrides`` (``key.path=value``, as ``--set``) change the checkpoint's config
    before the model is built: settings that do not change the weights' shapes (SRN's
    latent fitting, a data.evaluation view selection).
    """
    from .models import build_model
    from .models.reference import from_reference

    path, run = locate(run_or_checkpoint)
    checkpoint = load(path)
    if is_reference(checkpoint):
        if reference_preset is None:
            raise BadInput("a reference model.pt does not say which model it is: pass --config", path)
        checkpoint = from_reference(checkpoint, *reference_config(reference_preset))
    name = checkpoint["model_name"]
    if expected_model and name != expected_model:
        raise BadInput(f"checkpoint of model {name!r}, expected {expected_model!r}", path)
    if overrides:
        checkpoint["config"] = override_config(checkpoint["config"], overrides)
    model = build_model(name, checkpoint["config"]["model"])
    try:
        model.size_for_state(checkpoint["model"])
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise BadInput(f"weights do not fit model {name!r} ({' '.join(str(error).split())[:300]})", path) from None
    if run is not None:
        model.use_run_folder(run, f"{path.stem}-step{int(checkpoint.get('step') or 0)}")
    return model, checkpoint, run


def override_config(config: dict, overrides) -> dict:
    """``config`` with ``key.path=value`` overrides applied (values parsed as YAML) and checked."""
    from . import config as configs

    config = configs.merge(config, {})
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--set {item!r}: expected key.path=value")
        configs.set_path(config, key, configs.parse_value(value))
    configs.validate(config)
    return config


def reference_config(preset: str) -> tuple:
    """(model name, resolved config) of ``--config`` for a reference checkpoint: a shipped
    preset (``srt/msn``: the model is its folder) or ``MODEL:FILE.yaml``."""
    from . import config as configs

    model, sep, name = preset.partition(":")
    if not sep:
        model, name = preset.split("/")[0], preset
    return model, configs.resolve(model, name)


def export(source, destination) -> Path:
    """Copy a checkpoint without its optimizer state (what a release ships: a third of the size)."""
    checkpoint = load(source)
    checkpoint["optimizer"] = None
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    return _write(checkpoint, destination)


if __name__ == "__main__":  # python -m scenetools.checkpoint export IN.pt OUT.pt
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "export":
        sys.exit("usage: python -m scenetools.checkpoint export IN.pt OUT.pt")
    print(export(sys.argv[2], sys.argv[3]))
