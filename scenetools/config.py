"""Run configs: plain YAML, loaded safely, with defaults, shipped presets and ``--set`` overrides.

A config has three sections: ``model`` (passed to the model class), ``data`` (view protocol,
rays per scene, input stride) and ``training``. Shipped presets live in
``scenetools/configs/<model>/<name>.yaml``; every key not given falls back to ``DEFAULTS``.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from .errors import BadInput

PRESETS = Path(__file__).parent / "configs"

DEFAULTS = {
    "data": {
        "protocol": "msn",  # a scenetools.data.PROTOCOLS name; num_inputs/inputs/targets override it
        "num_rays": 8192,  # target rays per scene
        "input_stride": 1,  # keep every k-th input pixel (CLEVR3D's downsample: 1 is stride 2)
        "val_split": "val",
    },
    "training": {
        "batch_size": 256,  # global: split across processes
        "lr": 1.0e-4,
        "lr_warmup": 2500,
        "lr_decay_rate": 0.16,
        "lr_decay_steps": 4000000,
        "max_steps": 4000000,
        "log_every": 10,
        "checkpoint_every": 1000,
        "backup_every": 100000,
        "visualize_every": 5000,
        "validate_every": 5000,
        "validate_scenes": 64,
        "num_workers": 4,
        "seed": 0,
        "precision": "fp32",
        "grad_clip": None,
    },
}


def preset_names() -> list:
    return sorted(str(p.relative_to(PRESETS).with_suffix("")) for p in PRESETS.glob("*/*.yaml"))


def find_preset(model: str, name: str) -> Path:
    """A preset by ``name`` (``nmr`` for this model, ``srt/nmr``) or a YAML file path."""
    candidates = [Path(name), PRESETS / f"{name}.yaml", PRESETS / model / f"{name}.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise BadInput(f"no config {name!r}: neither a file nor a preset (presets: {', '.join(preset_names())})")


def load_yaml(path) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError) as error:
        raise BadInput(f"unreadable YAML ({' '.join(str(error).split())})", path) from None
    if not isinstance(data, dict):
        raise BadInput("a config must be a YAML mapping", path)
    return data


def resolve(model: str, preset: str, overrides=()) -> dict:
    """Defaults < preset < ``key.path=value`` overrides (values parsed as YAML)."""
    config = merge(DEFAULTS, load_yaml(find_preset(model, preset)))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadInput(f"--set {item!r}: expected key.path=value")
        set_path(config, key, yaml.safe_load(value))
    for section in ("model", "data", "training"):
        if not isinstance(config.get(section), dict):
            raise BadInput(f"config {preset!r} has no {section!r} section")
    return config


def merge(base: dict, update: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def set_path(config: dict, dotted: str, value) -> None:
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise BadInput(f"--set {dotted}: {part} is not a section")
    node[last] = value


def save(config: dict, path) -> None:
    Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
