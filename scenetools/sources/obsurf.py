"""ObSuRF's CLEVR3D and MultiShapeNet datasets (stelzner.github.io/obsurf), as ObSuRF, SRT and
OSRT read them (``obsurf/data.py``, ``srt/data/obsurf.py``).

Layout of the input folder::

    metadata.npz                        shape [N, max_objects] (> 0 marks an object),
                                        camera_pos [N, V, 3] (V = 3); MSN also has shape_file
    images/img_{scene}_{view}.png       320 x 240 RGBA; the alpha channel is dropped
    depths/depths_{scene}_{view}.png    uint16, depth = value / (65536 * 0.025)
    masks/masks_{scene}_{view}.png      uint8 instance index, 0 = background

The variant is told by ``metadata.npz``: with ``shape_file`` it is MultiShapeNet
(``obsurf:msn``), without it CLEVR3D (``obsurf:clevr3d``).

Scenes are split by index as the reference loaders do, CLEVR3D train [0, 70000), val
[70000, 75000) (SRT/OSRT; ObSuRF itself validates on [70000, 70500)), test [85000, 100000);
MSN train [0, 80000), val [80000, 80500), test [90000, 100000). Scenes outside every range
are not converted, nor are scenes with more than 6 objects. A scene's name is its index.

Conventions converted here:

* Cameras are not stored: every camera sits at ``camera_pos`` and looks at the world origin,
  with world z up and no roll. The image's right axis is ``forward x z``, its down axis
  ``forward x right``, so row 0 is the top. It is a pinhole of focal length 0.035 on a sensor
  0.032 wide, 320 x 240 pixels, rays through pixel centres (``get_camera_rays``): in pixels
  ``fx = fy = 0.035 / 0.032 * 320 = 350``, ``cx = 160``, ``cy = 120``.
* Depth: CLEVR3D stores the distance from the camera centre (our ray distance). MSN stores
  the camera-frame z, which is divided by the cosine of each pixel-centre ray to the view
  axis (``cameras.z_depth_to_ray_distance``, as ObSuRF's ``zs_to_depths``). The largest
  value, 65535 (39.9994 units, past the render distance of 40), marks depth clipped by the
  renderer: no surface within range, stored as ``inf``. A 0 stays 0, "unknown".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import cameras
from ..errors import BadInput
from ..scenefile import Scene
from . import SceneRef, SourceInfo
from .files import read_image, read_npz, require

HEIGHT, WIDTH = 240, 320
FOCAL_LENGTH, SENSOR_WIDTH = 0.035, 0.032  # same units; only their ratio matters
FOCAL_PIXELS = FOCAL_LENGTH / SENSOR_WIDTH * WIDTH
DEPTH_SCALE = 65536 * 0.025  # stored value per unit of depth
DEPTH_CLIPPED = 65535
RENDER_RANGE = (0.035, 35.0)  # SRT/OSRT render_kwargs min_dist, max_dist
MAX_OBJECTS = 6
SPLIT_RANGES = {
    "clevr3d": {"train": (0, 70000), "val": (70000, 75000), "test": (85000, 100000)},
    "msn": {"train": (0, 80000), "val": (80000, 80500), "test": (90000, 100000)},
}
FOLDERS = ("images", "depths", "masks")


def obsurf_intrinsics() -> np.ndarray:
    """K of every ObSuRF camera: square pixels, principal point at the image centre."""
    return cameras.intrinsics(FOCAL_PIXELS, FOCAL_PIXELS, WIDTH / 2, HEIGHT / 2)


def camera_to_world(camera_pos) -> np.ndarray:
    """[V, 4, 4] poses of cameras at ``camera_pos`` [V, 3] looking at the origin, z up."""
    return cameras.look_at(np.asarray(camera_pos, np.float64), np.zeros(3), up=(0.0, 0.0, 1.0))


class ObsurfSource:
    """scene-convert --from obsurf: ObSuRF's CLEVR3D or MultiShapeNet folder."""

    batch_size = 4

    def __init__(self, root: Path):
        self.root = require(root, "folder")
        for folder in FOLDERS:
            require(self.root / folder, "folder")
        metadata = self._read_metadata()
        self.variant = "msn" if "shape_file" in metadata else "clevr3d"
        views = metadata["camera_pos"].shape[1]
        ranges = SPLIT_RANGES[self.variant]
        self.info = SourceInfo(
            source=f"obsurf:{self.variant}", height=HEIGHT, width=WIDTH, render_range=RENDER_RANGE,
            fields={"depth": "float32", "instance": "uint8"},
            attrs={"world_up": [0.0, 0.0, 1.0],
                   "source_info": {"dataset": "MultiShapeNet (ObSuRF)" if self.variant == "msn" else "CLEVR3D",
                                   "split_ranges": {k: list(v) for k, v in ranges.items()},
                                   "max_objects": MAX_OBJECTS, "focal_length": FOCAL_LENGTH,
                                   "sensor_width": SENSOR_WIDTH,
                                   "stored_depth": "camera z" if self.variant == "msn" else "ray distance",
                                   "clipped_depth": f"{DEPTH_CLIPPED} -> inf"}},
            views_per_scene=int(views))

    def _read_metadata(self) -> dict:
        """metadata.npz, checked: ``shape`` [N, K] and finite ``camera_pos`` [N, V, 3] of
        cameras that can look at the origin with z up."""
        path = self.root / "metadata.npz"
        metadata = read_npz(path, keys=("shape", "camera_pos"))
        shape, camera_pos = metadata["shape"], metadata["camera_pos"]
        if shape.ndim != 2 or camera_pos.ndim != 3 or camera_pos.shape[-1] != 3 or len(shape) != len(camera_pos):
            raise BadInput(f"expected shape [N, objects] and camera_pos [N, views, 3], got {list(shape.shape)} "
                           f"and {list(camera_pos.shape)}", path)
        if camera_pos.shape[1] < 1 or not np.isfinite(camera_pos).all():
            raise BadInput("camera_pos has no views or non-finite values", path)
        degenerate = np.linalg.norm(camera_pos[..., :2], axis=-1) < 1e-6
        if degenerate.any():
            scene, view = np.argwhere(degenerate)[0]
            raise BadInput(f"camera_pos of scene {scene} view {view} is on the z axis: no defined camera "
                           "looking at the origin with z up", path)
        return metadata

    def scan(self) -> list:
        """Scenes in the split ranges with at most MAX_OBJECTS objects, by split then index.

        Each key carries the scene index and its camera positions, so ``load`` needs no
        metadata.
        """
        metadata = self._read_metadata()
        num_objects = (metadata["shape"] > 0).sum(1)
        camera_pos = metadata["camera_pos"]
        refs = []
        for split, (start, stop) in SPLIT_RANGES[self.variant].items():
            for index in range(start, min(stop, len(num_objects))):
                if num_objects[index] <= MAX_OBJECTS:
                    positions = tuple(map(tuple, camera_pos[index].tolist()))
                    refs.append(SceneRef(str(index), split, (index, positions)))
        return refs

    def load(self, refs: list) -> list:
        return [self._load_scene(ref) for ref in refs]

    def _load_scene(self, ref: SceneRef) -> Scene:
        index, positions = ref.key
        K = obsurf_intrinsics()
        views = [self._read_view(index, view, K) for view in range(len(positions))]
        rgb, depth, instance = (np.stack(field) for field in zip(*views))
        return Scene(name=ref.name, split=ref.split, rgb=rgb, camera_to_world=camera_to_world(positions),
                     intrinsics=np.broadcast_to(K, (len(positions), 3, 3)).copy(), depth=depth,
                     instance=instance, near_far=RENDER_RANGE)

    def _read_view(self, index: int, view: int, K: np.ndarray):
        """rgb uint8 [H, W, 3], ray-distance depth float32 [H, W] and instance uint8 [H, W]."""
        image_path = self.root / "images" / f"img_{index}_{view}.png"
        image = _read_sized(image_path, channels=(3, 4))
        depth_path = self.root / "depths" / f"depths_{index}_{view}.png"
        stored = _read_sized(depth_path, channels=None)
        if stored.dtype not in (np.uint16, np.int32) or stored.max() > DEPTH_CLIPPED:
            raise BadInput(f"expected a 16-bit depth PNG, got {stored.dtype} values", depth_path)
        mask_path = self.root / "masks" / f"masks_{index}_{view}.png"
        mask = _read_sized(mask_path, channels=None)
        if mask.dtype.kind not in "ui" or mask.min() < 0 or mask.max() > 255:
            raise BadInput("expected an 8-bit instance index PNG", mask_path)
        return image[..., :3], self._ray_distance(stored, K), mask.astype(np.uint8)

    def _ray_distance(self, stored: np.ndarray, K: np.ndarray) -> np.ndarray:
        depth = stored.astype(np.float64) / DEPTH_SCALE
        if self.variant == "msn":
            depth = cameras.z_depth_to_ray_distance(depth, K)
        depth[stored == DEPTH_CLIPPED] = np.inf
        return depth.astype(np.float32)


def _read_sized(path: Path, channels) -> np.ndarray:
    """An image of HEIGHT x WIDTH pixels with ``channels`` (None: a single-channel image)."""
    image = read_image(path)
    ok = image.shape[:2] == (HEIGHT, WIDTH) and (
        image.ndim == 2 if channels is None else image.ndim == 3 and image.shape[2] in channels)
    if not ok:
        kind = "single-channel" if channels is None else "RGB(A)"
        raise BadInput(f"expected a {kind} image of {WIDTH}x{HEIGHT} pixels, got shape {list(image.shape)}", path)
    return image
