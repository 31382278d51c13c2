"""The reference implementations' own code, driven as their train.py drives it.

``make bench REF=DIR`` points here at DIR/srt (stelzner/srt), DIR/osrt (stelzner/osrt) and
DIR/obsurf (stelzner/obsurf), unpacked by the user; nothing of them is in this repository.
Their files are imported as they are, never edited. What is done at run time instead:

* ``sys.path``: the repository first (its packages ``srt``, ``osrt``, ``obsurf``), and
  ``bench/ref_shims`` last, a stand-in for torchvision (see its README);
* ObSuRF reads its configs by relative paths (``configs/default.yaml``, the ``import:`` of
  the data config), so the process works in DIR/obsurf; its trainer's output folder (it makes
  ``vis/`` there) is a temporary one, not the run folder in DIR;
* the device is the CPU: their training steps move data with ``.to(device)`` and never call
  ``.cuda()`` (only evaluation, rendering and DDP set-up do, none of which runs here);
* the learning rate is the config's peak, constant (train.py's warm-up would keep it near 0
  over the few steps measured);
* the "bf16 + fused" variant wraps the trainer's ``compute_loss`` in bf16 autocast and builds
  the optimizer as ``Adam(fused=True)``: the two lines a user would add.

Each reference is one class with the same methods: ``dataset()`` (its own dataset class over
a folder in its on-disk layout), ``model()``, ``state(model)`` / ``load(model, state)`` (in
the checkpoint layout that our ``from_reference`` reads), ``trainer(model, optimizer)`` and
``step(trainer, batch, it) -> loss``.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

SHIMS = Path(__file__).resolve().parent / "ref_shims"
CPU = torch.device("cpu")


def use_repository(path: Path) -> None:
    """Make a reference repository importable (and the torchvision stand-in, last)."""
    sys.path.insert(0, str(path))
    if str(SHIMS) not in sys.path:
        sys.path.append(str(SHIMS))


def with_autocast(function):
    """``function`` run under CPU bf16 autocast."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return function(*args, **kwargs)
    return wrapped


class SrtReference:
    """stelzner/srt or stelzner/osrt (same layout): ``train.py`` builds ``SRT``/``OSRT`` from
    the run config, ``Adam(model.parameters())`` and ``SRTTrainer``, whose ``train_step`` is
    zero_grad, ``compute_loss`` (RGB MSE per scene; OSRT also computes ARI and FG-ARI of the
    target masks for its log), mean over the batch, backward, step. No grad clipping."""

    CONFIGS = {"srt": "runs/clevr3d/srt/config.yaml", "osrt": "runs/clevr3d/osrt/config.yaml"}
    lr = 1e-4  # train.py's peak (hard-coded there)

    def __init__(self, name: str, ref_dir: Path, data: Path, points: int, out_dir: Path):
        import yaml

        self.name, self.out_dir = name, out_dir
        self.repo = Path(ref_dir) / name
        use_repository(self.repo)
        self.config = yaml.safe_load((self.repo / self.CONFIGS[name]).read_text())
        self.config["data"].update(path=str(data), num_points=points)

    def dataset(self):
        from importlib import import_module
        return import_module(f"{self.name}.data").get_dataset("train", self.config["data"])

    def model(self):
        from importlib import import_module
        module = import_module(f"{self.name}.model")
        return getattr(module, self.name.upper())(self.config["model"])

    def state(self, model) -> dict:
        return {"encoder": model.encoder.state_dict(), "decoder": model.decoder.state_dict()}

    def load(self, model, state: dict) -> None:
        model.encoder.load_state_dict(state["encoder"])
        model.decoder.load_state_dict(state["decoder"])

    def trainer(self, model, optimizer):
        from importlib import import_module
        return import_module(f"{self.name}.trainer").SRTTrainer(model, optimizer, self.config, CPU,
                                                                str(self.out_dir), self.dataset().render_kwargs)

    @staticmethod
    def step(trainer, batch: dict, it: int) -> float:
        loss, _ = trainer.train_step(batch, it)
        return loss


class ObsurfReference:
    """stelzner/obsurf: ``train.py`` loads the run config over ``configs/default.yaml``, builds
    the model and ``Trainer`` from it (``obsurf.model.config``) and ``Adam``; ``train_step``
    is zero_grad, ``compute_loss`` (depth and colour likelihoods at the dataset's surface and
    empty points, overlap penalty annealed by ``it``), mean, backward, grad clip 1.0, and the
    step unless ``it`` >= 10,000 and the grad norm > 200. The dataset samples the target
    points (numpy); the model samples its initial slots (torch)."""

    CONFIG = "runs/3dclevr/obsurf/config.yaml"
    lr = 4e-4  # train.py's LrScheduler peak; the config has lr_warmup: 0

    def __init__(self, name: str, ref_dir: Path, data: Path, points: int, out_dir: Path):
        self.repo = Path(ref_dir) / "obsurf"
        use_repository(self.repo)
        os.chdir(self.repo)
        from obsurf import config

        self.config = config.load_config(self.CONFIG, "configs/default.yaml")  # also sets config.CFG
        self.config["data"].update(path=str(data), num_points=points)
        self.config["training"]["out_dir"] = str(out_dir)

    def dataset(self):
        from obsurf import config
        return config.get_dataset("train", self.config)

    def model(self):
        import obsurf.model.config as model_config
        return model_config.get_model(self.config, device=CPU)

    def state(self, model) -> dict:
        return {"model": model.state_dict()}  # CheckpointIO's layout

    def load(self, model, state: dict) -> None:
        model.load_state_dict(state["model"])

    def trainer(self, model, optimizer):
        import obsurf.model.config as model_config
        return model_config.get_trainer(model, optimizer, self.config, device=CPU)

    @staticmethod
    def step(trainer, batch: dict, it: int) -> float:
        return trainer.train_step(batch, it)


REFERENCES = {"srt": SrtReference, "osrt": SrtReference, "obsurf": ObsurfReference}


def reference(name: str, ref_dir: Path, data: Path, points: int, out_dir: Path):
    """The reference of model ``name`` (srt, osrt, obsurf), reading ``data``."""
    return REFERENCES[name](name, Path(ref_dir).resolve(), Path(data).resolve(), points, Path(out_dir).resolve())


def trainer_for(ref, model, variant: str):
    """The reference's trainer with its optimizer: as it ships ("fp32": fp32, ``Adam``), or
    with bf16 autocast around ``compute_loss`` and ``Adam(fused=True)`` ("bf16")."""
    fused = variant == "bf16"
    optimizer = torch.optim.Adam(model.parameters(), lr=ref.lr, **({"fused": True} if fused else {}))
    trainer = ref.trainer(model, optimizer)
    if fused:
        trainer.compute_loss = with_autocast(trainer.compute_loss)
    return trainer
