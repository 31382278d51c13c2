"""SRN's ShapeNet cars and chairs (Sitzmann et al. 2019), as the SRN code
(vsitzmann/scene-representation-networks: ``dataio.py``, ``data_util.py``, ``util.py``) and
pixelNeRF (``src/data/SRNDataset.py``) read them.

Layout::

    cars_train/                         a split folder: <category>_<split>, category cars or
      <instance>/                       chairs, split train, val or test; one folder per
        intrinsics.txt                  ShapeNet model, named by its id
        rgb/000000.png ...              128 x 128, RGB or RGBA
        pose/000000.txt ...             4x4 camera-to-world: 16 numbers on one line, or 4 lines of 4
    chairs_train/chairs_2.0_train/<instance>/...   the public chairs_train is one level deeper

IN is one split folder or a folder holding several split folders. A split folder is any folder
of instance folders (as SRN's reader takes any), whatever its name, since other datasets ship
in this layout under other names: a name ``<category>_<split>`` (``cars_train``,
``lamps_test``; split train, val or test) gives the category and the split; any other name
(``my_objects``) gives neither, and its split is the ``split`` argument (``scene-convert
--as-split NAME``, default train). A folder holding split folders holds them under
``<category>_<split>`` names. A scene is an instance: its name is the instance id, its
category the folder's (``""`` when the name gives none), its split the folder's. Views are
the images in file-name order (SRN's sorted glob), each paired with the pose file of the
same name; their number varies (50 to 251).

Conventions converted here:

* Poses are camera-to-world in OpenCV camera axes (SRN README), as ours: used as they are,
  after checking that they are finite rigid transforms.
* ``intrinsics.txt`` is ``f cx cy 0`` / grid barycentre / scale / ``H W`` (a fifth line, a
  world2cam flag, is parsed and ignored by SRN, and here). f, cx and cy are pixels of an
  H x W image (SRN README; SRN's renderer writes its own resolution there). They are rescaled
  to the stored image size h x w as SRN's ``parse_intrinsics`` does:
  ``fx = f * w / W``, ``fy = f * h / H``, ``cx' = cx * w / W``, ``cy' = cy * h / H``.
* Pixel coordinates: SRN (``np.mgrid`` uv, ``geometry.lift``) and pixelNeRF (``unproj_map``)
  cast the ray of pixel (row i, column j) through the integer image point (j, i), i.e.
  ``x = (j - cx') / fx``. Our pixel centre is (j + 0.5, i + 0.5), so ``K = [[fx, 0, cx' + 0.5],
  [0, fy, cy' + 0.5], [0, 0, 1]]``: every pixel keeps exactly the ray SRN and pixelNeRF use.
  (SRN's Blender renderer put the principal point at W / 2 in pixel-centre coordinates, so
  these rays are half a pixel off the renderer's own; we keep the ones the models trained on.)
* RGBA images are composited onto white (SRN's renderings have a white background); RGB
  images are kept as they are. Images are not cropped or resized.
* near/far: cars (0.8, 1.8), chairs (1.25, 2.75), pixelNeRF's ``z_near``/``z_far``; they are
  also the file's render range (their union when IN holds both categories). Other categories
  have no known near/far: NaN per scene, and no render range in the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import cameras
from ..errors import BadInput
from ..scenefile import RIGID_TOLERANCE, Scene
from . import SceneRef, SourceInfo
from .files import image_size, read_numbers, read_rgb, require

NEAR_FAR = {"cars": (0.8, 1.8), "chairs": (1.25, 2.75)}
SPLITS = ("train", "val", "test")
DEFAULT_SPLIT = "train"  # of a folder of instances whose name gives no split
#: <category>_<split>: cars_train, chairs_test, lamps_val, ... and the nested chairs_2.0_train.
SPLIT_FOLDER = re.compile(r"(.+?)(?:_2\.0)?_(train|val|test)")
SPLIT_NAME = re.compile(r"[\w.-]+")
INSTANCE_ENTRIES = ("rgb", "pose", "intrinsics.txt")  # any one of them marks an instance folder
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # SRN's glob_imgs
PIXEL_CENTRE_SHIFT = 0.5  # SRN's integer pixel coordinates -> our pixel centres


# ----------------------------------------------------------------------------- files of an instance
# Shared with the semantic scenes dataset (scenetools.sources.semantic), which uses the
# same per-instance layout.

@dataclass(frozen=True)
class Intrinsics:
    """``intrinsics.txt``: focal length and principal point in pixels of a height x width image."""

    focal: float
    cx: float
    cy: float
    height: int
    width: int


def read_intrinsics(path) -> Intrinsics:
    """Parse an SRN ``intrinsics.txt``; BadInput naming it if it is malformed."""
    rows = read_numbers(path)
    if len(rows) not in (4, 5) or [len(r) for r in rows[:4]] != [4, 3, 1, 2] or rows[4:] and len(rows[4]) != 1:
        raise BadInput("expected SRN intrinsics: lines 'f cx cy 0', 'x y z' (grid barycentre), 'scale', "
                       "'height width' and optionally a world2cam flag", path)
    (focal, cx, cy, _), (height, width) = rows[0], rows[3]
    if not np.isfinite([focal, cx, cy]).all() or focal <= 0:
        raise BadInput(f"focal length {focal} and principal point ({cx}, {cy}) must be finite, f > 0", path)
    if not np.isfinite([height, width]).all() or min(height, width) < 1 or height % 1 or width % 1:
        raise BadInput(f"image size '{height:g} {width:g}' is not two positive integers 'height width'", path)
    return Intrinsics(focal, cx, cy, int(height), int(width))


def intrinsics_matrix(intrinsics: Intrinsics, height: int, width: int) -> np.ndarray:
    """Our 3x3 K for images of height x width pixels (see the module docstring)."""
    sx, sy = width / intrinsics.width, height / intrinsics.height
    return cameras.intrinsics(intrinsics.focal * sx, intrinsics.focal * sy,
                              intrinsics.cx * sx + PIXEL_CENTRE_SHIFT, intrinsics.cy * sy + PIXEL_CENTRE_SHIFT)


def read_pose(path) -> np.ndarray:
    """A pose file as a 4x4 camera-to-world; BadInput naming it unless it is 16 numbers (one
    line of 16 or 4 lines of 4) forming a finite rigid transform."""
    rows = read_numbers(path)
    layout = [len(row) for row in rows]
    if layout not in ([16], [4, 4, 4, 4]):
        raise BadInput(f"expected a 4x4 camera-to-world matrix as one line of 16 numbers or 4 lines of 4, "
                       f"found {sum(layout)} numbers on {len(rows)} line{'s' * (len(rows) != 1)}", path)
    c2w = np.array(rows, np.float64).reshape(4, 4)
    if not np.isfinite(c2w).all():
        raise BadInput("pose has NaN or infinite values", path)
    error = cameras.rigid_transform_error(c2w)
    if error > RIGID_TOLERANCE:
        raise BadInput(f"pose is not a rigid camera-to-world transform (error {error:.3g})", path)
    return c2w


def list_views(instance: Path) -> list:
    """[(image path, pose path)] of an instance, in file-name order, paired by file name."""
    rgb_folder, pose_folder = require(instance / "rgb", "folder"), require(instance / "pose", "folder")
    images = sorted(p for p in rgb_folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise BadInput("no images", rgb_folder)
    poses = {p.stem: p for p in pose_folder.glob("*.txt")}
    views = []
    for image in images:
        pose = poses.pop(image.stem, None)
        if pose is None:
            raise BadInput(f"no such file (the pose of rgb/{image.name})", pose_folder / f"{image.stem}.txt")
        views.append((image, pose))
    if poses:
        raise BadInput(f"pose without an image in {rgb_folder}", min(poses.values()))
    return views


def read_instance(instance: Path, height: int, width: int):
    """Views of one instance folder: (views as list_views gives them, rgb uint8 [V, H, W, 3],
    camera_to_world [V, 4, 4], intrinsics [V, 3, 3]) in our conventions."""
    intrinsics = read_intrinsics(require(instance / "intrinsics.txt"))
    views = list_views(instance)
    rgb = np.stack([read_rgb(image, height, width) for image, _ in views])
    c2w = np.stack([read_pose(pose) for _, pose in views])
    K = np.broadcast_to(intrinsics_matrix(intrinsics, height, width), (len(views), 3, 3)).copy()
    return views, rgb, c2w, K


def list_instances(folder: Path) -> list:
    """Instance folders of a split folder, sorted by name (SRN's instance order)."""
    instances = sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))
    if not instances:
        raise BadInput("no instance folders", folder)
    return instances


def survey(split_folders: list) -> tuple:
    """(height, width, typical views per scene) of a dataset, cheaply: the image size is the
    first instance's first image's, the view count is estimated from each split's first
    instance (splits differ: SRN's train instances have 50 views, test ones 251)."""
    height = width = None
    scenes = views = 0
    for folder in split_folders:
        instances = list_instances(folder)
        first = list_views(instances[0])
        if height is None:
            height, width = image_size(first[0][0])
        scenes += len(instances)
        views += len(instances) * len(first)
    return height, width, max(1, round(views / scenes))


# ----------------------------------------------------------------------------- source

def find_split_folders(path: Path, split: str | None = None) -> list:
    """[(category, split, folder holding the instances)] of IN, ordered by category then
    train, val, test: IN itself when it is a folder of instance folders (category and split
    from a ``<category>_<split>`` name, else ``""`` and ``split``, default train), or the
    ``<category>_<split>`` folders inside it. ValueError if ``split`` contradicts the names."""
    path = require(path, "folder")
    if split is not None and not SPLIT_NAME.fullmatch(split):
        raise ValueError(f"--as-split {split!r}: a split name is letters, digits, '_', '-' or '.'")
    if _is_instance(path):
        raise BadInput("an SRN instance folder; give the folder of instance folders holding it", path)
    children = [p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    named = _split_folder(path)
    if any(_is_instance(p) for p in children):
        found = [named or ("", split or DEFAULT_SPLIT, str(path))]
    else:  # split folders inside, or (an empty split folder) none
        found = sorted(filter(None, map(_split_folder, children)), key=lambda s: (s[0], SPLITS.index(s[1])))
        found = found or [named] * bool(named)
    if not found:
        raise BadInput("neither a folder of SRN instance folders (each holding rgb/, pose/ and intrinsics.txt) "
                       "nor a folder holding split folders (cars_train, chairs_val, <category>_<split>, ...)", path)
    if split is not None and {s[1] for s in found} != {split}:
        raise ValueError(f"--as-split {split} applies to a folder of instance folders whose name gives no split; "
                         f"{path.name} gives {', '.join(sorted({s[1] for s in found}))}")
    return found


def _is_instance(path: Path) -> bool:
    return any((path / entry).exists() for entry in INSTANCE_ENTRIES)


def _split_folder(path: Path):
    """(category, split, instance folder) of a folder named ``<category>_<split>``, else None."""
    match = SPLIT_FOLDER.fullmatch(path.name)
    if not match:
        return None
    category, split = match.groups()
    nested = path / f"{category}_2.0_{split}"  # "Ugly thing from SRN's public dataset" (pixelNeRF)
    return category, split, str(nested if nested.is_dir() else path)


def _render_range(categories: list):
    """The union of the categories' near/far, or None when one of them has none."""
    if not all(c in NEAR_FAR for c in categories):
        return None
    ranges = [NEAR_FAR[c] for c in categories]
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _dataset_name(categories: list, split_folders: list) -> str:
    if all(c in NEAR_FAR for c in categories):
        return "SRN ShapeNet " + " and ".join(categories)
    return "SRN layout: " + ", ".join(Path(folder).name for _, _, folder in split_folders)


class SRNSource:
    """scene-convert --from srn: SRN's ShapeNet cars/chairs split folders, or any folder of
    instance folders in their layout (``split``: its split when its name gives none)."""

    batch_size = 4

    def __init__(self, path: Path, split: str | None = None):
        self.path = Path(path)
        self.split_folders = find_split_folders(self.path, split)
        height, width, views = survey([folder for _, _, folder in self.split_folders])
        categories = sorted({category for category, _, _ in self.split_folders})
        self.info = SourceInfo(
            source="srn:" + categories[0] if len(categories) == 1 and categories[0] else "srn",
            height=height, width=width, render_range=_render_range(categories), fields={},
            attrs={"source_info": {
                "dataset": _dataset_name(categories, self.split_folders),
                "split_folders": [Path(folder).name for _, _, folder in self.split_folders],
                "near_far": {c: list(NEAR_FAR[c]) for c in categories if c in NEAR_FAR},
                "pixel_centres": "cx, cy = SRN's rescaled cx, cy + 0.5 (SRN casts pixel (i, j) through (j, i))",
                "rgba": "composited onto white"}},
            views_per_scene=views)

    def scan(self) -> list:
        """One ref per instance folder, checking only that each has an ``intrinsics.txt``."""
        refs, seen = [], {}
        for category, split, folder in self.split_folders:
            for instance in list_instances(folder):
                require(instance / "intrinsics.txt")
                if instance.name in seen:
                    raise BadInput(f"instance {instance.name} is also in {seen[instance.name]}", instance)
                seen[instance.name] = instance.parent
                refs.append(SceneRef(instance.name, split, (str(instance), category)))
        return refs

    def load(self, refs: list) -> list:
        scenes = []
        for ref in refs:
            instance, category = ref.key
            _, rgb, c2w, K = read_instance(Path(instance), self.info.height, self.info.width)
            scenes.append(Scene(name=ref.name, split=ref.split, rgb=rgb, camera_to_world=c2w, intrinsics=K,
                                near_far=NEAR_FAR.get(category), category=category))
        return scenes
