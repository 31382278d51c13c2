"""Rendering images from a trained model, in chunks of rays so memory stays bounded."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from . import cameras


@torch.no_grad()
def render_rays(model, scene: dict, camera_pos: torch.Tensor, rays: torch.Tensor, chunk: int = 8192,
                autocast=None) -> dict:
    """Decode world-frame rays [B, R, 3] (camera_pos [B, R, 3]) in chunks of ``chunk`` rays
    per scene: {"rgb": [B, R, 3], ...every other output of the model...} on the CPU."""
    outputs = {}
    for start in range(0, rays.shape[1], chunk):
        piece = slice(start, start + chunk)
        with autocast if autocast is not None else contextlib.nullcontext():
            out = model.decode(scene, camera_pos[:, piece], rays[:, piece])
        for key, value in out.items():
            outputs.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(parts, 1) for key, parts in outputs.items()}


@torch.no_grad()
def render_cameras(model, scene: dict, c2w: np.ndarray, K: np.ndarray, height: int, width: int,
                   device, chunk: int = 8192) -> dict:
    """Render whole images of one scene (batch of 1) from cameras c2w [V, 4, 4], K [V, 3, 3]:
    {"rgb": [V, H, W, 3], ...} as float tensors on the CPU."""
    V = len(c2w)
    rays = torch.as_tensor(cameras.ray_directions(K, c2w, height, width), dtype=torch.float32)
    pos = torch.as_tensor(np.asarray(c2w)[:, :3, 3], dtype=torch.float32)[:, None, None].expand(V, height, width, 3)
    out = render_rays(model, scene, pos.reshape(1, -1, 3).to(device), rays.reshape(1, -1, 3).to(device), chunk)
    return {key: value.reshape((V, height, width) + value.shape[2:]) for key, value in out.items()}


ORBIT_DEGREES = (0, 60, 120, 180, 240, 300)


@torch.no_grad()
def orbit_grid(model, dataset, device, out_path, num_scenes: int = 4) -> np.ndarray:
    """The training visualisation: per validation scene, its input views, then renders from
    the first input camera turned about the scene's up axis by 0, 60, ..., 300 degrees
    (through the point the cameras look at), at input resolution; models that predict a
    segmentation add a panel per angle, coloured per slot. Written atomically to ``out_path``."""
    import imageio.v3 as iio

    from .atomic import atomic_output
    from .visualize import colorize_labels, grid, upscale

    model.eval()
    rows = []
    for index in range(min(num_scenes, len(dataset))):
        item = dataset[index]
        batch = {k: v[None].to(device) for k, v in item.items()}
        scene = model.encode(**batch)
        c2w0 = item["input_camera_to_world"][0].double().numpy()
        K = item["input_intrinsics"][0].double().numpy()
        H, W = item["input_images"].shape[-2:]
        all_c2w = dataset.scenes.read_views(int(item["scene_index"]), fields=("camera_to_world",))["camera_to_world"]
        center = cameras.look_at_center(all_c2w)
        up = cameras.up_direction(all_c2w, dataset.scenes.world_up)
        views = np.stack([cameras.orbit(c2w0, center, up, np.radians(a)) for a in ORBIT_DEGREES])
        out = render_cameras(model, scene, views, np.broadcast_to(K, (len(views), 3, 3)), H, W, device)
        inputs = [to_uint8(image.permute(1, 2, 0)) for image in item["input_images"]]
        row = inputs + [to_uint8(image) for image in out["rgb"]]
        if "segmentation" in out:
            slots = out["segmentation"].shape[-1]
            row += [colorize_labels(seg.argmax(-1).numpy() + 1, slots + 1) for seg in out["segmentation"]]
        rows.append([upscale(image, 96) for image in row])
    model.train()
    titles = [f"input {i}" for i in range(len(inputs))] + [f"{a} deg" for a in ORBIT_DEGREES]
    if "segmentation" in out:
        titles += [f"seg {a}" for a in ORBIT_DEGREES]
    picture = grid(rows, column_titles=titles)
    with atomic_output(out_path) as tmp:
        iio.imwrite(tmp, picture)
    return picture


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Float image [H, W, 3] in [0, 1] -> uint8."""
    return (image.float().clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def output_images(out: dict, index: int) -> dict:
    """uint8 pictures of one rendered view from render_cameras' output: rgb, segmentation
    (argmax slot, one colour per slot) and depth (turbo, near = red) when present."""
    from .visualize import colorize_depth, colorize_labels

    pictures = {"rgb": to_uint8(out["rgb"][index])}
    if "segmentation" in out:
        slots = out["segmentation"].shape[-1]
        pictures["segmentation"] = colorize_labels(out["segmentation"][index].argmax(-1).numpy() + 1, slots + 1)
    if "depth" in out:
        pictures["depth"] = colorize_depth(out["depth"][index].numpy())
    return pictures


@torch.no_grad()
def render_path(model, scene: dict, path: list, height: int, width: int, device, chunk: int = 8192):
    """Yield the uint8 pictures (see :func:`output_images`) of each camera of ``path``
    [(c2w, K)], one frame at a time."""
    model.eval()
    for c2w, K in path:
        out = render_cameras(model, scene, np.asarray(c2w)[None], np.asarray(K)[None], height, width, device, chunk)
        yield output_images(out, 0)
