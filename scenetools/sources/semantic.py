"""The semantic scenes dataset of semantic SRN (Kohli et al. 2020, apsk14/semantic_scenes_dataset):
PartNet chairs and tables rendered SRN-style with per-pixel part labels, as the official code
(apsk14/semantic_scene_representations: ``dataio.py``, ``data_util.py``) reads it.

Layout::

    Chair/                              the object folder: Chair or Table
      Chair-level-1.txt                 the classes: one line '<class id> <part name> ...' each
      Chair.txt                         part hierarchy (not used)
      Chair.train/ Chair.val/ Chair.test/
        <instance>/                     one folder per object, named by its ShapeNet id
          intrinsics.txt, pose/*.txt    as in SRN (see scenetools.sources.srn)
          rgb/*.png                     RGBA
          seg/*.npy                     [H, W] class id of every pixel, one file per image
          point_cloud/, result.json, result_after_merging.json   (not converted)

IN is the object folder (all its splits) or one split folder; the class file is read next to
the split folders (``<dirname(split folder)>/<Obj>-level-1.txt``), as the reference code does.
A scene is an instance: its name is the instance id, its category the object name, its split
the folder's suffix. A view is an image with the pose file and seg file of the same name.

Conventions converted here:

* Cameras, intrinsics, the half-pixel shift to our pixel centres and white compositing of
  RGBA are exactly SRN's (the reference code shares SRN's loaders): see
  :mod:`scenetools.sources.srn`. (The reference sets only alpha = 0 pixels to white and
  keeps the colour of the others; both agree wherever alpha is 0 or 255.)
* ``semantic`` holds the class ids as stored, uint8 (uint16 past 256 classes). As in the
  reference, there are ``max(id) + 1`` classes, and ``semantic_classes[i]`` is the part name
  of id i from the class file. Id 0 is the background (every pixel of no part, the empty
  background included; the reference draws it white): it is named ``background`` unless the
  class file names it. Ids the class file skips are named ``unused_<id>``.
* No near/far or render range is known for these renders: left unset.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..scenefile import Scene
from . import SceneRef, SourceInfo
from .files import read_npy, require
from .srn import SPLITS, list_instances, read_instance, survey

SPLIT_FOLDER = re.compile(r"(?P<object>[^.]+)\.(?P<split>train|val|test)")
BACKGROUND = "background"


def find_splits(path: Path) -> tuple:
    """(object name, [(split, folder)]) of IN: an object folder or one of its split folders."""
    path = require(path, "folder")
    match = SPLIT_FOLDER.fullmatch(path.name)
    if match:
        return match["object"], [(match["split"], str(path))]
    name = path.name
    found = [(split, str(path / f"{name}.{split}")) for split in SPLITS if (path / f"{name}.{split}").is_dir()]
    if not found:
        raise BadInput(f"neither a semantic scenes object folder (holding {name}.train, {name}.val or "
                       f"{name}.test) nor one of its split folders", path)
    return name, found


def read_class_names(path) -> list:
    """Class names indexed by id from a ``<Obj>-level-1.txt``; BadInput naming it if malformed."""
    path = require(path)
    try:
        lines = path.read_text().splitlines()
    except (UnicodeDecodeError, OSError) as error:
        raise BadInput(f"unreadable class file ({error})", path) from None
    names = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise BadInput(f"line {number}: expected '<class id> <part name> ...', got {line.strip()!r}", path)
        class_id = int(fields[0])
        if class_id in names:
            raise BadInput(f"line {number}: class id {class_id} is given twice", path)
        names[class_id] = fields[1]
    if not names:
        raise BadInput("no classes", path)
    if max(names) >= 2**16:
        raise BadInput(f"class id {max(names)} does not fit in 16 bits", path)
    return [names.get(i, BACKGROUND if i == 0 else f"unused_{i}") for i in range(max(names) + 1)]


def read_segmentation(path, height: int, width: int, num_classes: int) -> np.ndarray:
    """int64 [H, W] class ids of a seg .npy, checked against the image size and the classes."""
    seg = read_npy(path)
    if seg.shape == (height, width, 1):
        seg = seg[..., 0]
    if seg.shape != (height, width):
        raise BadInput(f"segmentation of shape {list(seg.shape)}, expected [{height}, {width}] "
                       "(the size of its image)", path)
    if seg.dtype.kind == "f" and np.isfinite(seg).all() and (seg == np.round(seg)).all():
        seg = seg.astype(np.int64)  # whole numbers stored as floats are fine
    if seg.dtype.kind not in "uib":
        raise BadInput(f"expected integer class ids, got {seg.dtype} values", path)
    seg = seg.astype(np.int64)
    if seg.min() < 0 or seg.max() >= num_classes:
        raise BadInput(f"class ids {seg.min()}..{seg.max()} outside the {num_classes} classes 0..{num_classes - 1} "
                       "of the class file", path)
    return seg


class SemanticSource:
    """scene-convert --from semantic: a semantic scenes object folder (Chair, Table) or split."""

    batch_size = 4

    def __init__(self, path: Path):
        self.path = Path(path)
        self.object_name, self.split_folders = find_splits(self.path)
        self.class_file = str(Path(self.split_folders[0][1]).parent / f"{self.object_name}-level-1.txt")
        classes = read_class_names(self.class_file)
        height, width, views = survey([folder for _, folder in self.split_folders])
        self.info = SourceInfo(
            source=f"semantic:{self.object_name.lower()}", height=height, width=width, render_range=None,
            fields={"semantic": "uint8" if len(classes) <= 256 else "uint16"},
            attrs={"semantic_classes": classes, "source_info": {
                "dataset": f"semantic scenes ({self.object_name})",
                "split_folders": [Path(folder).name for _, folder in self.split_folders],
                "class_file": Path(self.class_file).name,
                "background_class": 0,
                "pixel_centres": "cx, cy = SRN's rescaled cx, cy + 0.5 (SRN casts pixel (i, j) through (j, i))",
                "rgba": "composited onto white"}},
            views_per_scene=views)

    def scan(self) -> list:
        """One ref per instance folder, checking only that each has an ``intrinsics.txt``."""
        refs = []
        for split, folder in self.split_folders:
            for instance in list_instances(folder):
                require(instance / "intrinsics.txt")
                refs.append(SceneRef(instance.name, split, str(instance)))
        return refs

    def load(self, refs: list) -> list:
        num_classes = len(self.info.attrs["semantic_classes"])
        dtype = self.info.fields["semantic"]
        H, W = self.info.height, self.info.width
        scenes = []
        for ref in refs:
            instance = Path(ref.key)
            views, rgb, c2w, K = read_instance(instance, H, W)
            seg_folder = require(instance / "seg", "folder")
            semantic = np.stack([read_segmentation(require(seg_folder / f"{image.stem}.npy"), H, W, num_classes)
                                 for image, _ in views]).astype(dtype)
            scenes.append(Scene(name=ref.name, split=ref.split, rgb=rgb, camera_to_world=c2w, intrinsics=K,
                                semantic=semantic, category=self.object_name))
        return scenes
