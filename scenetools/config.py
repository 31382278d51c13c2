"""Run configs: plain YAML, loaded safely, with defaults, shipped presets and ``--set`` overrides.

A config has three sections: ``model`` (passed to the model class), ``data`` (view protocol,
rays per scene, input stride) and ``training``. Shipped presets live in
``scenetools/configs/<model>/<name>.yaml``; every key not given falls back to ``DEFAULTS``.
"""
from __future__ import annotations

import copy
import difflib
import functools
import re
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
        "grad_clip": None,  # clip the gradient norm to this
        "skip_grad_norm_above": None,  # skip steps whose gradient norm exceeds this (ObSuRF: 200) ...
        "skip_grad_after": 0,  # ... from this step on (ObSuRF: 10,000)
        "max_bad_steps": 10,  # this many skipped steps in a row (non-finite or too large) stop the run
    },
}


class CountOrAuto:
    """The type of ``training.accumulate``: an integer of at least 1, or ``auto``."""

    @staticmethod
    def check(name: str, value) -> None:
        if value is not None and value != "auto" and not (_is_int(value) and value >= 1):
            raise BadInput(f"config key {name!r} must be an integer of at least 1 or auto, got {value!r}")


#: Keys a config may hold beyond ``DEFAULTS``, with their types (``None`` allowed for all).
#: ``data.resolution``: train on images resized to this height (default: the file's);
#: ``data.target_views``: the views that give target rays (targets ``given``); ``data.num_targets``:
#: how many target views an item draws (None: all); ``data.train_scenes``: names of the scenes
#: of the train split to train on (a few-shot protocol's labelled instances);
#: ``training.curriculum``: stages of training, see ``CURRICULUM_KEYS``;
#: ``training.init_from``: a checkpoint (or run folder) whose weights a fresh run starts from
#: (a semantic head's frozen SRN), relative to the run folder; the model maps them
#: (``SceneModel.initial_state``);
#: ``training.accumulate``: sum the gradients of this many batches per optimizer step (the
#: global batch is split over processes and then over these), so that a machine with fewer
#: GPUs trains the same optimisation as one with more; ``auto``: the smallest such number
#: whose memory estimate fits the device (``scenetools.train.auto_accumulate``).
EXTRA_KEYS = {"data": {"num_inputs": int, "inputs": str, "targets": str, "input_views": list, "evaluation": dict,
                       "held_out_views": int, "target_views": list, "num_targets": int, "train_scenes": list,
                       "resolution": int},
              "training": {"curriculum": list, "accumulate": CountOrAuto, "init_from": str}}

#: ``data.evaluation``: the view selection scene-eval and scene-render use instead of the
#: training one (SRN fits codes to view 64 of held-out scenes and scores the rest), and the
#: resolution they work at (an image height; default: the file's).
EVALUATION_KEYS = {"protocol": str, "num_inputs": int, "inputs": str, "input_views": list, "targets": str,
                   "target_views": list, "resolution": int}

#: A stage of ``training.curriculum``: it runs ``steps`` steps (the last stage runs on to
#: ``max_steps``) with its own batch size, image resolution (height, see ``data.resolution``)
#: and rays per scene; a key left out keeps the run's value.
CURRICULUM_KEYS = {"steps": int, "batch_size": int, "resolution": int, "num_rays": int}
SECTIONS = ("model", "data", "training", "run")


class Loader(yaml.SafeLoader):
    """YAML's safe loader, reading numbers in every common notation as numbers: YAML 1.1
    reads ``1e-4`` (no dot) as a string, which nobody writing a learning rate means."""


Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_value(text: str):
    """A YAML scalar or collection, as in a config file."""
    return yaml.load(text, Loader=Loader)


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
            data = yaml.load(f, Loader=Loader) or {}
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
        set_path(config, key, parse_value(value))
    for section in ("model", "data", "training"):
        if not isinstance(config.get(section), dict):
            raise BadInput(f"config {preset!r} has no {section!r} section")
    validate(config)
    return config


def validate(config: dict) -> None:
    """Check the data and training sections against the known keys and their types (the
    model section is checked by the model's constructor): a misspelt key or a string where a
    number belongs is a BadInput naming the key, with the closest known one."""
    for section in config:
        if section not in SECTIONS:
            raise BadInput(f"unknown config section {section!r}{_suggest(section, SECTIONS)}")
    for section in ("data", "training"):
        known = {k: type(v) for k, v in DEFAULTS[section].items() if v is not None}
        known.update(EXTRA_KEYS.get(section, {}))
        optional = {k for k, v in DEFAULTS[section].items() if v is None}
        for key, value in config[section].items():
            name = f"{section}.{key}"
            if key not in known and key not in optional:
                raise BadInput(f"unknown config key {name!r}{_suggest(key, list(known) + list(optional), section)}")
            expected = float if key in optional else known[key]
            getattr(expected, "check", functools.partial(_check_type, expected=expected))(name, value)
    _check_nested(config)


def _check_type(name: str, value, expected: type) -> None:
    if value is None or (expected is float and _is_number(value)) or (expected is int and _is_int(value)):
        return
    if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
        raise BadInput(f"config key {name!r} must be {expected.__name__}, got {value!r}")


def _check_mapping(name: str, value: dict, keys: dict, positive=()) -> None:
    for key, item in value.items():
        if key not in keys:
            raise BadInput(f"unknown config key {name + '.' + str(key)!r}{_suggest(str(key), list(keys), name)}")
        _check_type(f"{name}.{key}", item, keys[key])
        if key in positive and item is not None and item < 1:
            raise BadInput(f"config key {name}.{key} must be at least 1, got {item}")


def _check_nested(config: dict) -> None:
    """The structured keys: ``data.input_views`` (view numbers), ``data.evaluation`` and
    ``training.curriculum`` (stages, each with ``steps``)."""
    data, training = config["data"], config["training"]
    for name, views in (("data.input_views", data.get("input_views")),
                        ("data.target_views", data.get("target_views")),
                        ("data.evaluation.input_views", (data.get("evaluation") or {}).get("input_views")),
                        ("data.evaluation.target_views", (data.get("evaluation") or {}).get("target_views"))):
        if views is not None and not all(_is_int(v) and v >= 0 for v in views):
            raise BadInput(f"config key {name!r} must be a list of view numbers (0, 1, ...), got {views!r}")
    if data.get("evaluation"):
        _check_mapping("data.evaluation", data["evaluation"], EVALUATION_KEYS, ("num_inputs",))
    if data.get("resolution") is not None and data["resolution"] < 1:
        raise BadInput(f"config key data.resolution must be at least 1, got {data['resolution']}")
    stages = training.get("curriculum")
    if stages is not None:
        if not stages:
            raise BadInput("config key training.curriculum must list at least one stage (or be null)")
        for i, stage in enumerate(stages):
            name = f"training.curriculum[{i}]"
            if not isinstance(stage, dict) or "steps" not in stage:
                raise BadInput(f"config key {name} must be a mapping with steps (and batch_size, resolution, "
                               f"num_rays), got {stage!r}")
            _check_mapping(name, stage, CURRICULUM_KEYS, tuple(CURRICULUM_KEYS))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _suggest(key: str, known, section: str = "") -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {section + '.' if section else ''}{close[0]}?)" if close else ""


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
