"""Rendering images from a trained model, in chunks of rays so memory stays bounded."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from . import cameras
from .models.base import encode_for_inference, encoder_inputs


@torch.no_grad()
def render_rays(model, scene: dict, camera_pos: torch.Tensor, rays: torch.Tensor, near: torch.Tensor,
                far: torch.Tensor, chunk: int = 8192, autocast=None, outputs=None, image_size=None) -> dict:
    """Render world-frame rays [B, R, 3] (camera_pos [B, R, 3], near/far [B]) in chunks of
    ``chunk`` rays per scene: {"rgb": [B, R, 3], ...the ``outputs`` asked for (None: all
    the model has)...} on the CPU. ``image_size`` (H, W): the rays are whole images in
    row-major order; models with ``image_outputs`` then render whole images per chunk."""
    extra = {}
    if image_size is not None and getattr(model, "image_outputs", ()) and \
            (outputs is None or set(outputs) & set(model.image_outputs)):
        pixels = int(image_size[0]) * int(image_size[1])
        chunk, extra = max(1, chunk // pixels) * pixels, {"image_size": tuple(image_size)}
    parts = {}
    for start in range(0, rays.shape[1], chunk):
        piece = slice(start, start + chunk)
        with autocast if autocast is not None else contextlib.nullcontext():
            out = model.render(scene, camera_pos[:, piece], rays[:, piece], near, far, outputs=outputs, **extra)
        for key, value in out.items():
            parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values, 1) for key, values in parts.items()}


def render_cameras(model, scene: dict, c2w: np.ndarray, K: np.ndarray, height: int, width: int,
                   render_range, device, chunk: int = 8192, outputs=None, autocast=None) -> dict:
    """Render whole images of one scene (batch of 1) from cameras c2w [V, 4, 4], K [V, 3, 3]
    with its ``render_range`` (near, far): {"rgb": [V, H, W, 3], ...} as float CPU tensors."""
    V = len(c2w)
    rays = torch.as_tensor(cameras.ray_directions(K, c2w, height, width), dtype=torch.float32)
    pos = torch.as_tensor(np.asarray(c2w)[:, :3, 3], dtype=torch.float32)[:, None, None].expand(V, height, width, 3)
    near, far = (torch.tensor([float(x)], device=device) for x in render_range)
    out = render_rays(model, scene, pos.reshape(1, -1, 3).to(device), rays.reshape(1, -1, 3).to(device), near, far,
                      chunk, autocast, outputs=outputs, image_size=(height, width))
    return {key: value.reshape((V, height, width) + value.shape[2:]) for key, value in out.items()}


ORBIT_DEGREES = (0, 60, 120, 180, 240, 300)


def orbit_grid(model, dataset, device, out_path, num_scenes: int = 4, autocast=None) -> np.ndarray:
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
        scene = encode_for_inference(model, {k: v[None].to(device) for k, v in encoder_inputs(item).items()})
        c2w0 = item["input_camera_to_world"][0].double().numpy()
        K = item["input_intrinsics"][0].double().numpy()
        H, W = item["input_images"].shape[-2:]
        all_c2w = dataset.scenes.read_views(int(item["scene_index"]), fields=("camera_to_world",))["camera_to_world"]
        center = cameras.look_at_center(all_c2w)
        up = cameras.up_direction(all_c2w, dataset.scenes.world_up)
        views = np.stack([cameras.orbit(c2w0, center, up, np.radians(a)) for a in ORBIT_DEGREES])
        out = render_cameras(model, scene, views, np.broadcast_to(K, (len(views), 3, 3)), H, W,
                             item["render_range"].tolist(), device, outputs=("segmentation",), autocast=autocast)
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


def output_images(out: dict, index: int, class_names=None) -> dict:
    """uint8 pictures of one rendered view from render_cameras' output: rgb, segmentation
    (argmax slot, one colour per slot), semantic (see :func:`semantic_picture`), depth
    (turbo, near = red) and slots (each slot's own render, in a grid) when the model
    predicts them."""
    from .visualize import colorize_depth, colorize_labels

    pictures = {"rgb": to_uint8(out["rgb"][index])}
    if "segmentation" in out:
        slots = out["segmentation"].shape[-1]
        pictures["segmentation"] = colorize_labels(out["segmentation"][index].argmax(-1).numpy() + 1, slots + 1)
    if "semantic" in out:
        pictures["semantic"] = semantic_picture(out["semantic"][index], class_names)
    if "depth" in out:
        pictures["depth"] = colorize_depth(out["depth"][index].numpy())
    if "slot_rgb" in out:
        pictures["slots"] = slot_grid([to_uint8(image) for image in out["slot_rgb"][index].unbind(-2)])
    return pictures


def semantic_picture(scores: torch.Tensor, class_names=None) -> np.ndarray:
    """Class scores [H, W, C] -> uint8 [H, W + L, 3]: the first W columns are the argmax
    class of each pixel in its colour (:func:`~scenetools.visualize.label_palette`, class 0
    white), the last L a legend strip naming the C classes (:func:`legend_names`)."""
    from .visualize import WHITE, colorize_labels, label_palette, legend

    count = scores.shape[-1]
    image = colorize_labels(scores.argmax(-1).numpy(), count, WHITE)
    return np.concatenate([image, legend(legend_names(class_names, count), label_palette(count, WHITE),
                                         image.shape[0])], 1)


def legend_names(class_names, count: int) -> list:
    """``count`` class names: the scene file's ``semantic_classes`` where it has them, else
    "class k"."""
    return [str(class_names[k]) if class_names is not None and k < len(class_names) else f"class {k}"
            for k in range(count)]


def slot_grid(images: list) -> np.ndarray:
    """Per-slot pictures [H, W, 3] in a grid of two rows (one for up to three slots)."""
    rows = 1 if len(images) <= 3 else 2
    columns = -(-len(images) // rows)
    images = images + [np.zeros_like(images[0])] * (rows * columns - len(images))
    return np.concatenate([np.concatenate(images[r * columns:(r + 1) * columns], 1) for r in range(rows)], 0)


def render_path(model, scene: dict, path: list, height: int, width: int, render_range, device, chunk: int = 8192,
                outputs=None, class_names=None, points: bool = False, autocast=None):
    """Yield the uint8 pictures (see :func:`output_images`) of each camera of ``path``
    [(c2w, K)], one frame at a time, with the model ``outputs`` asked for (None: all; under
    ``autocast`` if given);
    with ``points``, also "pointcloud": the frame's surface points
    (:func:`scenetools.pointcloud.surface_points`, needs ``depth``)."""
    from .pointcloud import surface_points

    model.eval()
    for c2w, K in path:
        c2w, K = np.asarray(c2w)[None], np.asarray(K)[None]
        out = render_cameras(model, scene, c2w, K, height, width, render_range, device, chunk, outputs, autocast)
        pictures = output_images(out, 0, class_names)
        if points:
            rays = cameras.ray_directions(K, c2w, height, width)[0].reshape(-1, 3)  # as render_cameras
            per_ray = {key: value[0].flatten(0, 1) for key, value in out.items()}  # [H * W, ...]
            pictures["pointcloud"] = surface_points(c2w[0, :3, 3], rays, per_ray, render_range)
        yield pictures
