"""SRN: Scene Representation Networks (Sitzmann, Zollhöfer, Wetzstein 2019), layer for layer
as vsitzmann/scene-representation-networks has it (``formats``-level notes:
``/work/shared/reference/srn-semantic-obsurf.md`` §2).

An auto-decoder: no encoder, one latent code z (256-d, N(0, 0.01²)) per training scene,
trained with the networks. A hypernetwork maps z to the weights of the scene function φ, an
MLP from a world point to a 256-d feature (4 predicted layers 3 → 256 → 256 → 256 → 256, each
linear + LayerNorm without affine + ReLU). An LSTM ray marcher walks each ray through φ for
10 steps from 0.05 along it; the pixel generator (5 × (Linear 256 + LayerNorm + ReLU), then
Linear 256 → 3) turns φ at the final point into a colour in [-1, 1].

Loss, as the reference: 200 · MSE of the colour in [-1, 1] + 1 · mean(z²) + 1e-3 · 10⁴ ·
mean(min(distance, 0)²).

Scenes are identified by ``scene_key`` (``scenetools.data.scene_key``: name + first camera),
never by row, so a code is never picked by a row index of another file. The trainer sizes the
code table for the training split (``use_training_scenes``); the table and the keys are saved
with the weights (``latent_codes.weight`` [N, D], ``scene_keys`` [N]).

For a scene without a code, ``encode`` fits one to the input views with the networks frozen
(the reference's few-shot protocol: one-shot view 64, two-shot views 64 and 104, chosen by the
data config's ``evaluation`` section or ``--input-views``), when gradients are enabled and the
model is not training (``encode_for_inference``). Fitting minimises the training loss over
``fit.steps`` Adam steps at ``fit.lr`` on ``fit.rays`` random rays of the input views per step,
all scenes of a batch at once (their codes are independent: per-scene losses are summed).
Fitted codes are kept in ``RUN/latents/<checkpoint>-step<N>.pt`` (``use_run_folder``) per
scene key, input views and fitting settings, and reused.

Differences from the reference: rays are ours (world-frame unit directions through pixel
centres) and marching starts 0.05 *along the ray* (the reference starts at camera-space
z = 0.05, i.e. 0.05 / cos of the ray's angle to the optical axis); the depth penalty and the
``depth`` output use that distance along the ray (same sign as the reference's camera z, so
the penalty vanishes in the same places); the start is jittered (N(0, 5e-4)) only in training;
fitting samples rays of the input views instead of whole images, and optimises only the codes
(the reference hands every parameter to Adam with the networks' gradients off).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_output
from ..errors import BadInput
from ..progress import progress
from .base import SceneModel, encoder_inputs
from .layers import HyperMLP, LSTMRayMarcher, fc_block

#: Latent fitting defaults (overridden by the config's ``model.fit``).
FIT_DEFAULTS = {"steps": 500, "lr": 1.0e-3, "rays": 4096, "seed": 0}


class SRN(SceneModel):
    """SRN. Config keys are the reference's sizes (defaults: the released models)."""

    outputs = ("depth",)
    encode_optimises = True

    def __init__(self, latent_dim: int = 256, phi_hidden: int = 256, phi_layers: int = 4, hyper_hidden: int = 256,
                 hyper_hidden_layers: int = 1, pixel_hidden: int = 256, pixel_layers: int = 5, lstm_hidden: int = 16,
                 tracing_steps: int = 10, initial_distance: float = 0.05, initial_distance_std: float = 5e-4,
                 rgb_weight: float = 200.0, latent_weight: float = 1.0, depth_weight: float = 1e-3,
                 fit: dict | None = None):
        super().__init__()
        unknown = set(fit or {}) - set(FIT_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown fit keys {sorted(unknown)} (known: {', '.join(FIT_DEFAULTS)})")
        self.fit = {**FIT_DEFAULTS, **(fit or {})}
        self.latent_dim, self.per_scene_parameters = latent_dim, latent_dim
        self.initial_distance, self.initial_distance_std = initial_distance, initial_distance_std
        self.weights = {"rgb": rgb_weight, "latent": latent_weight, "depth": depth_weight}
        self.latent_codes = nn.Embedding(0, latent_dim)
        self.register_buffer("scene_keys", torch.zeros(0, dtype=torch.int64))
        self.hypernetwork = HyperMLP(latent_dim, hyper_hidden, hyper_hidden_layers, 3, phi_hidden, phi_hidden,
                                     phi_layers)
        self.ray_marcher = LSTMRayMarcher(phi_hidden, lstm_hidden, tracing_steps)
        self.pixel_generator = fc_block(phi_hidden, pixel_hidden, pixel_layers, 3)
        self.cache_path, self._cache = None, None

    # ------------------------------------------------------------------ the code table

    def use_training_scenes(self, keys: torch.Tensor) -> None:
        """One fresh code (N(0, 0.01²)) per training scene key [N]."""
        keys = torch.as_tensor(keys, dtype=torch.int64).reshape(-1)
        if len(torch.unique(keys)) != len(keys):
            raise BadInput("two training scenes have the same name and first camera: SRN cannot tell their "
                           "codes apart; give the scenes distinct names")
        old = self.latent_codes.weight
        self.latent_codes = nn.Embedding(len(keys), self.latent_dim, device=old.device, dtype=old.dtype)
        nn.init.normal_(self.latent_codes.weight, mean=0.0, std=0.01)
        self.scene_keys = keys.to(old.device)

    def size_for_state(self, state: dict) -> None:
        """Resize an empty code table to a state dict's (a checkpoint being loaded). A table
        already sized (a run being resumed) must hold the same scenes."""
        keys = state.get("scene_keys")
        if keys is None:
            return
        if len(self.scene_keys) and not torch.equal(self.scene_keys.cpu(), keys.cpu()):
            raise BadInput("this run's latent codes belong to other training scenes than the data's train split "
                           "(the data changed); train into another --out folder")
        if len(self.scene_keys) != len(keys):
            self.use_training_scenes(keys)

    def code_rows(self, keys: torch.Tensor) -> torch.Tensor:
        """[B] row of each scene key in the code table, -1 where it has none."""
        match = keys[:, None] == self.scene_keys[None, :]
        return torch.where(match.any(1), match.int().argmax(1), torch.full_like(keys, -1))

    # ------------------------------------------------------------------ the interface

    def encode(self, inputs: dict) -> dict:
        """{"code": [B, D]}: the training code of each scene (by ``scene_key``), or one fitted to
        the input views (``input_images`` [B, I, 3, H, W] in [0, 1], ``input_rays`` [B, I, H, W, 3],
        ``input_camera_pos`` [B, I, 3]) for a scene the model has not seen."""
        keys = inputs["scene_key"].reshape(-1)
        rows = self.code_rows(keys)
        missing = rows < 0
        if missing.any() and (self.training or not torch.is_grad_enabled() or self.fit["steps"] < 1):
            raise self._no_code(inputs, missing)
        code = self.latent_codes(rows.clamp(min=0))
        if not self.training:
            code = code.detach()
        if missing.any():
            code = code.clone()
            code[missing] = self.fitted_codes({k: v[missing] for k, v in inputs.items()})
        return {"code": code}

    def _no_code(self, inputs: dict, missing: torch.Tensor) -> BadInput:
        row = int(inputs["scene_index"].reshape(-1)[missing][0]) if "scene_index" in inputs else "?"
        if self.training:
            return BadInput(f"scene {row} of the data has no latent code in this run (its codes are for "
                            f"{len(self.scene_keys)} other training scenes); train into another --out folder")
        return BadInput(f"scene {row} of the data has no latent code (SRN keeps one per training scene, "
                        f"{len(self.scene_keys)} here): evaluate a training split, or let it fit one to the input "
                        f"views with model.fit.steps > 0 (e.g. --set model.fit.steps=500)")

    def render(self, scene: dict, camera_pos, rays, near, far, outputs=None) -> dict:
        """Ray-march world-frame rays (``camera_pos``, ``rays`` [B, R, 3]; near/far unused: SRN
        marches from ``initial_distance``) -> {"rgb" [B, R, 3] in [0, 1] (not clamped),
        "depth" [B, R] (distance along the ray of the final point)}."""
        colour, distance = self.march(scene["code"], camera_pos, rays)
        return {"rgb": colour[..., :3] * 0.5 + 0.5, "depth": distance}

    def march(self, code: torch.Tensor, camera_pos: torch.Tensor, rays: torch.Tensor) -> tuple:
        """(colour [B, R, 3] in [-1, 1], distance along the ray [B, R]) of each ray."""
        features, distance = self.surface(code, camera_pos, rays)
        return self.pixel_generator(features), distance

    def surface(self, code: torch.Tensor, camera_pos: torch.Tensor, rays: torch.Tensor) -> tuple:
        """(φ's feature [B, R, phi_hidden] at the point each ray marches to, that point's
        distance along the ray [B, R])."""
        # in float32 also under autocast: its last layers hold 50M weights, and casting those
        # to bf16 and their gradients back (every step) costs far more than the four rows
        # of codes it multiplies
        with torch.autocast(code.device.type, enabled=False):
            phi_params = self.hypernetwork(code.float())
        phi = lambda points: HyperMLP.apply(phi_params, points)  # noqa: E731
        start = torch.full(rays.shape[:2], self.initial_distance, device=rays.device, dtype=rays.dtype)
        if self.training and self.initial_distance_std:
            start = start + torch.randn_like(start) * self.initial_distance_std
        points, distance = self.ray_marcher(phi, camera_pos, rays, start)
        return phi(points), distance

    def forward(self, batch: dict, step: int = 0):
        scene = self.encode(encoder_inputs(batch))
        colour, distance = self.march(scene["code"], batch["target_camera_pos"], batch["target_rays"])
        loss, logs = self.loss(colour, distance, scene["code"], batch["target_pixels"])
        logs["prediction"] = {"rgb": colour[..., :3].detach() * 0.5 + 0.5, "depth": distance.detach()}
        return loss.mean(), logs

    def loss(self, colour, distance, code, target) -> tuple:
        """Per-scene loss [B] and logs: ``rgb_weight`` · MSE in [-1, 1] + ``latent_weight`` ·
        mean(z²) + ``depth_weight`` · 10⁴ · mean(min(distance, 0)²); ``target`` in [0, 1]."""
        image = ((colour - self.colour_target(target)) ** 2).mean(dim=(1, 2))
        latent = (code ** 2).mean(dim=1)
        depth = (distance.clamp(max=0) ** 2).mean(dim=1) * 10000
        w = self.weights
        loss = w["rgb"] * image + w["latent"] * latent + w["depth"] * depth
        logs = {"mse": image.detach().mean() / 4, "image_loss": image.detach().mean(),
                "latent_loss": latent.detach().mean(), "depth_loss": depth.detach().mean()}
        return loss, logs

    def colour_target(self, target: torch.Tensor) -> torch.Tensor:
        """What the pixel generator is trained to output for colours ``target`` [..., 3] in
        [0, 1]: the same in [-1, 1]."""
        return target * 2 - 1

    # ------------------------------------------------------------------ test-time fitting

    def use_run_folder(self, folder, tag: str) -> None:
        self.cache_path, self._cache = Path(folder) / "latents" / f"{tag}.pt", None

    def cache_entry(self, key: int, views) -> str:
        f = self.fit
        return f"{key}:views={','.join(map(str, views))}:steps={f['steps']}:lr={f['lr']:g}:rays={f['rays']}:seed={f['seed']}"

    def fitted_codes(self, inputs: dict) -> torch.Tensor:
        """Codes [B, D] fitted to the input views of B unseen scenes (cached ones reused)."""
        cache = self._load_cache()
        names = [self.cache_entry(int(k), v.tolist()) for k, v in zip(inputs["scene_key"].reshape(-1),
                                                                    inputs["input_views"])]
        todo = [i for i, name in enumerate(names) if name not in cache]
        if todo:
            codes = self.fit_codes({k: v[todo] for k, v in inputs.items()})
            for i, code in zip(todo, codes):
                cache[names[i]] = code.detach().cpu()
            self._save_cache()
        return torch.stack([cache[name] for name in names]).to(self.latent_codes.weight.device)

    def fit_codes(self, inputs: dict) -> torch.Tensor:
        """Fit fresh codes [B, D] to the input views, networks frozen (only the codes get
        gradients); per-scene losses are summed so the scenes do not interact."""
        images = inputs["input_images"]  # [B, I, 3, H, W]
        B = images.shape[0]
        target = images.permute(0, 1, 3, 4, 2).reshape(B, -1, 3)
        rays = inputs["input_rays"].reshape(B, -1, 3)
        origins = inputs["input_camera_pos"][:, :, None, None].expand(inputs["input_rays"].shape).reshape(B, -1, 3)
        generator = torch.Generator().manual_seed(int(self.fit["seed"]) + int(inputs["scene_key"].sum()) % 2**31)
        code = (torch.randn(B, self.latent_dim, generator=generator) * 0.01).to(images.device).requires_grad_()
        optimizer = torch.optim.Adam([code], lr=self.fit["lr"])
        count = min(self.fit["rays"], rays.shape[1])
        with torch.enable_grad(), progress(total=self.fit["steps"], desc=f"fitting {B} latent code"
                                           + "s" * (B > 1), unit="steps") as bar:
            for _ in range(self.fit["steps"]):
                pick = torch.randperm(rays.shape[1], generator=generator)[:count].to(images.device)
                colour, distance = self.march(code, origins[:, pick], rays[:, pick])
                loss, logs = self.loss(colour, distance, code, target[:, pick])
                code.grad, = torch.autograd.grad(loss.sum(), code)
                optimizer.step()
                bar.update(1)
                bar.set_postfix({"mse": f"{float(logs['mse']):.4g}"}, refresh=False)
        return code.detach()

    def _load_cache(self) -> dict:
        if self._cache is None:
            self._cache = {}
            if self.cache_path is not None and self.cache_path.is_file():
                try:
                    saved = torch.load(self.cache_path, map_location="cpu", weights_only=True)
                    self._cache = dict(zip(saved["entries"], saved["codes"]))
                except (RuntimeError, KeyError, OSError, EOFError, ValueError):
                    self._cache = {}  # unreadable: fit again, and overwrite it
        return self._cache

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        entries = sorted(self._cache)
        with atomic_output(self.cache_path) as tmp:
            torch.save({"format": "scenetools.latents", "format_version": 1, "entries": entries,
                        "codes": torch.stack([self._cache[e] for e in entries])}, tmp)

    # ------------------------------------------------------------------ reference weights

    @classmethod
    def from_reference(cls, reference_state: dict) -> dict:
        """Our state dict from the reference's checkpoint ({"model": state dict, "optimizer"}
        as custom_save writes it, or the bare state dict). The reference does not record which
        scene a code belongs to: its codes load with placeholder keys (-1, -2, ...) that match
        no scene, so every scene evaluated is fitted."""
        state = reference_state.get("model", reference_state)
        out, unknown = {}, []
        for key, value in state.items():
            name = _reference_name(key)
            if name is None:
                unknown.append(key)
            else:
                out[name] = value
        if unknown:
            raise BadInput(f"not an SRN checkpoint: unknown keys {unknown[:3]}")
        if "latent_codes.weight" in out:
            out["scene_keys"] = -torch.arange(1, len(out["latent_codes.weight"]) + 1, dtype=torch.int64)
        return out


def _reference_name(key: str) -> str | None:
    """Our name of a reference key (None: not an SRN key). The reference's FCBlock layer k
    (``net.k.net.0`` Linear, ``net.k.net.1`` LayerNorm) sits at 3k and 3k + 1 of our flat
    Sequential, and its last Linear at 3L."""
    if key == "latent_codes.weight" or re.fullmatch(r"ray_marcher\.(lstm|out_layer)\.\w+", key):
        return key
    match = re.fullmatch(r"hyper_phi\.layers\.(\d+)\.hyper_linear\.hypo_params\.net\.(\d+)\.(?:net\.(\d)\.)?(weight|bias)",
                         key)
    if match:
        layer, block, part, kind = match.groups()
        return f"hypernetwork.layers.{layer}.params.{3 * int(block) + int(part or 0)}.{kind}"
    match = re.fullmatch(r"pixel_generator\.net\.(\d+)\.(?:net\.(\d)\.)?(weight|bias)", key)
    if match:
        block, part, kind = match.groups()
        return f"pixel_generator.{3 * int(block) + int(part or 0)}.{kind}"
    return None
