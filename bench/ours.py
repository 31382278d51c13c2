"""Our side of the training-step bench: the model from our preset config, our trainer's step,
and our batch layout made from the reference's batches, so that both train on the same numbers.

From a reference batch (see bench/references.py) to ours:

* SRT's dataset gives the input camera's canonical frame and the ``transform`` into it; ours
  takes the world frame (and makes the canonical frame itself), so positions and rays are
  mapped back with the inverse of that transform. OSRT's dataset is in the world frame.
* Cameras: ``input_camera_to_world`` and ``input_intrinsics`` are what our ObSuRF converter
  writes for a camera at that position (``scenetools.sources.obsurf``), the intrinsics
  strided as our loader strides them.
* ObSuRF: the reference's dataset samples each ray's surface point (depth + U[0, 0.07)) and
  empty point (importance-sampled); ours samples the same in its objective with
  ``torch.rand_like``. Those draws are recovered from the reference's points and replayed
  (:func:`replayed_rand_like`), so both objectives see the same points. The render range is
  (0.035, 40): every depth in the data (sky is stored as 39.9994) is then a surface, as the
  reference treats it (our converter would mark it ``inf``, a backdrop at far).
* SRN: a reference item is one whole image of a car (pixels in [-1, 1], camera-to-world
  ``pose``, ``intrinsics`` rescaled to the image size, integer pixel coordinates ``uv``, the
  car's ``instance_idx``). Ours: the car's ``scene_key`` is the placeholder key our
  ``from_reference`` gives code row ``instance_idx``; the target rays are our rays
  (``scenetools.cameras.rays_through``) through the centres of the same pixels with our SRN
  converter's intrinsics (principal point + 0.5, ``scenetools.sources.srn``), which are the
  reference's rays (``ray_agreement`` measures the largest difference); pixels in [0, 1].
"""
from __future__ import annotations

import contextlib

import torch

from scenetools import cameras
from scenetools import config as configs
from scenetools.data import stride_intrinsics
from scenetools.device import autocast, keep_freed_memory
from scenetools.models import build_model
from scenetools.sources.obsurf import RENDER_RANGE, camera_to_world, obsurf_intrinsics
from scenetools.sources.srn import NEAR_FAR as SRN_NEAR_FAR
from scenetools.sources.srn import PIXEL_CENTRE_SHIFT
from scenetools.train import BadSteps, clip_gradients, make_optimizer

PRESETS = {"srt": "srt/clevr3d", "osrt": "osrt/clevr3d", "obsurf": "obsurf/clevr3d", "srn": "srn/cars"}
CPU = torch.device("cpu")
OBSURF_FAR = 40.0  # past every stored depth (65535 -> 39.9994)


def run_config(name: str) -> dict:
    """Our preset config of model ``name`` at the reference CLEVR3D size."""
    return configs.resolve(name, PRESETS[name])


def build(name: str, reference_state: dict | None = None, scene_keys: torch.Tensor | None = None):
    """(model, config): ours, with the reference's initial weights mapped by our
    ``from_reference`` when given (else our own initialisation from seed 0). SRN's code
    table is sized like the reference's, or holds one code per training scene key given."""
    config = run_config(name)
    torch.manual_seed(0)
    model = build_model(name, config["model"])
    if reference_state is not None:
        state = type(model).from_reference(reference_state)
        if hasattr(model, "size_for_state"):
            model.size_for_state(state)
        model.load_state_dict(state)
    elif scene_keys is not None:
        model.use_training_scenes(scene_keys)
    return model, config


class Trainer:
    """Our trainer's step (scenetools.train.train): forward under the run's precision,
    zero_grad, backward, grad-norm clip (the config's ``grad_clip``, else none), and the
    optimizer step unless the bad-step guard skips it; Adam from ``make_optimizer`` (fused).
    Like scene-train on the CPU, the process keeps the memory it frees (``keep_freed_memory``)."""

    def __init__(self, model, config: dict, precision: str):
        keep_freed_memory()
        self.model, self.training = model.train(), config["training"]
        self.optimizer = make_optimizer(model, self.training["lr"], CPU)
        self.precision = autocast(CPU, precision)
        self.bad_steps = BadSteps(self.training)

    def step(self, batch: dict, step: int) -> float:
        with self.precision:
            loss, _ = self.model(batch, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.bad_steps.check(step, clip_gradients(self.model, self.training.get("grad_clip"))):
            self.optimizer.step()
        return loss.item()


# ----------------------------------------------------------------------------- reference batches

def _cameras(camera_pos: torch.Tensor, height: int) -> tuple:
    """(camera_to_world [B, 1, 4, 4], intrinsics [B, 1, 3, 3]) of ObSuRF cameras at camera_pos
    [B, 3], for input images ``height`` rows high (240 / stride)."""
    c2w = torch.tensor(camera_to_world(camera_pos.double().numpy()), dtype=torch.float32)
    K = torch.tensor(stride_intrinsics(obsurf_intrinsics(), 240 // height), dtype=torch.float32)
    return c2w[:, None], K.expand(len(camera_pos), 1, 3, 3)


def _to_world(transform: torch.Tensor, points: torch.Tensor, translate: bool) -> torch.Tensor:
    """Inverse of the reference's world -> canonical ``transform`` [B, 4, 4] on [B, ..., 3]."""
    R, t = transform[:, :3, :3].double(), transform[:, :3, 3].double()
    x = points.double()
    if translate:
        x = x - t.reshape((len(t),) + (1,) * (x.dim() - 2) + (3,))
    return torch.einsum("bji,b...j->b...i", R, x).float()


def _srt_batch(batch: dict) -> tuple:
    """SRT/OSRT reference batch -> (our batch, None); SRT's canonical frame back to world."""
    pos, rays = batch["input_camera_pos"], batch["input_rays"]
    target_pos, target_rays = batch["target_camera_pos"], batch["target_rays"]
    if "transform" in batch:
        T = batch["transform"]
        pos, target_pos = _to_world(T, pos, True), _to_world(T, target_pos, True)
        rays, target_rays = _to_world(T, rays, False), _to_world(T, target_rays, False)
    c2w, K = _cameras(pos[:, 0], rays.shape[2])
    B = len(pos)
    ours = {"input_images": batch["input_images"], "input_camera_pos": pos, "input_rays": rays,
            "input_camera_to_world": c2w, "input_intrinsics": K, "target_camera_pos": target_pos,
            "target_rays": target_rays, "target_pixels": batch["target_pixels"],
            "render_range": torch.tensor([RENDER_RANGE], dtype=torch.float32).expand(B, 2)}
    return ours, None


def _obsurf_batch(batch: dict, config: dict) -> tuple:
    """ObSuRF reference batch -> (our batch, the draws that give the reference's points)."""
    camera_pos = batch["camera_pos"]
    c2w, K = _cameras(camera_pos, batch["inputs"].shape[-2])
    ours = {"input_images": batch["inputs"][:, None], "input_camera_pos": camera_pos[:, None],
            "input_rays": batch["input_rays"][:, None], "input_camera_to_world": c2w, "input_intrinsics": K,
            "target_camera_pos": batch["query_camera_pos"], "target_rays": batch["rays"],
            "target_pixels": batch["values"], "target_depth": batch["depths"],
            "render_range": torch.tensor([[RENDER_RANGE[0], OBSURF_FAR]]).expand(len(camera_pos), 2)}
    return ours, point_draws(batch, config["model"]["loss"])


def point_draws(batch: dict, loss: dict) -> list:
    """The uniform draws [B, P] that our ObSuRF objective takes from ``torch.rand_like``, in its
    order (surface noise, near-or-far choice, position in the range), recovered from the
    reference dataset's surface and empty points."""
    cutoff = loss["importance_cutoff"]
    origin, rays, depth = (batch[k].double() for k in ("query_camera_pos", "rays", "depths"))

    def along(points):
        return ((points.double() - origin) * rays).sum(-1)

    noise = (along(batch["surface_points"]) - depth) / loss["depth_noise"]
    near = batch["empty_points_weights"].double() < depth  # 2 (1 - cutoff) depth, against 2 cutoff depth
    fraction = along(batch["empty_points"]) / depth.clamp_min(1e-9)
    position = torch.where(near, (fraction - cutoff) / (1 - cutoff), fraction / cutoff)
    choice = torch.where(near, 0.25, 0.75)  # ours: near when the draw is < 0.5
    return [x.clamp(0, 1 - 1e-7).float() for x in (noise, choice, position)]


class ReplayError(RuntimeError):
    pass


@contextlib.contextmanager
def replayed_rand_like(draws: list | None):
    """``torch.rand_like`` returns ``draws`` in turn (each checked for shape), and all of them
    must be used; with None, nothing changes."""
    if draws is None:
        yield
        return
    queue, real = list(draws), torch.rand_like

    def rand_like(tensor, *args, **kwargs):
        if not queue or queue[0].shape != tensor.shape:
            raise ReplayError(f"torch.rand_like({tuple(tensor.shape)}) does not match the draws to replay")
        return queue.pop(0).to(tensor.dtype)

    torch.rand_like = rand_like
    try:
        yield
    finally:
        torch.rand_like = real
    if queue:
        raise ReplayError(f"{len(queue)} of the draws to replay were not used")


def _srn_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
    """Our K [B, 3, 3] from the reference's rescaled 4x4 intrinsics [B, 4, 4]: the principal
    point moved by our SRN converter's half pixel (pixel centres)."""
    K = intrinsics[:, :3, :3].double().clone()
    K[:, :2, 2] += PIXEL_CENTRE_SHIFT
    return K


def _srn_batch(batch: tuple) -> tuple:
    """SRN reference batch (model_input, ground_truth) -> (our batch, None)."""
    model_input, ground_truth = batch
    pose, uv = model_input["pose"].double(), model_input["uv"].double()
    B, N, _ = uv.shape
    rays = cameras.rays_through(_srn_intrinsics(model_input["intrinsics"]).numpy(), pose.numpy(),
                                uv.numpy() + PIXEL_CENTRE_SHIFT)
    ours = {"scene_key": -(model_input["instance_idx"].long() + 1),  # from_reference's placeholder keys
            "target_camera_pos": pose[:, None, :3, 3].float().expand(B, N, 3).contiguous(),
            "target_rays": torch.tensor(rays, dtype=torch.float32), "target_pixels": ground_truth["rgb"] * 0.5 + 0.5,
            "render_range": torch.tensor([SRN_NEAR_FAR["cars"]], dtype=torch.float32).expand(B, 2)}
    return ours, None


def ray_agreement(batches: list, ours: list) -> float:
    """Largest difference between our target rays and the rays SRN's own geometry gives its
    batch (``geometry.get_ray_directions``: the pixel (u, v) lifted to camera depth 1 with
    the intrinsics, taken to the world by the pose, minus the camera position, normalised),
    written out here in float64: 0 up to float32 rounding when our converter's convention
    keeps the reference's rays."""
    worst = 0.0
    for (model_input, _), mine in zip(batches, ours):
        pose, uv, K = model_input["pose"].double(), model_input["uv"].double(), model_input["intrinsics"].double()
        x = (uv[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
        y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
        camera = torch.stack([x, y, torch.ones_like(x)], -1)
        world = torch.einsum("bij,bnj->bni", pose[:, :3, :3], camera)
        directions = torch.nn.functional.normalize(world, dim=-1)
        worst = max(worst, float((directions - mine["target_rays"].double()).abs().max()))
    return worst


def from_reference_batches(name: str, batches: list, config: dict) -> tuple:
    """(our batches, draws or None for each) from the reference's batches."""
    convert = {"obsurf": lambda b: _obsurf_batch(b, config), "srn": _srn_batch}.get(name, _srt_batch)
    pairs = [convert(b) for b in batches]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def frame_agreement(batches: list, ours: list) -> float | None:
    """Largest difference between the reference's world -> canonical transform and the inverse
    of our camera_to_world (None without a canonical frame): 0 up to rounding when our camera
    convention is the reference's."""
    if "transform" not in batches[0]:
        return None
    worst = 0.0
    for reference, mine in zip(batches, ours):
        inverse = torch.linalg.inv(mine["input_camera_to_world"][:, 0].double())
        worst = max(worst, float((inverse - reference["transform"].double()).abs().max()))
    return worst


# ----------------------------------------------------------------------------- our own batches

def _own_dataset(name: str, folder, work, rays: int | None = None, resolution: int | None = None):
    """Our training dataset over the data folder, converted once into ``work`` by
    ``scene-convert --from obsurf`` (or ``--from srn``), with the preset's data section."""
    from scenetools import progress
    from scenetools.convert import convert
    from scenetools.data import make_dataset
    from scenetools.scenefile import SceneFile
    from scenetools.sources.obsurf import ObsurfSource
    from scenetools.sources.srn import SRNSource

    progress.configure(quiet=True)
    kind = "srn" if name == "srn" else "obsurf"
    path = work / f"scenes-{kind}.h5"
    if not path.exists():
        convert(SRNSource(folder) if kind == "srn" else ObsurfSource(folder), path, codec="raw")
    data = dict(run_config(name)["data"], **({"num_rays": rays} if rays else {}),
                **({"resolution": resolution} if resolution else {}))
    return make_dataset(SceneFile(path), "train", data, seed=0)


def training_keys(name: str, work) -> torch.Tensor | None:
    """SRN: the scene keys of our training split (one code each), from the file that
    :func:`own_batches` converted; other models: None."""
    if name != "srn":
        return None
    from scenetools.data import scene_keys
    dataset = _own_dataset(name, None, work)
    return scene_keys(dataset.scenes, dataset.scene_indices)


def own_batches(name: str, folder, work, count: int, batch_size: int, rays: int, resolution: int | None = None) -> list:
    """``count`` batches through our own pipeline: the folder converted by ``scene-convert
    --from obsurf`` (``--from srn``) and read by our loader with the preset's data section (at
    ``resolution``, SRN's stage)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(_own_dataset(name, folder, work, rays, resolution), batch_size=batch_size)
    batches = []
    while len(batches) < count:
        batches += list(loader)
    return batches[:count]

