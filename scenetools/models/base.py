"""The one interface every model implements, so that training, evaluation and rendering
never need to know which model they run.

A model is a ``SceneModel`` (an ``nn.Module``) with three entry points:

``encode(inputs) -> scene``
    The scene representation from the input views alone. ``inputs`` holds only the
    ``input_*`` fields of a batch (see :func:`encoder_inputs`), plus ``scene_index`` [B]
    (the scene's row in the scene file), ``scene_key`` [B] (int64, the scene's identity across
    files: :func:`scenetools.data.scene_key`; models that keep a code per training scene look
    codes up by it, never by row) and ``render_range`` [B, 2]: never a target pixel, depth or
    label. Shapes, B scenes of I
    input views of H x W pixels, world frame, OpenCV camera axes:

    * ``input_images`` [B, I, 3, H, W] in [0, 1], ``input_rays`` [B, I, H, W, 3] unit
      directions, ``input_camera_pos`` [B, I, 3], ``input_camera_to_world`` [B, I, 4, 4],
      ``input_intrinsics`` [B, I, 3, 3], ``input_views`` [B, I].

    ``encode`` may optimise (test-time latent fitting): such a model sets
    ``encode_optimises = True``, and evaluation and rendering then call it with gradients
    enabled (:func:`encode_for_inference`); for every other model they save the graph.

``render(scene, camera_pos, rays, near, far, outputs=None) -> dict``
    Decode world-frame rays: ``camera_pos`` and ``rays`` [B, R, 3] (unit directions),
    ``near`` and ``far`` [B] (the scene file's ``render_range``). Returns a dict holding
    ``rgb`` [B, R, 3] in [0, 1] and the names of the class attribute ``outputs`` that the
    caller asks for in ``outputs`` (None: all; a model may return more than asked, and
    should skip what is costly and not asked for):

    * ``depth`` [B, R]: expected distance along the ray;
    * ``segmentation`` [B, R, S]: soft assignment of each ray to S slots (sums to 1);
    * ``slot_rgb`` [B, R, S, 3]: each slot rendered alone;
    * ``semantic`` [B, R, C]: class scores (logits) over the C classes of the scene file
      (class 0 = background; the file attribute ``semantic_classes``,
      ``SceneFile.semantic_classes``, names them and may be None); the predicted class is
      the argmax. A model that predicts ``semantic`` also predicts ``depth`` (the distance
      along the unit ray, so a ray's surface point is ``camera_pos + depth * ray``:
      ``scene-render --outputs pointcloud``).

    Outputs listed in the class attribute ``image_outputs`` are computed over whole images (a
    U-Net on rendered features): ``render`` then takes ``image_size=(H, W)``, given when the
    R rays are whole H x W images in row-major order, one after the other, and returns them
    only then.

``forward(batch, step) -> (loss, logs)``
    The training objective on one batch at training step ``step`` (for annealed terms).
    ``loss`` is a scalar tensor; ``logs`` maps names to scalar tensors (or, under the key
    ``"prediction"``, a dict of per-ray outputs for the training metrics). A log named
    ``mse`` is the RGB mean squared error, from which the trainer reports PSNR. The default
    is the RGB MSE of rendered target rays: models that train on something else (points and
    depth, a latent prior) override it.

Class attributes declare the rest:

* ``outputs``: what ``render`` can return beyond ``rgb``; ``image_outputs``: those of them
  that need whole images (see ``render``);
* ``needs``: scene-file fields that the objective needs beyond images and cameras (``depth``,
  ``instance``, ``semantic``); training refuses data without them, by name;
* ``point_segmentation`` (optional method): ``(scene, points [B, P, 3]) -> [B, P, S]`` slot
  weights at 3D points, for the 3D ARI at ground-truth surface points.

``from_reference(reference_state: dict) -> state_dict`` (optional classmethod) maps the
weights of the reference implementation's checkpoint onto the model's own names.

``initial_state(model_name, state) -> state_dict`` maps the weights of a checkpoint of model
``model_name`` that a new run starts from (``training.init_from``): the model's own, or of a
model named in the class attribute ``starts_from`` (a semantic head starts from an SRN);
``completed_config(config, checkpoint)`` (classmethod) may take settings from that checkpoint
(the head takes its SRN's sizes). A model section's ``num_classes: null`` is filled with the number of the scene
file's ``semantic_classes`` when a run starts (``train.with_data_settings``).

Models with a table of per-scene parameters (an auto-decoder's latent codes) set
``per_scene_parameters`` (parameters per training scene) and implement:

* ``use_training_scenes(keys [N] int64)``: size the table for these training scenes (their
  ``scene_key``); the trainer calls it before building the optimizer and before resuming;
* ``size_for_state(state_dict)``: resize the table to fit a state dict about to be loaded
  (loading a checkpoint and a reference checkpoint call it, for every model).

``use_run_folder(folder, tag)`` (no-op by default) tells a model whose ``encode`` is costly
(test-time fitting) where it may keep what it computed for the weights named ``tag``;
``checkpoint.load_model`` calls it when the checkpoint belongs to a run folder.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

#: Fields of a batch that ``encode`` may see (besides every ``input_*`` field).
ENCODER_FIELDS = ("scene_index", "scene_key", "render_range")


def encoder_inputs(batch: dict) -> dict:
    """The part of ``batch`` a model may encode: input views and scene identity, no targets."""
    return {k: v for k, v in batch.items() if k.startswith("input_") or k in ENCODER_FIELDS}


def near_far(batch: dict):
    """(near [B], far [B]) from a batch's ``render_range`` [B, 2]."""
    return batch["render_range"][:, 0], batch["render_range"][:, 1]


def encode_for_inference(model, inputs: dict) -> dict:
    """``model.encode(inputs)`` outside training: without a graph, unless the model's
    encoding is itself an optimisation."""
    with contextlib.nullcontext() if getattr(model, "encode_optimises", False) else torch.no_grad():
        return model.encode(inputs)


def rgb_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] mean squared error over each scene's rays and channels (in float32)."""
    return ((prediction.float() - target) ** 2).mean(dim=(1, 2))


class SceneModel(nn.Module):
    """Base class of every model; see the module docstring for the contract."""

    outputs: tuple = ()
    image_outputs: tuple = ()
    needs: tuple = ()
    starts_from: tuple = ()
    encode_optimises: bool = False
    per_scene_parameters: int = 0

    def use_run_folder(self, folder, tag: str) -> None:
        """Where this model may keep costly encodings (see the module docstring)."""

    def size_for_state(self, state: dict) -> None:
        """Resize per-scene tables to fit ``state`` (none here)."""

    @classmethod
    def completed_config(cls, config: dict, initial: dict) -> dict:
        """The ``model`` section of a run that starts from the checkpoint ``initial`` (a dict
        as ``checkpoint.load`` returns it), with what it leaves to that checkpoint filled in."""
        return config

    def initial_state(self, model_name: str, state: dict) -> dict:
        """The state dict a new run starts from, given the weights of a checkpoint of
        ``model_name`` (this model's own, or one of ``starts_from``)."""
        return state

    def encode(self, inputs: dict) -> dict:
        raise NotImplementedError

    def render(self, scene: dict, camera_pos, rays, near, far, outputs=None) -> dict:
        raise NotImplementedError

    def forward(self, batch: dict, step: int = 0):
        prediction = self.render(self.encode(encoder_inputs(batch)), batch["target_camera_pos"],
                                 batch["target_rays"], *near_far(batch), outputs=("segmentation",))
        loss = rgb_mse(prediction["rgb"], batch["target_pixels"]).mean()
        return loss, {"mse": loss.detach(), "prediction": prediction}
