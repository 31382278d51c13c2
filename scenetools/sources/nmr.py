"""NMR: ShapeNet renderings of the Neural Mesh Renderer (Kato et al. 2018) in the layout
DVR (Niemeyer et al. 2020) hosts them, as SRT (stelzner/srt ``srt/data/nmr.py``) and
pixelNeRF (``src/data/DVRDataset.py``) read them.

Layout (IN is the ``NMR_Dataset`` folder)::

    metadata.yaml                        {synset: {id: synset, name: class name}}, 13 classes
    <synset>/softras_train.lst           the standard split (SoftRas), one object id a line;
    <synset>/softras_val.lst             DVR's own train/val/test.lst are ignored
    <synset>/softras_test.lst
    <synset>/<object>/image/0000.png ... 0023.png   24 views, 64 x 64
    <synset>/<object>/cameras.npz        world_mat_<i>, camera_mat_<i> (and their _inv_)

A scene is an object, named ``<synset>/<object>``, its category the class name from
``metadata.yaml``. Scenes are listed split by split (train, val, test), each in metadata
order and then in list order, as SRT builds its datasets.

Conventions converted here (DVR's FAQ and ``im2mesh/common.py``):

* ``world_mat_i`` is world-to-camera: ``x_cam = world_mat @ x_world``. Its camera axes are
  OpenCV's (x right, y down, z forward): pixelNeRF flips y and z to get OpenGL cameras, and in
  the real files a camera raised 30 degrees above the object has its y axis pointing down the
  world's y (up) axis. A 3x3 block ``s R`` with a uniform scale ``s`` > 0 is made rigid:
  ``x_cam / s = R x_world + t / s`` has the same image point ``(x / z, y / z)``, so every
  pixel keeps its ray. The real files are rigid already (s = 1).
* ``camera_mat_i`` is a 4x4 K in normalised image coordinates: ``x_n = (fx_n X + cx_n Z) / Z``
  (and y likewise), with the image spanning [-1, 1] edge to edge, x_n = -1 at the left edge,
  y_n = -1 at the top edge. That is how DVR reads an image at x_n (``grid_sample`` with
  PyTorch 1.4's ``align_corners=False``) and how the Neural Mesh Renderer drew it (the pixel
  in column j has its centre at ``x_n = (2 j + 1 - W) / W``). So ``u = W / 2 (x_n + 1)``,
  ``v = H / 2 (y_n + 1)`` and::

      K = [[W/2, 0, W/2], [0, H/2, H/2], [0, 0, 1]] @ camera_mat[:3, :3]
        = [[fx_n W/2, 0, (cx_n + 1) W/2], [0, fy_n H/2, (cy_n + 1) H/2], [0, 0, 1]]

  (fx_n = fy_n = 3.7320509 = 1 / tan 15 deg, cx_n = cy_n = 0 in the real files: 119.43 px and a
  principal point at 32, the image centre). SRT builds its rays from ``linspace(-1, 1, 64)``,
  as DVR's ``arange_pixels`` does, putting the centres of the corner pixels at +-1: pixel
  spacing 2 / 63 instead of 2 / 64, as if the focal length were 63 / 64 of the true one
  (117.56 px). pixelNeRF uses the true focal length but casts pixel j through ``j - W/2``,
  half a pixel off. We keep the renderer's rays, which neither reproduces exactly.
* The world is turned z-up as SRT does (its ``rot_mat`` is ``cameras.Y_UP_TO_Z_UP``), so
  ``world_up`` is (0, 0, 1).
* ``scale_mat_i`` (DVR's normalisation for DTU; absent from NMR) and the ``_inv_`` matrices
  are not read.
* Images are RGB; an RGBA image is composited onto white, the background of the RGB ones.
* near/far: SRT's render range (2, 4) (``min_dist``, ``max_dist``), for every scene.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .. import cameras
from ..errors import BadInput
from ..scenefile import RIGID_TOLERANCE, Scene
from . import SceneRef, SourceInfo
from .files import image_size, read_npz, read_rgb, require

SPLITS = ("train", "val", "test")
LIST_NAME = "softras_{split}.lst"
NUM_VIEWS = 24
RENDER_RANGE = (2.0, 4.0)  # SRT's min_dist, max_dist
WORLD_UP = [0.0, 0.0, 1.0]


def image_path(obj: Path, view: int) -> Path:
    return obj / "image" / f"{view:04d}.png"


# ----------------------------------------------------------------------------- dataset listing

def read_metadata(root: Path) -> list:
    """[(synset, class name)] in ``metadata.yaml`` order; BadInput naming it if malformed."""
    path = require(root / "metadata.yaml")
    try:
        # BaseLoader keeps every value a string: an unquoted 03001627 would otherwise be octal.
        metadata = yaml.load(path.read_text(), Loader=yaml.BaseLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise BadInput(f"malformed YAML ({str(error).splitlines()[0]})", path) from None
    if not isinstance(metadata, dict) or not metadata:
        raise BadInput("expected a mapping {synset: {id: ..., name: ...}}", path)
    classes = []
    for key, entry in metadata.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise BadInput(f"entry {key!r} has no 'id' (expected {{id: <synset>, name: <class>}})", path)
        name = entry.get("name", entry["id"])
        classes.append((entry["id"], name if isinstance(name, str) else entry["id"]))
    return classes


def read_object_list(path: Path) -> list:
    """Object ids of a ``softras_*.lst``, one a line, blank lines skipped."""
    try:
        return [line.strip() for line in require(path).read_text().splitlines() if line.strip()]
    except UnicodeDecodeError as error:
        raise BadInput(f"not a text file ({error})", path) from None


def list_files(root: Path, classes: list) -> list:
    """[(split, synset, class name, list file)] for every split and class, in scan order;
    BadInput naming a missing class folder or list file."""
    files = []
    for split in SPLITS:
        for synset, name in classes:
            folder = require(root / synset, "folder")
            files.append((split, synset, name, require(folder / LIST_NAME.format(split=split))))
    return files


def first_object(root: Path, files: list) -> Path:
    """The folder of the first listed object (its first image gives the image size)."""
    for _, synset, _, lst in files:
        objects = read_object_list(lst)
        if objects:
            return root / synset / objects[0]
    raise BadInput(f"no objects in any {LIST_NAME.format(split='*')} of its classes", root)


# ----------------------------------------------------------------------------- cameras

def pixel_intrinsics(camera_mat: np.ndarray, height: int, width: int) -> np.ndarray:
    """Our K from DVR's normalised-coordinate camera_mat (see the module docstring)."""
    normalised_to_pixels = np.array([[width / 2, 0.0, width / 2], [0.0, height / 2, height / 2], [0.0, 0.0, 1.0]])
    return normalised_to_pixels @ camera_mat[:3, :3]


def rigid_world_to_camera(world_mat: np.ndarray):
    """(R, t) of a world-to-camera ``s R | t`` with a uniform scale s > 0, or None if it is not one."""
    block, t = world_mat[:3, :3], world_mat[:3, 3]
    det = np.linalg.det(block)
    if not det > 0:
        return None
    scale = np.cbrt(det)
    R = block / scale
    if np.abs(R.T @ R - np.eye(3)).max() > RIGID_TOLERANCE:
        return None
    return R, t / scale


def convert_cameras(path: Path, height: int, width: int):
    """camera_to_world [V, 4, 4] (OpenCV axes, z-up world) and K [V, 3, 3] in pixels from a
    ``cameras.npz``; BadInput naming it for missing keys or matrices of the wrong form."""
    keys = [f"{kind}_{i}" for i in range(NUM_VIEWS) for kind in ("world_mat", "camera_mat")]
    data = read_npz(path, keys)
    c2w, K = np.zeros((NUM_VIEWS, 4, 4)), np.zeros((NUM_VIEWS, 3, 3))
    for i in range(NUM_VIEWS):
        world_mat = _matrix(data, f"world_mat_{i}", ((4, 4), (3, 4)), path)
        if world_mat.shape == (4, 4) and not np.allclose(world_mat[3], [0, 0, 0, 1]):
            raise BadInput(f"world_mat_{i} has last row {world_mat[3].tolist()}, expected [0, 0, 0, 1]", path)
        rigid = rigid_world_to_camera(world_mat)
        if rigid is None:
            raise BadInput(f"world_mat_{i} is not a world-to-camera transform (a rotation times a uniform "
                           "scale > 0, and a translation)", path)
        c2w[i] = cameras.world_to_camera_to_c2w(*rigid)

        camera_mat = _matrix(data, f"camera_mat_{i}", ((4, 4),), path)
        pinhole = np.array([[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)  # free entries
        expected = np.where(pinhole, camera_mat, np.diag([0.0, 0.0, 1.0, 1.0]))
        if not np.allclose(camera_mat, expected) or camera_mat[0, 0] <= 0 or camera_mat[1, 1] <= 0:
            raise BadInput(f"camera_mat_{i} is not a pinhole [[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0], "
                           "[0, 0, 0, 1]] with fx, fy > 0", path)
        K[i] = pixel_intrinsics(camera_mat, height, width)
    return cameras.rotate_world(c2w, cameras.Y_UP_TO_Z_UP), K


def _matrix(data: dict, key: str, shapes: tuple, path: Path) -> np.ndarray:
    matrix = np.asarray(data[key])
    if matrix.shape not in shapes or not np.issubdtype(matrix.dtype, np.number):
        expected = " or ".join("x".join(map(str, s)) for s in shapes)
        raise BadInput(f"{key} has shape {matrix.shape} and dtype {matrix.dtype}, expected a {expected} "
                       "matrix of numbers", path)
    matrix = matrix.astype(np.float64)
    if not np.isfinite(matrix).all():
        raise BadInput(f"{key} has NaN or infinite values", path)
    return matrix


# ----------------------------------------------------------------------------- images

# ----------------------------------------------------------------------------- source

class NMRSource:
    """scene-convert --from nmr: DVR's NMR_Dataset folder."""

    batch_size = 8

    def __init__(self, path: Path):
        self.root = require(Path(path), "folder")
        self.classes = read_metadata(self.root)
        files = list_files(self.root, self.classes)
        height, width = image_size(image_path(first_object(self.root, files), 0))
        self.info = SourceInfo(
            source="nmr", height=height, width=width, render_range=RENDER_RANGE, fields={},
            attrs={"world_up": WORLD_UP, "source_info": {
                "dataset": "NMR (Kato et al.) ShapeNet renderings, DVR's NMR_Dataset",
                "classes": {synset: name for synset, name in self.classes},
                "split_lists": LIST_NAME.format(split="{train,val,test}"),
                "world": "rotated y-up to z-up as SRT (x, y, z) -> (x, -z, y)",
                "pixels": "u = W/2 (x_n + 1), v = H/2 (y_n + 1): [-1, 1] spans the image edge to edge",
                "rgba": "composited onto white"}},
            views_per_scene=NUM_VIEWS)

    def scan(self) -> list:
        """One ref per object of every softras list, checking that its folder exists."""
        refs, seen = [], {}
        for split, synset, name, lst in list_files(self.root, self.classes):
            for obj in read_object_list(lst):
                folder = self.root / synset / obj
                if not folder.is_dir():
                    raise BadInput(f"no such folder (object {obj} of {lst.relative_to(self.root)})", folder)
                scene = f"{synset}/{obj}"
                if scene in seen:
                    raise BadInput(f"object {obj} is also listed in {seen[scene].name}", lst)
                seen[scene] = lst
                refs.append(SceneRef(scene, split, (synset, obj, name)))
        return refs

    def load(self, refs: list) -> list:
        height, width = self.info.height, self.info.width
        scenes = []
        for ref in refs:
            synset, obj, category = ref.key
            folder = self.root / synset / obj
            rgb = np.stack([read_rgb(image_path(folder, i), height, width) for i in range(NUM_VIEWS)])
            c2w, K = convert_cameras(folder / "cameras.npz", height, width)
            scenes.append(Scene(name=ref.name, split=ref.split, rgb=rgb, camera_to_world=c2w, intrinsics=K,
                                near_far=RENDER_RANGE, category=category))
        return scenes
