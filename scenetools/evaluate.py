"""Scoring a trained model on full target images of held-out scenes (``scene-eval``).

Items follow the model's own view protocol (the config it was trained with), so numbers are
comparable with the references: NMR and CLEVR3D evaluate every (scene, input view) pair, MSN
one set of input views per scene. Every target pixel is rendered, in chunks.

Per item it computes PSNR (over all target pixels, and over object pixels, instance id != 0,
when the data has instance ids), SSIM per target view, and two baselines on the same pixels:
the mean colour of the input views, and, for synthetic data, the background-only render of
the same cameras (ground and sky without the objects). Models that segment, on data with
instance ids, get ARI and FG-ARI over the target views, on a render of the first input view
as the ObSuRF reference scores it (``_input``), and, for models that segment 3D points, at
the ground-truth surface points (``_3d``: the slot with the highest density there). Models
that predict depth get its mean absolute error against the data's depth (``depth_mae``).
Models that predict classes (``semantic``), on data with part labels, get semantic SRN's
mIoU per target view (``miou``, averaged over the item's views) and its category mIoU over
all items (``category_miou``), next to the majority class per pixel of the ``train``
split's labels (``baseline_majority_*``). Every item is scored on its own, so the reference
``test.py``'s PSNR with batches of more than one view (always the batch's first) has no
counterpart here.

The model sees only the input views (``models.base.encoder_inputs``): never the target
pixels, depths or labels it is scored on.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image

from .atomic import atomic_output, safe_name
from . import cameras, sources
from .data import make_dataset, nearest_pixels
from .errors import BadInput
from .lpips import MIN_SIZE as LPIPS_MIN_SIZE
from .metrics import (SSIM_WINDOW, adjusted_rand_index, category_mean_iou, iou_counts, majority_labels,
                      masked_mse, mean_iou, mean_std, psnr_from_mse, ssim)
from .models.base import encode_for_inference, encoder_inputs, near_far
from .progress import progress
from .render import render_rays, to_uint8
from .scenefile import SceneFile
from .visualize import colorize_labels, grid, turbo, upscale
from .device import autocast, to_device


def evaluation_items(dataset, max_scenes: int | None, per_scene: int | None = None) -> list:
    """Item indices of the first ``max_scenes`` scenes of the split: all their items (the
    references' protocol: every input view in turn for NMR and CLEVR3D), or the first
    ``per_scene`` of each."""
    scenes = list(dict.fromkeys(scene for scene, _ in dataset.items))[:max_scenes]
    taken = dict.fromkeys(scenes, 0)
    items = []
    for i, (scene, _) in enumerate(dataset.items):
        if scene in taken and (per_scene is None or taken[scene] < per_scene):
            taken[scene] += 1
            items.append(i)
    return items


#: What evaluation asks a model to render (those it predicts): the outputs it scores.
SCORED_OUTPUTS = ("depth", "segmentation", "semantic")


def evaluate(model, scenes: SceneFile, split: str, data_config: dict, device, max_scenes=None,
             chunk: int = 8192, precision: str = "fp32", images_dir=None, segmentation_size: int | None = 64,
             items_per_scene: int | None = None, lpips=None) -> tuple:
    """Score ``model`` on ``split``; returns (summary {metric: (mean, std)}, per-item rows).
    Metrics pooled over all items rather than averaged (``category_miou``) have std None.
    ``segmentation_size``: side of the grid the input-view ARI is scored on (None: every pixel).
    ``lpips``: a :class:`scenetools.lpips.LPIPS` to score LPIPS with too (None: not scored)."""
    torch.manual_seed(0)  # models that sample in inference (ObSuRF's initial slots) score the same every run
    dataset = make_dataset(scenes, split, data_config, seed=0, num_rays=None)
    items = evaluation_items(dataset, max_scenes, items_per_scene)
    renderers = sources.baselines(scenes)
    lpips = lpips.to(device) if lpips is not None else None
    context = autocast(device, precision)
    semantic = SemanticScores(scenes, dataset.image_size)
    model.eval()
    rows = []
    for index in progress(items, desc="evaluating", unit="items"):
        item = dataset[index]
        batch = to_device({k: v[None] for k, v in item.items()}, device)
        with context:
            scene = encode_for_inference(model, encoder_inputs(batch))
        output = render_rays(model, scene, batch["target_camera_pos"], batch["target_rays"], *near_far(batch), chunk,
                             context, outputs=SCORED_OUTPUTS, image_size=dataset.image_size)
        row = score_item(item, output, scenes, renderers, lpips, device, dataset.image_size)
        if "segmentation" in output and "instance" in scenes.fields:
            row.update(input_view_segmentation(model, scene, item, scenes, device, segmentation_size, chunk))
        if hasattr(model, "point_segmentation") and {"depth", "instance"} <= set(scenes.fields):
            row.update(surface_segmentation(model, scene, batch))
        if "semantic" in output and "target_semantic" in item:
            row.update(semantic.score(item, output["semantic"][0]))
        rows.append(row)
        if images_dir is not None:
            save_images(images_dir, row["scene"], item, output, dataset.image_size)
    columns = [k for k in rows[0] if k not in ("scene", "scene_index", "input_views")] if rows else []
    summary = {k: mean_std([r[k] for r in rows]) for k in columns}
    summary.update(semantic.pooled())
    return summary, rows


def score_item(item: dict, output: dict, scenes: SceneFile, renderers: dict, lpips, device, size) -> dict:
    """Every image metric of one item, from its full target images (``size``: their height
    and width) and the model's output."""
    H, W = size
    views = item["target_views"].numpy()
    target = item["target_pixels"]
    pred = output["rgb"][0].clamp(0, 1)
    objects = item["target_instance"] > 0 if "target_instance" in item else None
    scene_index = int(item["scene_index"])
    row = {"scene": scenes.names[scene_index], "scene_index": scene_index,
           "input_views": " ".join(map(str, item["input_views"].tolist()))}
    row.update(_psnrs("", pred, target, objects))
    images = lambda flat: flat.reshape(len(views), H, W, 3)  # noqa: E731
    if min(H, W) >= SSIM_WINDOW:  # else SSIM is absent, as any metric the data cannot give
        row["ssim"] = float(ssim(images(pred), images(target)).mean())
    if lpips is not None and min(H, W) >= LPIPS_MIN_SIZE:
        to_lpips = lambda x: images(x).permute(0, 3, 1, 2).to(device) * 2 - 1  # noqa: E731
        row["lpips"] = float(lpips(to_lpips(pred), to_lpips(target)).mean())
    if "segmentation" in output and objects is not None:
        segmentation = output["segmentation"][0]
        row.update(ari_scores("", item["target_instance"], segmentation.argmax(-1), segmentation.shape[-1]))
    if "depth" in output and "target_depth" in item:
        row.update(depth_error(output["depth"][0], item["target_depth"], item["render_range"]))
    mean_colour = item["input_images"].mean(dim=(0, 2, 3)).expand_as(target)
    row.update(_psnrs("baseline_mean_colour_", mean_colour, target, objects))
    cams = scenes.read_views(scene_index, views, ("camera_to_world", "intrinsics")) if renderers else None
    for name, render in renderers.items():  # what the data's source can render without the objects
        K = cameras.resized_intrinsics(cams["intrinsics"], (scenes.height, scenes.width), size)
        rgb = render(cams["camera_to_world"], K, H, W)
        row.update(_psnrs(f"baseline_{name}_", torch.from_numpy(rgb).reshape(-1, 3).float() / 255, target, objects))
    return row


class SemanticScores:
    """Semantic SRN's metrics on one evaluation (``scenes``, target views of ``size`` (H, W)):
    per item the mIoU, and the intersections and unions its category mIoU pools over all
    items, for the model and for the majority class per pixel of the training labels."""

    def __init__(self, scenes: SceneFile, size):
        self.scenes, self.size = scenes, tuple(size)
        self.majority = {}  # number of classes -> majority label image [H, W] (None: no baseline)
        self.totals = {}  # metric -> (intersection [C], union [C]) summed over items

    def score(self, item: dict, scores: torch.Tensor) -> dict:
        """``miou`` and ``baseline_majority_miou`` of one item: the mean over its T target
        views of each view's mIoU; ``scores`` [T*H*W, C] class scores of its target pixels
        (view order), against ``item["target_semantic"]`` [T*H*W]."""
        C = scores.shape[-1]
        classes = self.scenes.semantic_classes
        if classes and len(classes) != C:
            raise BadInput(f"the model predicts {C} classes, the file has {len(classes)} "
                           f"({', '.join(classes)})", self.scenes.path)
        views = len(item["target_views"])
        predictions = {"": scores.argmax(-1)}
        if C not in self.majority:
            self.majority[C] = majority_baseline(self.scenes, self.size, C)
        if self.majority[C] is not None:
            predictions["baseline_majority_"] = self.majority[C].reshape(-1).repeat(views)
        row = {}
        for prefix, predicted in predictions.items():
            intersection, union = iou_counts(item["target_semantic"].reshape(views, -1),
                                             predicted.reshape(views, -1), C)
            row[f"{prefix}miou"] = float(mean_iou(intersection, union).mean())
            total = self.totals.get(f"{prefix}category_miou", (0, 0))
            self.totals[f"{prefix}category_miou"] = (total[0] + intersection.sum(0), total[1] + union.sum(0))
        return row

    def pooled(self) -> dict:
        """{``category_miou``, ``baseline_majority_category_miou``: (value, None)} over the
        items scored so far (empty if none was)."""
        return {name: (category_mean_iou(*counts), None) for name, counts in self.totals.items()}


def majority_baseline(scenes: SceneFile, size, num_classes: int) -> torch.Tensor | None:
    """The majority class at each pixel position, int64 [H, W], over the class maps of every
    view of the ``train`` split's scenes resized by the nearest pixel to ``size`` (H, W) (as
    ``data.resize_views`` does); None when the file has no train scenes or no class maps."""
    train = scenes.splits().get("train")
    if train is None or not len(train) or "semantic" not in scenes.fields:
        return None
    rows, columns = nearest_pixels((scenes.height, scenes.width), size)
    maps = (scenes.read_views(int(s), fields=("semantic",))["semantic"][:, rows][:, :, columns] for s in train)
    return majority_labels(maps, num_classes)


def ari_scores(suffix: str, truth: torch.Tensor, predicted: torch.Tensor, num_slots: int) -> dict:
    """ARI and FG-ARI of one labelling (flat true ids and predicted slots), and the same for
    a uniformly random assignment of the same pixels to ``num_slots`` slots (the baseline)."""
    truth, predicted = truth.reshape(1, -1), predicted.reshape(1, -1)
    generator = torch.Generator().manual_seed(0)
    random = torch.randint(num_slots, truth.shape, generator=generator)
    out = {}
    for prefix, labels in (("", predicted), ("baseline_random_", random)):
        out[f"{prefix}ari{suffix}"] = float(adjusted_rand_index(truth, labels)[0])
        out[f"{prefix}fg_ari{suffix}"] = float(adjusted_rand_index(truth, labels, ignore_background=True)[0])
    return out


def segmentation_grid(height: int, width: int, size: int | None):
    """(rows, columns) of the pixels the input-view ARI is scored on: with ``size``, a centred
    square crop of side ``size * stride`` taken every ``stride`` pixels (stride = the largest
    that fits; the ObSuRF reference's 64 x 64 grid on 240 x 320 CLEVR images is such a grid),
    else every pixel."""
    if size is None or min(height, width) <= size:
        return np.arange(height), np.arange(width)
    stride = min(height, width) // size
    top, left = (height - size * stride) // 2, (width - size * stride) // 2
    return top + stride * np.arange(size), left + stride * np.arange(size)


def input_view_segmentation(model, scene: dict, item: dict, scenes: SceneFile, device, size, chunk) -> dict:
    """ARI and FG-ARI of a render of the first input view, at full resolution or on the
    ``size`` grid, against its instance ids (ObSuRF's 2D ARI)."""
    scene_index, view = int(item["scene_index"]), int(item["input_views"][0])
    data = scenes.read_views(scene_index, [view], ("camera_to_world", "intrinsics", "instance"))
    rows, columns = segmentation_grid(scenes.height, scenes.width, size)
    uv = np.stack(np.meshgrid(columns + 0.5, rows + 0.5), -1).reshape(-1, 2)
    rays = torch.as_tensor(cameras.rays_through(data["intrinsics"][0], data["camera_to_world"][0], uv),
                           dtype=torch.float32)
    pos = torch.as_tensor(data["camera_to_world"][0, :3, 3], dtype=torch.float32).expand_as(rays)
    near, far = (item["render_range"][i:i + 1].to(device) for i in (0, 1))
    out = render_rays(model, scene, pos[None].to(device), rays[None].to(device), near, far, chunk,
                      outputs=("segmentation",))
    truth = torch.from_numpy(data["instance"][0][np.ix_(rows, columns)].astype(np.int64))
    return ari_scores("_input", truth, out["segmentation"][0].argmax(-1), out["segmentation"].shape[-1])


@torch.no_grad()
def surface_segmentation(model, scene: dict, batch: dict) -> dict:
    """3D ARI and FG-ARI at the ground-truth surface points of the target pixels: each point
    goes to the slot with the highest density there. Pixels without a surface (sky) are left
    out."""
    depth = batch["target_depth"][0]
    hit = torch.isfinite(depth) & (depth > 0)
    points = batch["target_camera_pos"][0][hit] + depth[hit, None] * batch["target_rays"][0][hit]
    weights = [model.point_segmentation(scene, part[None])[0].float().cpu() for part in points.split(8192)]
    if not weights:
        return {}
    weights = torch.cat(weights)
    return ari_scores("_3d", batch["target_instance"][0][hit].cpu(), weights.argmax(-1), weights.shape[-1])


def depth_error(predicted: torch.Tensor, truth: torch.Tensor, render_range: torch.Tensor) -> dict:
    """Mean absolute depth error over pixels whose true depth is known and inside the render
    range (sky and unknown depth are left out)."""
    known = torch.isfinite(truth) & (truth > 0) & (truth <= render_range[1])
    if not known.any():
        return {}
    return {"depth_mae": float((predicted[known] - truth[known]).abs().mean())}


def _psnrs(prefix: str, pred, target, objects) -> dict:
    out = {f"{prefix}psnr": float(psnr_from_mse(masked_mse(pred, target)))}
    if objects is not None:
        out[f"{prefix}psnr_objects"] = float(psnr_from_mse(masked_mse(pred, target, objects)))
    return out


def save_images(folder, name: str, item: dict, output: dict, size) -> None:
    """One labelled sheet per item, ``DIR/<scene>_in<views>.png``: the input views in the
    first row, then a row per target view: prediction, ground truth, error heat map (the
    per-pixel colour distance, black = exact, turbo up to 0.5) and, for models that segment,
    the predicted and true segmentations, and for models that predict classes the predicted
    and true classes (:func:`label_columns`). ``size``: the views' height and width."""
    H, W = size
    views = item["target_views"].tolist()
    pred = output["rgb"][0].reshape(len(views), H, W, 3).clamp(0, 1)
    truth = item["target_pixels"].reshape(len(views), H, W, 3)
    error = ((pred - truth) ** 2).sum(-1).sqrt().numpy()
    labels = label_columns(item, output, size)
    rows = [[to_uint8(pred[k]), to_uint8(truth[k]), np.where(error[k, ..., None] > 0, turbo(error[k] / 0.5), 0)]
            + [images[k] for _, images in labels] for k in range(len(views))]
    titles = ["prediction", "ground truth", "error"] + [title for title, _ in labels]
    inputs = [to_uint8(image.permute(1, 2, 0)) for image in item["input_images"]]
    inputs = [np.asarray(Image.fromarray(image).resize((W, H), Image.NEAREST)) for image in inputs]
    cell = max(96, H)
    picture = grid([[upscale(i, cell) for i in row] for row in [inputs] + rows], column_titles=titles,
                   labels=["inputs"] + [f"view {v}" for v in views], label_width=56)
    in_views = "-".join(map(str, item["input_views"].tolist()))
    Path(folder).mkdir(parents=True, exist_ok=True)
    with atomic_output(Path(folder) / f"{safe_name(name)}_in{in_views}.png") as tmp:
        iio.imwrite(tmp, picture)


def label_columns(item: dict, output: dict, size) -> list:
    """The label panels of an item's sheet, [(title, uint8 [T, H, W, 3])] for its T target
    views of ``size`` (H, W): the predicted slots and true instances of models that segment,
    the predicted and true classes (class 0, background, black) of models that predict them;
    a true map only where the data has it."""
    H, W = size
    maps = lambda flat: flat.reshape(len(item["target_views"]), H, W).numpy()  # noqa: E731
    columns = []
    if "segmentation" in output:
        slots = output["segmentation"].shape[-1]
        columns.append(("segmentation", colorize_labels(maps(output["segmentation"][0].argmax(-1)) + 1, slots + 1)))
        if "target_instance" in item:
            columns.append(("true instances", colorize_labels(maps(item["target_instance"]))))
    if "semantic" in output:
        classes = output["semantic"].shape[-1]
        columns.append(("classes", colorize_labels(maps(output["semantic"][0].argmax(-1)), classes)))
        if "target_semantic" in item:
            columns.append(("true classes", colorize_labels(maps(item["target_semantic"]), classes)))
    return columns


def report(summary: dict, rows: list, *, checkpoint, step, model_name, data, split, run_name, targets) -> dict:
    """The metrics JSON (``formats/metrics-json.md``), like nerfstudio's ns-eval output: each
    metric and its std (none for pooled metrics, whose std is None)."""
    results = {}
    for key, (mean, std) in summary.items():
        results[key] = _number(mean)
        if std is not None:
            results[f"{key}_std"] = _number(std)
    return {"experiment_name": run_name, "method_name": model_name, "checkpoint": str(checkpoint), "step": step,
            "data": str(data), "split": split, "targets": targets, "num_scenes": len({r["scene"] for r in rows}),
            "num_items": len(rows), "results": results}


def _number(value):
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def write_outputs(metrics: dict, rows: list, json_path: Path) -> Path:
    """Write the JSON and the per-item CSV next to it (same name, .csv), atomically."""
    csv_path = json_path.with_suffix(".csv")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(csv_path) as tmp:
        tmp.write_text(buffer.getvalue())
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    return csv_path


def summary_table(metrics: dict) -> str:
    """Lines for the terminal: each metric with its baselines, on the same pixels."""
    r = metrics["results"]
    lines = [f"{metrics['method_name']} step {metrics['step']} on {metrics['num_scenes']} {metrics['split']} scenes "
             f"({metrics['num_items']} items, target views: {metrics.get('targets', '?')})"]
    for key in ("psnr", "psnr_objects"):
        if r.get(key) is None:
            continue
        what = "all pixels" if key == "psnr" else "object pixels"
        parts = [f"model {r[key]:.2f}"]
        for name in ("baseline_mean_colour_", "baseline_background_"):
            if r.get(name + key) is not None:
                label = name.replace("baseline_", "").rstrip("_").replace("_", " ")
                parts.append(f"{label} {r[name + key]:.2f} ({r[key] - r[name + key]:+.2f})")
        lines.append(f"  PSNR {what:<14} " + ", ".join(parts))
    for key, label in (("miou", "mIoU"), ("category_miou", "category mIoU")):
        if r.get(key) is None:
            continue
        parts = [f"model {r[key]:.4f}"]
        majority = r.get(f"baseline_majority_{key}")
        if majority is not None:
            parts.append(f"majority class per pixel {majority:.4f} ({r[key] - majority:+.4f})")
        lines.append(f"  {label:<19} " + ", ".join(parts))
    for key in ("ssim", "lpips", "depth_mae"):
        if r.get(key) is not None:
            lines.append(f"  {key.upper():<19} {r[key]:.4f} ± {r[key + '_std']:.4f}")
    for suffix, where in (("", "target views"), ("_input", "input view"), ("_3d", "3D surface points")):
        for key in ("ari", "fg_ari"):
            value, random = r.get(key + suffix), r.get(f"baseline_random_{key}{suffix}")
            if value is not None:
                label = f"{key.upper().replace('_', '-')} {where}"
                lines.append(f"  {label:<28} {value:.4f} ± {r[key + suffix + '_std']:.4f}"
                             + (f"  (random slots {random:.4f})" if random is not None else ""))
    return "\n".join(lines)
