"""Users' own captures: nerfstudio's ``transforms.json``, and Blender / instant-ngp
``transforms_{train,val,test}.json`` folders, read as nerfstudio reads them
(nerfstudio-project/nerfstudio: ``data/dataparsers/nerfstudio_dataparser.py`` and
``blender_dataparser.py``, ``data/utils/dataparsers_utils.py``, ``cameras/cameras.py``,
``docs/quickstart/data_conventions.md``; instant-ngp's ``nerf_loader``).

Layouts::

    <capture>/                      nerfstudio (what ns-process-data writes)
      transforms.json               camera_model, fl_x fl_y cx cy w h, k1..k4 p1 p2 (top level or
                                    per frame), frames: [{file_path, transform_matrix, ...}],
                                    optional train_filenames / val_filenames / test_filenames
      images/frame_00001.png ...    each frame's file_path, relative to the json's folder

    <capture>/                      Blender (NeRF synthetic) / instant-ngp
      transforms_train.json         camera_angle_x (or instant-ngp's fl_x, fl_y, cx, cy, w, h),
      transforms_val.json           frames: [{file_path, transform_matrix}]; any of the three
      transforms_test.json          files may be missing
      train/r_0.png ...             file_path "./train/r_0": ".png" is appended to a path
                                    without a suffix (nerfstudio's Blender parser, instant-ngp)

IN is the capture folder or one json file in it: ``transforms_<split>.json`` gives that split
alone, any other json is read as nerfstudio's ``transforms.json`` (nerfstudio's ``data`` may
name a json too). A folder holding ``transforms.json`` is read as nerfstudio's.

Scenes. A capture is one scene whose frames are split, while our format gives each scene one
split, so a capture becomes one scene per split, named ``<capture>/<split>`` (the capture is
the folder's name), holding that split's frames:

* ``transforms.json``: frames sorted by image path, as nerfstudio sorts them. When the json
  names ``<split>_filenames`` lists, each list is a split (frames in no list are left out).
  Otherwise nerfstudio's default split (``eval_mode="fraction"``, ``train_split_fraction``
  0.9): of n frames, the train frames are ``int(linspace(0, n - 1, ceil(0.9 n)))`` and the rest
  are the eval frames, which nerfstudio uses for val and for test alike, so they are written
  twice, as ``<capture>/val`` and ``<capture>/test``.
* ``transforms_<split>.json``: one scene per file, frames in file order.
* A split without frames is left out (fewer than 10 frames leave no eval frames).

Conventions converted here:

* ``transform_matrix`` is camera-to-world with OpenGL camera axes (x right, y up, looking
  down -z): ``c2w = transform_matrix @ diag(1, -1, -1, 1)`` (``cameras.opengl_to_opencv``).
  It must be a finite rigid 4x4. The world is the file's own frame and units: nerfstudio's
  dataparser re-orients, centres and scales the poses when it loads them, a training-time
  normalisation not applied here. ``world_up`` is left unset: nerfstudio's "+Z up" holds
  after that re-orientation, not in the files (COLMAP-based captures have no up axis).
* Intrinsics, per frame, each key from the json's top level if there, else from the frame
  (nerfstudio's precedence): ``fx = fl_x``, else ``0.5 W / tan(0.5 camera_angle_x)``;
  ``fy = fl_y``, else ``0.5 H / tan(0.5 camera_angle_y)``, else fx (and fx = fy when only a y
  focal is given, as instant-ngp does); ``cx``, ``cy`` default to ``W / 2``, ``H / 2`` (the
  Blender parser, instant-ngp). nerfstudio casts the ray of pixel (row i, column j) through the
  image point ``(u, v) = (j + 0.5, i + 0.5)`` (``get_image_coords``, pixel_offset 0.5) along
  ``((u - cx) / fx, -(v - cy) / fy, -1)`` in camera axes. After the axis flip that is our
  convention exactly, so ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` as given.
* Camera models: ours are pinholes. No ``camera_model``, or PINHOLE, SIMPLE_PINHOLE,
  SIMPLE_RADIAL, RADIAL or OPENCV with every distortion coefficient (k1..k4, p1, p2,
  ``distortion_params``) zero is accepted; nonzero distortion, or any other model (fisheye,
  equirectangular, ...), is BadInput.
* Images are read at full size (nerfstudio's automatic switch to ``images_2/`` ... for images
  over 1600 px is not made). Every frame must have the size of the first, and the ``w``, ``h``
  the json gives. RGBA is composited onto white (the Blender parser's default alpha_color),
  in both layouts.
* Left out: ``mask_path`` (loss masks, not instance ids), ``depth_file_path`` (millimetres, in
  metres after nerfstudio's depth_unit_scale_factor, which are not the poses' unit in general),
  point clouds. ``applied_transform`` and ``applied_scale`` (how the saved world relates to the
  original COLMAP one) are kept in ``source_info``.
* near/far and the render range are unknown: neither layout gives bounds (nerfstudio's models
  pick theirs after normalising the poses).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import cameras
from ..errors import BadInput
from ..scenefile import RIGID_TOLERANCE, Scene
from . import SceneRef, SourceInfo
from .files import image_size, read_rgb, require

SPLITS = ("train", "val", "test")
TRAIN_SPLIT_FRACTION = 0.9  # nerfstudio's default
PINHOLE_MODELS = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
BLENDER_FILE = re.compile(r"transforms_(train|val|test)\.json")
NERFSTUDIO, BLENDER = "nerfstudio", "blender"


@dataclass
class Frame:
    """One entry of a json's ``frames``, with what reading it needs."""

    image: Path
    entry: dict  # the frame's own json object
    meta: dict  # the whole json, for top-level keys
    transforms: Path  # the json file

    def get(self, key, default=None):
        """A per-frame setting: the top-level value if there is one, else the frame's."""
        return self.meta[key] if key in self.meta else self.entry.get(key, default)

    def fail(self, problem: str) -> BadInput:
        return BadInput(f"frame {self.entry['file_path']!r}: {problem}", self.transforms)


# ----------------------------------------------------------------------------- json files

def find_transforms(path: Path) -> tuple:
    """(layout, capture folder, {key: json path}) of IN; keys are ``transforms`` for the
    nerfstudio layout, split names for the Blender one."""
    path = Path(path)
    if path.is_file():
        match = BLENDER_FILE.fullmatch(path.name)
        return (BLENDER, path.parent, {match[1]: path}) if match else (NERFSTUDIO, path.parent, {"transforms": path})
    if not path.is_dir():
        raise BadInput("no such file or folder", path)
    if (path / "transforms.json").is_file():
        return NERFSTUDIO, path, {"transforms": path / "transforms.json"}
    files = {split: path / f"transforms_{split}.json" for split in SPLITS}
    files = {split: file for split, file in files.items() if file.is_file()}
    if not files:
        raise BadInput("no such file (nor transforms_train.json, transforms_val.json or transforms_test.json "
                       "of a Blender-style capture)", path / "transforms.json")
    return BLENDER, path, files


def read_transforms(path: Path) -> dict:
    """A transforms json, checked to hold a non-empty list of frames with a file_path and a
    transform_matrix each, and a camera model we can store."""
    path = require(path)
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as error:
        raise BadInput(f"invalid JSON ({error})", path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise BadInput("expected a JSON object with a list of 'frames'", path)
    if not meta["frames"]:
        raise BadInput("no frames", path)
    for k, entry in enumerate(meta["frames"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file_path"), str) \
                or "transform_matrix" not in entry:
            raise BadInput(f"frame {k} needs a 'file_path' string and a 'transform_matrix'", path)
    model = meta.get("camera_model", "PINHOLE")
    if model not in PINHOLE_MODELS:
        raise BadInput(f"camera_model {model!r} is not supported: scene files store pinhole cameras "
                       f"({', '.join(PINHOLE_MODELS)} without distortion)", path)
    return meta


def nerfstudio_splits(path: Path) -> dict:
    """{split: [Frame]} of a nerfstudio transforms.json (see the module docstring)."""
    meta = read_transforms(path)
    frames = sorted((Frame(path.parent / entry["file_path"], entry, meta, path) for entry in meta["frames"]),
                    key=lambda frame: frame.image)
    listed = {split: meta[f"{split}_filenames"] for split in SPLITS if f"{split}_filenames" in meta}
    if listed:
        return {split: _listed_frames(frames, names, f"{split}_filenames", path) for split, names in listed.items()}
    count = len(frames)
    train = set(np.linspace(0, count - 1, math.ceil(count * TRAIN_SPLIT_FRACTION)).astype(int).tolist())
    evaluation = [frame for k, frame in enumerate(frames) if k not in train]
    return {"train": [frame for k, frame in enumerate(frames) if k in train], "val": evaluation, "test": evaluation}


def _listed_frames(frames: list, names, key: str, path: Path) -> list:
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise BadInput(f"{key} is not a list of file names", path)
    images = {frame.image for frame in frames}
    unknown = [name for name in names if path.parent / name not in images]
    if unknown:
        raise BadInput(f"{key} names files that no frame has: {', '.join(unknown[:3])}", path)
    wanted = {path.parent / name for name in names}
    return [frame for frame in frames if frame.image in wanted]


def blender_frames(path: Path) -> list:
    """[Frame] of a transforms_<split>.json, in file order."""
    meta = read_transforms(path)
    frames = []
    for entry in meta["frames"]:
        image = path.parent / entry["file_path"]
        if not image.suffix:
            image = Path(f"{image}.png")
        frames.append(Frame(image, entry, meta, path))
    return frames


# ----------------------------------------------------------------------------- cameras

def frame_pose(frame: Frame) -> np.ndarray:
    """Our camera-to-world (OpenCV axes) of a frame's OpenGL transform_matrix."""
    try:
        matrix = np.array(frame.entry["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        raise frame.fail("transform_matrix is not a 4x4 matrix of numbers") from None
    if matrix.shape != (4, 4):
        raise frame.fail(f"transform_matrix has shape {'x'.join(map(str, matrix.shape)) or '()'}, expected 4x4")
    if not np.isfinite(matrix).all():
        raise frame.fail("transform_matrix has NaN or infinite values")
    error = cameras.rigid_transform_error(matrix)
    if error > RIGID_TOLERANCE:
        raise frame.fail(f"transform_matrix is not a rigid camera-to-world transform (error {error:.3g})")
    return cameras.opengl_to_opencv(matrix)


def frame_intrinsics(frame: Frame, height: int, width: int) -> np.ndarray:
    """Our 3x3 K of a frame whose image is height x width (see the module docstring)."""
    for key, size in (("w", width), ("h", height)):
        if frame.get(key) is not None and _number(frame, key) != size:
            raise frame.fail(f"{key} is {frame.get(key)} in the json, but the images are {width}x{height}")
    _check_no_distortion(frame)
    fx, fy = _focal(frame, "x", width), _focal(frame, "y", height)
    if fx is None and fy is None:
        raise frame.fail("no focal length: give fl_x (and fl_y) or camera_angle_x")
    fx, fy = (fx if fx is not None else fy), (fy if fy is not None else fx)
    cx, cy = _number(frame, "cx", width / 2), _number(frame, "cy", height / 2)
    if fx <= 0 or fy <= 0:
        raise frame.fail(f"focal lengths {fx:g}, {fy:g} must be positive")
    return cameras.intrinsics(fx, fy, cx, cy)


def _focal(frame: Frame, axis: str, size: int):
    if frame.get(f"fl_{axis}") is not None:
        return _number(frame, f"fl_{axis}")
    if frame.get(f"camera_angle_{axis}") is not None:
        angle = _number(frame, f"camera_angle_{axis}")
        if not 0 < angle < math.pi:
            raise frame.fail(f"camera_angle_{axis} {angle:g} is not an angle in (0, pi) radians")
        return cameras.focal_from_fov(angle, size)
    return None


def _check_no_distortion(frame: Frame) -> None:
    coefficients = {key: _number(frame, key, 0.0) for key in DISTORTION_KEYS}
    params = frame.get("distortion_params")
    if params is not None:
        try:
            values = np.array(params, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise frame.fail("distortion_params is not a list of numbers") from None
        coefficients.update({f"distortion_params[{k}]": float(v) for k, v in enumerate(values)})
    nonzero = {key: value for key, value in coefficients.items() if value != 0}
    if nonzero:
        shown = ", ".join(f"{key}={value:g}" for key, value in nonzero.items())
        raise frame.fail(f"lens distortion is not supported ({shown}): scene files store pinhole cameras; "
                         "undistort the images first")


def _number(frame: Frame, key: str, default=None) -> float:
    value = frame.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise frame.fail(f"{key} is not a number ({value!r})") from None
    if not math.isfinite(number):
        raise frame.fail(f"{key} is not finite ({value!r})")
    return number


# ----------------------------------------------------------------------------- images

# ----------------------------------------------------------------------------- source

class NerfstudioSource:
    """scene-convert --from nerfstudio: one capture, one scene per split."""

    batch_size = 1  # a scene is a whole split of a capture

    def __init__(self, path: Path):
        self.path = Path(path)
        self.layout, folder, files = find_transforms(self.path)
        self.files = {key: str(file) for key, file in files.items()}
        self.capture = Path(os.path.abspath(folder)).name
        splits = self.splits()
        if not splits:
            raise BadInput("no frames in any split", next(iter(files.values())))
        first = next(iter(splits.values()))[0]
        height, width = image_size(first.image)
        for frames in splits.values():  # every camera now: cheap, and bad ones fail before any output
            for frame in frames:
                frame_pose(frame)
                frame_intrinsics(frame, height, width)
        self.frame_counts = {split: len(frames) for split, frames in splits.items()}
        self.info = SourceInfo(
            source=NERFSTUDIO if self.layout == NERFSTUDIO else "nerfstudio:blender",
            height=height, width=width, render_range=None, fields={},
            attrs={"source_info": self._facts(first.meta)},
            views_per_scene=max(1, round(sum(self.frame_counts.values()) / len(splits))))

    def splits(self) -> dict:
        """{split: [Frame]} of the capture, splits in train, val, test order, empty ones left out."""
        if self.layout == NERFSTUDIO:
            splits = nerfstudio_splits(Path(self.files["transforms"]))
        else:
            splits = {split: blender_frames(Path(file)) for split, file in self.files.items()}
        return {split: splits[split] for split in SPLITS if splits.get(split)}

    def _facts(self, meta: dict) -> dict:
        if self.layout == NERFSTUDIO:
            listed = any(f"{split}_filenames" in meta for split in SPLITS)
            rule = ("the json's train/val/test_filenames" if listed else
                    "nerfstudio's default: train_split_fraction 0.9; val and test both hold the eval frames")
        else:
            rule = "one transforms_<split>.json per split"
        facts = {"capture": self.capture, "layout": self.layout,
                 "transforms": [Path(file).name for file in self.files.values()],
                 "frames": self.frame_counts, "split_rule": rule,
                 "world": "the file's own frame and units (not re-oriented, centred or scaled)",
                 "rgba": "composited onto white"}
        facts.update({key: meta[key] for key in ("applied_transform", "applied_scale") if key in meta})
        return facts

    def scan(self) -> list:
        return [SceneRef(f"{self.capture}/{split}", split, split) for split in self.frame_counts]

    def load(self, refs: list) -> list:
        splits = self.splits()
        height, width = self.info.height, self.info.width
        scenes = []
        for ref in refs:
            frames = splits[ref.key]
            c2w = np.stack([frame_pose(frame) for frame in frames])
            K = np.stack([frame_intrinsics(frame, height, width) for frame in frames])
            rgb = np.stack([read_rgb(frame.image, height, width) for frame in frames])
            scenes.append(Scene(name=ref.name, split=ref.split, rgb=rgb, camera_to_world=c2w, intrinsics=K))
        return scenes
