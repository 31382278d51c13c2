"""Scoring a trained model on full target images of held-out scenes (``scene-eval``).

Items follow the model's own view protocol (the config it was trained with), so numbers are
comparable with the references: NMR and CLEVR3D evaluate every (scene, input view) pair, MSN
one set of input views per scene. Every target pixel is rendered, in chunks.

Per item it computes PSNR (over all target pixels, and over object pixels, instance id != 0,
when the data has instance ids), SSIM per target view, ARI and FG-ARI when the model predicts
a segmentation and the data has instance ids, and two baselines on the same pixels: the mean
colour of the input views, and, for synthetic data, the background-only render of the same
cameras (ground and sky without the objects).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import imageio.v3 as iio
import torch

from .atomic import atomic_output
from .metrics import adjusted_rand_index, lpips_model, masked_mse, mean_std, psnr_from_mse, ssim
from .progress import progress
from .render import render_rays, to_uint8
from .scenefile import SceneFile
from .train import autocast, make_dataset, to_device


def background_renderer(scenes: SceneFile):
    """The synthetic generator's background-only render, if ``scenes`` is a synthetic file
    of this generator version; else None."""
    if scenes.source != "synthetic":
        return None
    from .sources import synthetic

    if scenes.source_info.get("generator_version") != synthetic.GENERATOR_VERSION:
        return None
    return synthetic.background


def evaluation_items(dataset, max_scenes: int | None) -> list:
    """Item indices of the first ``max_scenes`` scenes of the split (all their items)."""
    scenes = list(dict.fromkeys(scene for scene, _ in dataset.items))[:max_scenes]
    keep = set(scenes)
    return [i for i, (scene, _) in enumerate(dataset.items) if scene in keep]


@torch.no_grad()
def evaluate(model, scenes: SceneFile, split: str, data_config: dict, device, max_scenes=None,
             chunk: int = 8192, precision: str = "fp32", images_dir=None) -> tuple:
    """Score ``model`` on ``split``; returns (summary {metric: (mean, std)}, per-item rows)."""
    dataset = make_dataset(scenes, split, data_config, seed=0, num_rays=None)
    items = evaluation_items(dataset, max_scenes)
    background = background_renderer(scenes)
    lpips = lpips_model(device)
    context = autocast(device, precision)
    model.eval()
    rows = []
    for index in progress(items, desc="evaluating", unit="items"):
        item = dataset[index]
        batch = to_device({k: v[None] for k, v in item.items()}, device)
        with context:
            scene = model.encode(**batch)
        output = render_rays(model, scene, batch["target_camera_pos"], batch["target_rays"], chunk, context)
        row = score_item(item, output, scenes, background, lpips, device)
        rows.append(row)
        if images_dir is not None:
            save_images(images_dir, row["scene"], item, output, scenes)
    columns = [k for k in rows[0] if k not in ("scene", "scene_index", "input_views")] if rows else []
    summary = {k: mean_std([r[k] for r in rows]) for k in columns}
    return summary, rows


def score_item(item: dict, output: dict, scenes: SceneFile, background, lpips, device) -> dict:
    """Every metric of one item, from its full target images and the model's output."""
    H, W = scenes.height, scenes.width
    views = item["target_views"].numpy()
    target = item["target_pixels"]
    pred = output["rgb"][0].clamp(0, 1)
    objects = item["target_instance"] > 0 if "target_instance" in item else None
    scene_index = int(item["scene_index"])
    row = {"scene": scenes.names[scene_index], "scene_index": scene_index,
           "input_views": " ".join(map(str, item["input_views"].tolist()))}
    row.update(_psnrs("", pred, target, objects))
    images = lambda flat: flat.reshape(len(views), H, W, 3)  # noqa: E731
    row["ssim"] = float(ssim(images(pred), images(target)).mean())
    if lpips is not None:
        to_lpips = lambda x: images(x).permute(0, 3, 1, 2).to(device) * 2 - 1  # noqa: E731
        row["lpips"] = float(lpips(to_lpips(pred), to_lpips(target)).mean())
    if "segmentation" in output and objects is not None:
        predicted = output["segmentation"][0].argmax(-1)
        truth = item["target_instance"]
        row["ari"] = float(adjusted_rand_index(truth[None], predicted[None])[0])
        row["fg_ari"] = float(adjusted_rand_index(truth[None], predicted[None], ignore_background=True)[0])
    mean_colour = item["input_images"].mean(dim=(0, 2, 3)).expand_as(target)
    row.update(_psnrs("baseline_mean_colour_", mean_colour, target, objects))
    if background is not None:
        data = scenes.read_views(scene_index, views, ("camera_to_world", "intrinsics"))
        rgb = background(data["camera_to_world"], data["intrinsics"], H, W)
        row.update(_psnrs("baseline_background_", torch.from_numpy(rgb).reshape(-1, 3).float() / 255, target,
                          objects))
    return row


def _psnrs(prefix: str, pred, target, objects) -> dict:
    out = {f"{prefix}psnr": float(psnr_from_mse(masked_mse(pred, target)))}
    if objects is not None:
        out[f"{prefix}psnr_objects"] = float(psnr_from_mse(masked_mse(pred, target, objects)))
    return out


def save_images(folder, name: str, item: dict, output: dict, scenes: SceneFile) -> None:
    """prediction / ground truth / |error| PNGs of each target view: DIR/<scene>/<view>_*.png."""
    H, W = scenes.height, scenes.width
    views = item["target_views"].tolist()
    pred = output["rgb"][0].reshape(len(views), H, W, 3)
    truth = item["target_pixels"].reshape(len(views), H, W, 3)
    scene_dir = Path(folder) / name.replace("/", "_")
    scene_dir.mkdir(parents=True, exist_ok=True)
    inputs = "-".join(map(str, item["input_views"].tolist()))
    for v, p, t in zip(views, pred, truth):
        for kind, image in (("pred", p), ("gt", t), ("error", (p.clamp(0, 1) - t).abs())):
            iio.imwrite(scene_dir / f"in{inputs}_view{v}_{kind}.png", to_uint8(image))


def report(summary: dict, rows: list, *, checkpoint, step, model_name, data, split, run_name, targets) -> dict:
    """The metrics JSON (``formats/metrics-json.md``), like nerfstudio's ns-eval output."""
    results = {}
    for key, (mean, std) in summary.items():
        results[key] = _number(mean)
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
    for key in ("ssim", "lpips", "ari", "fg_ari"):
        if r.get(key) is not None:
            lines.append(f"  {key.upper():<19} {r[key]:.4f} ± {r[key + '_std']:.4f}")
    return "\n".join(lines)
