"""scene-render: frames along a camera path, to a folder or as a stream on stdout."""
from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path

import click
import numpy as np
import torch

from .. import camera_paths, cameras
from .. import checkpoint as ckpt
from ..atomic import atomic_output, check_new_output, remove, safe_name
from ..data import SceneDataset, ViewSelection, view_selection
from ..device import autocast
from ..device import pick as pick_device
from ..errors import BadInput
from ..framestream import encode_frame, write_folder_frame
from ..models.base import encode_for_inference, encoder_inputs
from ..pointcloud import ply_output
from ..progress import note, progress
from ..render import render_path, to_uint8
from ..scenefile import SceneFile, preview_scene_file
from . import common


def parse_size(text: str | None):
    if text is None:
        return None
    try:
        height, width = (int(x) for x in text.lower().split("x"))
        if height < 1 or width < 1:
            raise ValueError
        return height, width
    except ValueError:
        raise click.BadParameter(f"{text!r} is not HEIGHTxWIDTH, e.g. 128x128", param_hint="--size") from None


def find_scene(scenes: SceneFile, scene: str | None) -> int:
    """A scene by index or name; by default the first validation scene (else the first)."""
    if scene is None:
        return scenes.first_held_out()
    if scene.isdigit() and int(scene) < scenes.num_scenes:
        return int(scene)
    matches = np.flatnonzero(scenes.names == scene)
    if not len(matches):
        raise BadInput(f"no scene {scene!r} (give an index below {scenes.num_scenes} or a scene name)", scenes.path)
    return int(matches[0])


@contextlib.contextmanager
def scenes_to_render(checkpoint: dict, run: Path | None, source, data: Path | None, scene: str | None):
    """The scene file to render from: ``--data``, else the data the run was trained on
    (recorded relative to the run folder), else the checkpoint's own preview scene."""
    relative = checkpoint.get("config", {}).get("run", {}).get("data")
    if data is None and run is not None and relative is not None and (run / relative).exists():
        data = run / relative
    if data is not None:
        yield SceneFile(data)
        return
    preview = checkpoint.get("preview")
    if preview is None:
        raise BadInput("cannot find the data this checkpoint was trained on; pass --data DATA.h5", source)
    if scene not in (None, "0", preview["name"]):
        raise BadInput(f"the data this checkpoint was trained on is not here, and it carries only its preview "
                       f"scene {preview['name']!r}; pass --data DATA.h5 for scene {scene!r}", source)
    note(f"rendering the checkpoint's preview scene {preview['name']} (pass --data DATA.h5 for others)")
    with preview_scene_file(preview) as scenes:
        yield scenes


@click.command("scene-render", context_settings={"max_content_width": 100})
@click.argument("source", type=click.Path(path_type=Path), metavar="RUN_DIR|CKPT")
@click.option("--data", type=click.Path(path_type=Path), metavar="DATA.h5",
              help="Scene file [the one the run was trained on].")
@click.option("--scene", help="Scene index or name [the first validation scene].")
@click.option("--motion", default="rotate", show_default=True, type=click.Choice(camera_paths.MOTIONS))
@click.option("--path", "path_file", type=click.Path(path_type=Path), help="With --motion path: a camera_path.json.")
@click.option("--frames", type=click.IntRange(min=1), default=120, show_default=True)
@click.option("--fade", is_flag=True, help="Ease in and out (constant acceleration over the first and last 20%).")
@click.option("--size", help="HEIGHTxWIDTH of the frames [the data's].")
@click.option("--outputs", default="rgb", show_default=True,
              help="Comma-separated: rgb, segmentation (OSRT, ObSuRF), semantic (semantic SRN: classes, with a "
                   "legend), depth and slots (ObSuRF: each slot rendered alone, side by side), input, pointcloud "
                   "(surface points as PLY, see --pointcloud).")
@click.option("-o", "--out", help="Folder of PNGs, or - for a frame stream on stdout [a stream when stdout is "
              "a pipe, else RUN_DIR/renders/<motion>-<scene>].")
@click.option("--overwrite", is_flag=True, help="Replace an existing -o folder (and --pointcloud-out).")
@click.option("--pointcloud", "pointcloud_mode", type=click.Choice(["merged", "per-frame"]), default="merged",
              show_default=True, help="With --outputs pointcloud: one PLY of every frame's points, or one per frame.")
@click.option("--pointcloud-out", type=click.Path(path_type=Path), metavar="PATH",
              help="Where the point cloud goes: a .ply file (merged) or a folder (per-frame) [in the -o folder: "
                   "pointcloud.ply or pointcloud/; needed when frames stream to stdout].")
@click.option("--save-path", type=click.Path(path_type=Path), help="Also write the camera path as a nerfstudio "
              "camera_path.json, to edit and render again with --motion path.")
@click.option("--fps", type=float, default=30, show_default=True, help="Recorded in --save-path.")
@click.option("--chunk", type=click.IntRange(min=1), default=8192, show_default=True, help="Rays decoded at once.")
@common.precision_option
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default: cuda when available.")
@click.option("--input-views", help="Comma-separated views given to the model as its inputs, e.g. 64 (SRN "
              "one-shot) [the config's data.evaluation, else the first views].")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the checkpoint's config that does not change its weights, e.g. "
                   "--set model.fit.steps=200 (repeatable).")
@click.option("--config", "preset", help="For a reference model.pt only: its model and config, e.g. osrt/msn.")
@common.options
def command(source, data, scene, motion, path_file, frames, fade, size, outputs, out, overwrite, pointcloud_mode,
            pointcloud_out, save_path, fps, chunk, precision, device, input_views, overrides, preset):
    """Render frames of a scene along a camera path: the reference motions (rotate, zoom,
    closeup, rotate_and_closeup, eyeroll), a spiral, or a nerfstudio camera_path.json.

    \b
    Examples:
      scene-render outputs/demo/srt-fresh --motion rotate_and_closeup --fade -o frames
      scene-render ckpt.pt --motion rotate_and_closeup | scene-video
      scene-render run --data data.h5 --scene 12 --outputs input,rgb,segmentation -o - | scene-video -o seg.mp4
      scene-render run --motion spiral --save-path path.json -o /dev/null; scene-render run --motion path --path path.json
      scene-render semantic-run --outputs rgb,semantic,pointcloud -o frames   # frames/pointcloud.ply
    """
    wanted = [o.strip() for o in outputs.split(",") if o.strip()]
    unknown = set(wanted) - {"rgb", "segmentation", "semantic", "depth", "slots", "input", "pointcloud"}
    if unknown or not wanted:
        raise click.BadParameter(f"unknown outputs {sorted(unknown)}", param_hint="--outputs")
    if (motion == "path") != (path_file is not None):
        raise click.UsageError("--motion path needs --path FILE (and --path needs --motion path)")
    device = pick_device(device)
    to_stream = out == "-" or (out is None and stdout_is_pipe()) or (out is not None and is_device_file(out))
    if out is not None and not to_stream:
        check_new_output(out, overwrite)
    check_pointcloud_out(pointcloud_out, "pointcloud" in wanted, to_stream, overwrite)
    input_views = common.parse_views(input_views)
    model, checkpoint, run = ckpt.load_model(source, reference_preset=preset, overrides=overrides)
    missing = [name for name in wanted if name not in ("input", "rgb") and OUTPUT_OF.get(name, name) not in model.outputs]
    if missing:
        needs = [name if OUTPUT_OF.get(name, name) == name else f"{name} (needs {OUTPUT_OF[name]})" for name in missing]
        raise BadInput(f"model {checkpoint['model_name']} does not predict {', '.join(needs)} "
                       f"(it predicts rgb{''.join(', ' + o for o in model.outputs)})")
    model.to(device).eval()
    with scenes_to_render(checkpoint, run, source, data, scene) as scenes:
        index = find_scene(scenes, scene)

        data_config = common.inference_data_config(checkpoint["config"]["data"], input_views)
        views = view_selection(data_config)
        inputs = views if views.inputs == "given" else ViewSelection(views.num_inputs, "first", views.targets,
                                                                     held_out=views.held_out)
        try:
            dataset = SceneDataset(scenes, None, inputs, num_rays=1, input_stride=data_config.get("input_stride", 1))
        except ValueError as error:
            raise BadInput(str(error)) from None
        item = dataset[index]
        scene_c2w = scenes.read_views(index, fields=("camera_to_world",))["camera_to_world"]
        base = scenes.read_views(index, item["input_views"][:1].numpy(), ("camera_to_world", "intrinsics"))
        height, width = parse_size(size) or (scenes.height, scenes.width)
        K = cameras.resized_intrinsics(base["intrinsics"][0], (scenes.height, scenes.width), (height, width))
        if motion == "path":
            path, height, width = camera_paths.load_camera_path(path_file, *(parse_size(size) or (None, None)))
        else:
            frame = camera_paths.SceneFrame(scene_c2w, scenes.world_up)
            path = camera_paths.motion_path(motion, base["camera_to_world"][0], K, frame, frames, fade)
        if save_path:
            with atomic_output(save_path) as tmp:
                camera_paths.save_camera_path(path, height, width, fps, tmp)

        torch.manual_seed(0)  # models that sample in inference (ObSuRF's initial slots) render the same every run
        latent = encode_for_inference(model, {k: v[None].to(device) for k, v in encoder_inputs(item).items()})
        frames_out = render_path(model, latent, path, height, width, item["render_range"].tolist(), device, chunk,
                                 outputs=model_outputs(wanted, model), class_names=scenes.semantic_classes,
                                 points="pointcloud" in wanted, autocast=autocast(device, precision))
        inputs_uint8 = [to_uint8(image.permute(1, 2, 0)) for image in item["input_images"]]
        points = PointClouds(pointcloud_mode == "per-frame", pointcloud_out,
                             ply_comments(scenes, index, model)) if "pointcloud" in wanted else None
        if to_stream:
            with open(out, "wb") if out not in (None, "-") else contextlib.nullcontext(sys.stdout.buffer) as stream:
                write_stream(frames_out, wanted, inputs_uint8, len(path), stream, points)
        else:
            folder = Path(out) if out else (run or Path(".")) / "renders" / safe_name(f"{motion}-{scenes.names[index]}")
            write_folder(frames_out, wanted, inputs_uint8, len(path), folder, points)
            click.echo(str(folder))


#: ``--outputs`` name -> the model output it shows
OUTPUT_OF = {"slots": "slot_rgb", "pointcloud": "depth"}


def model_outputs(wanted: list, model) -> list:
    """The model outputs the ``--outputs`` need: a point cloud takes depth, and the classes
    when the model predicts them."""
    names = [OUTPUT_OF.get(name, name) for name in wanted if name not in ("input", "rgb")]
    return (names + ["semantic"]) if "pointcloud" in wanted and "semantic" in model.outputs else names


class PointClouds:
    """Where and how ``--outputs pointcloud`` is written (:func:`scenetools.pointcloud.ply_output`):
    ``per_frame`` or merged, to ``out``, else into the frames folder."""

    def __init__(self, per_frame: bool, out, comments: list):
        self.per_frame, self.out, self.comments = per_frame, out, comments

    def open(self, folder=None):
        """``ply_output`` to ``out``, else to ``folder``/pointcloud(.ply)."""
        target = self.out or Path(folder) / ("pointcloud" if self.per_frame else "pointcloud.ply")
        return ply_output(target, self.per_frame, self.comments)


def ply_comments(scenes, index: int, model) -> list:
    """The PLY header comments: the scene, and the name of each label the model predicts."""
    comments = [f"scenetools point cloud of scene {scenes.names[index]}"]
    if "semantic" in model.outputs and scenes.semantic_classes:
        comments += [f"label {k} {name}" for k, name in enumerate(scenes.semantic_classes)]
    return comments


def check_pointcloud_out(path, wanted: bool, to_stream: bool, overwrite: bool) -> None:
    """--pointcloud-out goes with --outputs pointcloud, and is needed when frames stream."""
    if path is not None and not wanted:
        raise click.UsageError("--pointcloud-out needs --outputs pointcloud")
    if wanted and to_stream and path is None:
        raise BadInput("the frames go to a stream, so the point cloud needs --pointcloud-out PATH")
    if path is not None:
        check_new_output(path, overwrite)


def stdout_is_pipe() -> bool:
    """Frames stream to stdout only into a pipe, never into a terminal or a file."""
    return stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)


def is_device_file(path) -> bool:
    """``-o /dev/null`` and the like: a stream target, not a folder."""
    return Path(path).exists() and stat.S_ISCHR(os.stat(path).st_mode)


def write_stream(frames, wanted, inputs, count, stream, points=None) -> None:
    """Frames as a frame stream on ``stream``; point clouds (:class:`PointClouds`) to their file."""
    if "input" in wanted:
        for i, image in enumerate(inputs):
            stream.write(encode_frame(image, "input", i, count))
    with points.open() if points else contextlib.nullcontext() as add_points:
        write_frames(frames, wanted, count, lambda image, name, k: stream.write(encode_frame(image, name, k, count)),
                     add_points, stream.flush)


def write_folder(frames, wanted, inputs, count, folder: Path, points=None) -> None:
    """Frames as a frame folder, written atomically; point clouds into it, or to their own
    place (:class:`PointClouds`)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(folder) as tmp:
        remove(tmp)  # left over from an interrupted run
        tmp.mkdir()
        if "input" in wanted:
            for i, image in enumerate(inputs):
                write_folder_frame(tmp, image, "input", i)
        with points.open(tmp) if points else contextlib.nullcontext() as add_points:
            write_frames(frames, wanted, count, lambda image, name, k: write_folder_frame(tmp, image, name, k),
                         add_points)


def write_frames(frames, wanted, count, write_image, add_points, flush=lambda: None) -> None:
    """Each frame's pictures of ``wanted`` to ``write_image(image, name, k)``, its point cloud
    to ``add_points(k, cloud)``, in order, with a progress bar."""
    for k, pictures in enumerate(progress(frames, total=count, desc="rendering", unit="frames")):
        for name in wanted:
            if name == "pointcloud":
                add_points(k, pictures[name])
            elif name != "input":
                write_image(pictures[name], name, k)
        flush()


main = common.entry_point(command)

if __name__ == "__main__":
    main()
