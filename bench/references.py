"""The reference implementations' own code, driven as their train.py drives it.

``make bench REF=DIR`` points here at DIR/srt (stelzner/srt), DIR/osrt (stelzner/osrt),
DIR/obsurf (stelzner/obsurf) and DIR/srn (vsitzmann/scene-representation-networks, with its
submodule vsitzmann/pytorch_prototyping in DIR/srn/pytorch_prototyping), unpacked by the
user; nothing of them is in this repository. Their files are imported as they are, never
edited. What is done at run time instead:

* ``sys.path``: the repository first (its packages ``srt``, ``osrt``, ``obsurf``; SRN's
  top-level modules), and ``bench/ref_shims`` last, a stand-in for torchvision (see its README);
* ObSuRF reads its configs by relative paths (``configs/default.yaml``, the ``import:`` of
  the data config), so the process works in DIR/obsurf; its trainer's output folder (it makes
  ``vis/`` there) is a temporary one, not the run folder in DIR;
* the device is the CPU: the SRT family's and ObSuRF's training steps move data with
  ``.to(device)`` and never call ``.cuda()`` (only evaluation, rendering and DDP set-up do,
  none of which runs here). SRN calls ``.cuda()`` on its model, its code table and every
  input and intermediate (srns.py, hyperlayers.py, custom_layers.py, geometry.py): in its
  process only, ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return the tensor or
  module itself (:func:`cuda_is_cpu`), so everything stays on the CPU;
* the learning rate is the config's peak, constant (train.py's warm-up would keep it near 0
  over the few steps measured);
* the "bf16 + fused" variant wraps the trainer's ``compute_loss`` in bf16 autocast and builds
  the optimizer as ``Adam(fused=True)``: the two lines a user would add. SRN has no trainer
  class: :class:`SrnTrainStep` is the body of its train.py's loop, with the same two methods.

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


def cuda_is_cpu() -> None:
    """``.cuda()`` of tensors and modules returns them unchanged (SRN's process only)."""
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.nn.Module.cuda = lambda self, *args, **kwargs: self


class SrnReference:
    """vsitzmann/scene-representation-networks: ``train.py`` with its defaults and
    ``train_configs/cars.yml`` (64 px at batch 64, then 128 px at batch 16; lr 5e-5) builds
    ``dataio.SceneClassDataset`` over the training folder (at most 50 observations per
    instance, one per item), ``SRNsModel`` (256-d codes, 10 tracing steps) and
    ``Adam(model.parameters())``; each step is :class:`SrnTrainStep`. No grad clipping.

    What differs from its train.py: ``.cuda()`` is the identity (:func:`cuda_is_cpu`); the
    ray marcher's counter starts at 1, not 0, so its every-100th-forward tensorboard figure
    (``util.show_images``: matplotlib, whose current versions reject the float row count it
    passes) is not drawn in the few steps measured; the per-step tensorboard logging
    (``model.write_updates``, ``writer.add_scalar``) and validation are not run. Its own
    per-step prints (the ray marcher's depth range, train.py's losses) are kept. In the bf16
    variant, ``geometry.depth_from_world`` runs outside autocast (float32 in, float32 out),
    since the ray marcher prints that depth with ``.numpy()``, which has no bfloat16."""

    lr = 5e-5  # train.py's default (cars.yml does not set it)
    loss_weights = {"l1_weight": 200.0, "reg_weight": 1e-3, "kl_weight": 1.0}  # train.py's defaults
    max_observations = 50  # train.py's --max_num_observations_train default

    def __init__(self, name: str, ref_dir: Path, data: Path, points: int, out_dir: Path, resolution: int = 64):
        self.repo, self.data, self.resolution = Path(ref_dir) / "srn", data, resolution
        if points != resolution ** 2:
            raise ValueError(f"SRN's items are whole images: {resolution} px has {resolution ** 2} rays, not {points}")
        use_repository(self.repo)
        cuda_is_cpu()

    def dataset(self):
        import dataio
        return dataio.SceneClassDataset(root_dir=str(self.data), img_sidelength=self.resolution,
                                        max_num_instances=-1, max_observations_per_instance=self.max_observations,
                                        samples_per_instance=1)

    @staticmethod
    def collate(dataset, items):
        return dataset.collate_fn(items)

    def model(self):
        import srns
        model = srns.SRNsModel(num_instances=self.dataset().num_instances, latent_dim=256, tracing_steps=10)
        model.train()
        model.ray_marcher.counter = 1
        return model

    def state(self, model) -> dict:
        return {"model": model.state_dict()}  # util.custom_save's layout

    def load(self, model, state: dict) -> None:
        model.load_state_dict(state["model"])

    def trainer(self, model, optimizer):
        return SrnTrainStep(model, optimizer, self.loss_weights)

    @staticmethod
    def step(trainer, batch: tuple, it: int) -> float:
        return trainer.train_step(batch, it)


class SrnTrainStep:
    """The body of SRN's train.py loop: ``model(model_input)``, ``optimizer.zero_grad()``, the
    image, depth-regularisation and latent losses weighted and summed, its print of them,
    ``backward``, ``optimizer.step()``."""

    def __init__(self, model, optimizer, weights: dict):
        self.model, self.optimizer, self.weights, self.iter = model, optimizer, weights, 0

    def compute_loss(self, model_input: dict, ground_truth: dict):
        model, w = self.model, self.weights
        model_outputs = model(model_input)
        self.optimizer.zero_grad()
        dist_loss = model.get_image_loss(model_outputs, ground_truth)
        reg_loss = model.get_regularization_loss(model_outputs, ground_truth)
        latent_loss = model.get_latent_loss()
        weighted_dist_loss = w["l1_weight"] * dist_loss
        weighted_reg_loss = w["reg_weight"] * reg_loss
        weighted_latent_loss = w["kl_weight"] * latent_loss
        print("Iter %07d   Epoch %03d   L_img %0.4f   L_latent %0.4f   L_depth %0.4f" %
              (self.iter, 0, weighted_dist_loss, weighted_latent_loss, weighted_reg_loss))
        return weighted_dist_loss + weighted_reg_loss + weighted_latent_loss

    def train_step(self, batch: tuple, it: int) -> float:
        self.iter = it
        total_loss = self.compute_loss(*batch)
        total_loss.backward()
        self.optimizer.step()
        return total_loss.item()


REFERENCES = {"srt": SrtReference, "osrt": SrtReference, "obsurf": ObsurfReference, "srn": SrnReference}


def reference(name: str, ref_dir: Path, data: Path, points: int, out_dir: Path, resolution: int | None = None):
    """The reference of model ``name`` (srt, osrt, obsurf, srn), reading ``data``; SRN's at image
    size ``resolution``."""
    extra = {"resolution": resolution} if name == "srn" else {}
    return REFERENCES[name](name, Path(ref_dir).resolve(), Path(data).resolve(), points, Path(out_dir).resolve(),
                            **extra)


def collate(ref, dataset, items: list):
    """One batch of the reference's dataset items, as its DataLoader makes it."""
    own = getattr(ref, "collate", None)
    return own(dataset, items) if own else torch.utils.data.default_collate(items)


def trainer_for(ref, model, variant: str):
    """The reference's trainer with its optimizer: as it ships ("fp32": fp32, ``Adam``), or
    with bf16 autocast around ``compute_loss`` and ``Adam(fused=True)`` ("bf16")."""
    fused = variant == "bf16"
    optimizer = torch.optim.Adam(model.parameters(), lr=ref.lr, **({"fused": True} if fused else {}))
    trainer = ref.trainer(model, optimizer)
    if fused:
        trainer.compute_loss = with_autocast(trainer.compute_loss)
        if isinstance(ref, SrnReference):
            import geometry
            geometry.depth_from_world = without_autocast(geometry.depth_from_world)
    return trainer


def without_autocast(function):
    """``function`` run with autocast off (its float32 inputs stay float32)."""
    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return function(*args, **kwargs)
    return wrapped
