"""What models train on: input views with their rays, plus target rays from target views.

Which views are inputs and which give targets is a :class:`ViewSelection`; the named
``PROTOCOLS`` reproduce the reference setups. All rays are in the world frame of the scene
file (OpenCV camera axes); models that want a canonical frame apply it themselves.

Randomness (input views, sampled rays) comes from ``(seed, epoch, item)`` only, so an item
is the same in whichever DataLoader worker or DDP rank reads it, and a resumed run sees the
same data as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from . import cameras
from .errors import BadInput
from .scenefile import SceneFile


@dataclass(frozen=True)
class ViewSelection:
    """Which views of a scene are model inputs, and which supply target rays.

    Args:
        num_inputs: input views per item.
        inputs: ``random`` draws the inputs per item; ``each`` makes every (scene, view)
            pair an item whose first input is that view (the rest drawn at random), as the
            NMR and CLEVR3D loaders iterate; ``first`` always takes views 0..num_inputs-1;
            ``given`` always takes ``input_views`` (SRN's one-shot view 64, two-shot 64 and 104).
        targets: ``rest`` takes target rays from the views that are not inputs; ``all``
            from every view, inputs included (the ObSuRF/CLEVR3D protocol); ``held_out`` from
            the held-out views only (novel views of scenes trained on); ``given`` from
            ``target_views`` (semantic SRN's labelled views 0, 1 and 2).
        held_out: the last ``held_out`` views of every scene are neither inputs nor targets
            (unless ``targets`` is ``held_out``): training never sees them.
        num_targets: draw this many of those target views per item (None: all of them); with
            full images, models that need whole images (a U-Net on rendered features) train
            on one image per item.
    """

    num_inputs: int = 1
    inputs: str = "random"
    targets: str = "rest"
    input_views: tuple = ()
    held_out: int = 0
    target_views: tuple = ()
    num_targets: int | None = None

    def __post_init__(self):
        if self.inputs not in ("random", "each", "first", "given") or \
                self.targets not in ("rest", "all", "held_out", "given"):
            raise ValueError(f"bad view selection {self}")
        if (self.targets == "given") != bool(self.target_views) or len(set(self.target_views)) != len(self.target_views):
            raise ValueError(f"targets 'given' goes with distinct target_views, got targets {self.targets!r} and "
                             f"target_views {list(self.target_views)}")
        if self.num_targets is not None and self.num_targets < 1:
            raise ValueError(f"num_targets must be at least 1, got {self.num_targets}")
        if self.held_out < 0 or (self.targets == "held_out" and not self.held_out):
            raise ValueError(f"targets 'held_out' needs held-out views (data.held_out_views), got {self.held_out}")
        if self.inputs == "given" and (len(self.input_views) != self.num_inputs or
                                       len(set(self.input_views)) != len(self.input_views)):
            raise ValueError(f"inputs 'given' needs num_inputs ({self.num_inputs}) distinct input_views, "
                             f"got {list(self.input_views)}")


#: The reference protocols: NMR 1 input / 23 targets; MSN 5 random inputs / the other 5;
#: ObSuRF CLEVR3D and MSN 1 input with targets from all 3 views.
PROTOCOLS = {
    "nmr": ViewSelection(1, "each", "rest"),
    "msn": ViewSelection(5, "random", "rest"),
    "clevr3d": ViewSelection(1, "each", "all"),
    "obsurf_msn": ViewSelection(1, "each", "all"),
}


class SceneDataset(Dataset):
    """Items of one split of a scene file.

    Each item is a dict of tensors (I inputs, R target rays, all float32 unless noted):

    * ``input_images`` [I, 3, H, W] in [0, 1], ``input_rays`` [I, H, W, 3] unit world
      directions, ``input_camera_pos`` [I, 3], ``input_camera_to_world`` [I, 4, 4],
      ``input_intrinsics`` [I, 3, 3], ``input_views`` [I] (int64, view indices);
    * ``target_pixels`` [R, 3] in [0, 1], ``target_rays`` [R, 3], ``target_camera_pos`` [R, 3];
    * when the file has them: ``input_instance`` [I, H, W] and ``target_instance`` [R]
      (int64, 0 = background), ``target_depth`` [R] (distance along the ray),
      ``target_semantic`` [R];
    * ``scene_index`` (int64, row in the scene file), ``scene_key`` (int64, the scene's
      identity across files, see :func:`scene_key`), ``render_range`` [2] (the scene's near
      and far distance, see :func:`render_range`).

    ``num_rays=None`` gives full target images instead: R = T * H * W pixels of the T
    target views in view order, ``target_views`` [T] says which views they are and
    ``image_size`` [2] (int64) their height and width.

    ``scene_names`` keeps only the scenes of the split with these names, in this order (the
    labelled instances of a few-shot protocol); a name the split lacks is an error.

    ``input_stride`` s > 1 keeps every s-th input pixel from s // 2 on, in both directions (the
    reference's ``downsample``); input intrinsics are adjusted to match. Targets stay at full
    resolution.

    ``resolution`` (an image height in pixels; None: the file's) resizes every view first,
    inputs and targets, keeping the aspect ratio: colours by area averaging (the reference's
    cv2.INTER_AREA), labels and depth by the nearest pixel, intrinsics scaled to match (a
    resolution curriculum sets it per stage, see ``training.curriculum``).
    """

    def __init__(self, scenes: SceneFile | str, split: str | None = "train",
                 views: ViewSelection = ViewSelection(), num_rays: int | None = 1024, seed: int = 0,
                 input_stride: int = 1, resolution: int | None = None, scene_names=None):
        self.scenes = scenes if isinstance(scenes, SceneFile) else SceneFile(scenes)
        self.input_stride, self.resolution = input_stride, resolution
        self.keys = {}
        self.scene_indices = self.scenes.split(split) if split else np.arange(self.scenes.num_scenes)
        if scene_names is not None:
            self.scene_indices = self.named_scenes(split, scene_names)
        self.views, self.num_rays, self.seed, self.epoch = views, num_rays, seed, 0
        counts = self.scenes.view_count[self.scene_indices] - views.held_out  # the views it may show
        needed = views.num_inputs + (views.targets == "rest")
        if counts.min() < needed:
            raise ValueError(f"{self.scenes.path}: scenes need at least {needed + views.held_out} views for "
                             f"{views}, some have {counts.min() + views.held_out}")
        for kind, given in (("input", views.input_views), ("target", views.target_views)):
            if given and max(given) >= counts.min():
                raise ValueError(f"{self.scenes.path}: {kind} view {max(given)} does not exist in scenes "
                                 f"of {counts.min()} views (views count from 0"
                                 + (f"; the last {views.held_out} are held out" if views.held_out else "")
                                 + f"); choose other {kind} views")
        if views.inputs == "each":  # item -> (scene, first input view)
            self.items = [(s, v) for s, c in zip(self.scene_indices, counts) for v in range(c)]
        else:
            self.items = [(s, -1) for s in self.scene_indices]
        self.label_fields = [f for f in ("instance", "semantic", "depth") if f in self.scenes.fields]
        self.file_render_range = render_range(self.scenes)

    def named_scenes(self, split, names) -> np.ndarray:
        """Indices of the scenes called ``names`` among the split's."""
        row = {self.scenes.names[i]: i for i in self.scene_indices}
        missing = [name for name in names if name not in row]
        if missing:
            raise ValueError(f"{self.scenes.path}: the {split or 'whole'} split has no scene {missing[0]!r} "
                             f"({len(missing)} of the {len(names)} scenes named are missing; check data.train_scenes)")
        return np.asarray([row[name] for name in names], dtype=np.int64)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the views in its items: the file's, or resized to ``resolution``
        (the width keeps the aspect ratio)."""
        H, W = self.scenes.height, self.scenes.width
        if self.resolution is None or self.resolution == H:
            return H, W
        return self.resolution, max(1, round(W * self.resolution / H))

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def scene_render_range(self, scene: int) -> np.ndarray:
        """(near, far) of one scene: its own where the file has one, else the file's."""
        own = self.scenes.near_far[scene] if self.scenes.near_far is not None else None
        return own if own is not None and np.isfinite(own).all() else self.file_render_range

    def read(self, scene: int, views: np.ndarray, fields) -> dict:
        """``read_views`` with every failure named by file, scene and view, and cameras checked
        (a NaN camera would otherwise train on NaN rays)."""
        where = f"scene {scene} ({self.scenes.names[scene]}), views {views.tolist()}"
        try:
            data = self.scenes.read_views(scene, views, fields)
        except BadInput:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise BadInput(f"{where}: cannot read ({' '.join(str(error).split())})", self.scenes.path) from None
        finite = np.isfinite(data["camera_to_world"]).all(axis=(1, 2)) & np.isfinite(data["intrinsics"]).all(axis=(1, 2))
        if not finite.all():
            raise BadInput(f"scene {scene} ({self.scenes.names[scene]}): non-finite camera (NaN or inf) in view "
                           f"{int(views[~finite][0])}", self.scenes.path)
        return data

    def scene_key(self, scene: int) -> int:
        """:func:`scene_key` of a scene of this file (computed once per scene)."""
        if scene not in self.keys:
            self.keys[scene] = scene_key(self.scenes, scene)
        return self.keys[scene]

    def choose_views(self, index: int, rng: np.random.Generator):
        """(scene, input views, target views) of item ``index``."""
        scene, first = self.items[index]
        total, n = int(self.scenes.view_count[scene]), self.views.num_inputs
        count = total - self.views.held_out  # views 0..count-1 may be inputs
        if self.views.inputs == "first":
            inputs = np.arange(n)
        elif self.views.inputs == "given":
            inputs = np.asarray(self.views.input_views)
        elif self.views.inputs == "each":
            others = np.delete(np.arange(count), first)
            inputs = np.concatenate([[first], rng.choice(others, n - 1, replace=False)])
        else:
            inputs = rng.choice(count, n, replace=False)
        if self.views.targets == "held_out":
            targets = np.arange(count, total)
        elif self.views.targets == "given":
            targets = np.asarray(self.views.target_views)
        else:
            targets = np.arange(count) if self.views.targets == "all" else np.setdiff1d(np.arange(count), inputs)
        if self.views.num_targets is not None and self.views.num_targets < len(targets):
            targets = np.sort(rng.choice(targets, self.views.num_targets, replace=False))
        return scene, inputs.astype(np.int64), targets.astype(np.int64)

    def __getitem__(self, key) -> dict:
        """``key`` is an item index, or an (epoch, index) pair as :class:`ShardedSampler`
        yields them (so persistent DataLoader workers need no epoch updates)."""
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rng = np.random.default_rng([self.seed, epoch, index])
        scene, inputs, targets = self.choose_views(index, rng)
        fields = ("rgb", "camera_to_world", "intrinsics") + tuple(self.label_fields)
        views = np.union1d(inputs, targets)
        data = self.read(scene, views, fields)
        H, W = self.image_size
        if (H, W) != (self.scenes.height, self.scenes.width):
            data, H, W = resize_views(data, H, W)
        row = {v: i for i, v in enumerate(views)}
        inp, tgt = [row[v] for v in inputs], [row[v] for v in targets]

        s = self.input_stride
        keep = (slice(None), slice(s // 2, None, s), slice(s // 2, None, s))  # views, rows, columns
        rays = cameras.ray_directions(data["intrinsics"][inp], data["camera_to_world"][inp], H, W)
        item = {
            "input_images": torch.from_numpy(data["rgb"][inp][keep]).permute(0, 3, 1, 2).float() / 255.0,
            "input_rays": _f32(rays[keep]),
            "input_camera_pos": _f32(data["camera_to_world"][inp, :3, 3]),
            "input_camera_to_world": _f32(data["camera_to_world"][inp]),
            "input_intrinsics": _f32(stride_intrinsics(data["intrinsics"][inp], s)),
            "input_views": torch.from_numpy(inputs),
            "scene_index": torch.tensor(int(scene)),
            "scene_key": torch.tensor(self.scene_key(scene)),
            "render_range": _f32(self.scene_render_range(scene)),
        }
        if "instance" in data:
            item["input_instance"] = torch.from_numpy(data["instance"][inp][keep].astype(np.int64))

        # Target rays: flat indices over (target view, row, col).
        total = len(targets) * H * W
        if self.num_rays is None:
            flat = np.arange(total)
            item["target_views"] = torch.from_numpy(targets)
            item["image_size"] = torch.tensor([H, W])
        else:
            flat = rng.choice(total, self.num_rays, replace=self.num_rays > total)
        t, pixel = np.divmod(flat, H * W)
        i, j = np.divmod(pixel, W)
        view = np.asarray(tgt)[t]
        uv = np.stack([j + 0.5, i + 0.5], -1)
        rays = np.empty((len(flat), 3))
        for v in np.unique(view):
            on = view == v
            rays[on] = cameras.rays_through(data["intrinsics"][v], data["camera_to_world"][v], uv[on])
        item["target_rays"] = _f32(rays)
        item["target_camera_pos"] = _f32(data["camera_to_world"][view, :3, 3])
        item["target_pixels"] = torch.from_numpy(data["rgb"][view, i, j]).float() / 255.0
        for name in self.label_fields:
            values = data[name][view, i, j]
            item[f"target_{name}"] = _f32(values) if name == "depth" else torch.from_numpy(values.astype(np.int64))
        return item


def view_selection(data_config: dict) -> ViewSelection:
    """The config's protocol, with num_inputs/inputs/input_views/targets overriding it (given
    input_views alone select them: inputs ``given``, num_inputs their count)."""
    protocol = data_config.get("protocol", "msn")
    if protocol not in PROTOCOLS:
        raise BadInput(f"unknown data protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    base = PROTOCOLS[protocol]
    given = tuple(data_config.get("input_views") or ())
    given_targets = tuple(data_config.get("target_views") or ())
    try:
        return ViewSelection(data_config.get("num_inputs", len(given) if given else base.num_inputs),
                             data_config.get("inputs", "given" if given else base.inputs),
                             data_config.get("targets", "given" if given_targets else base.targets), given,
                             data_config.get("held_out_views", 0), given_targets, data_config.get("num_targets"))
    except ValueError as error:
        raise BadInput(f"data config: {error}") from None


def evaluation_config(data_config: dict) -> dict:
    """The data config scene-eval and scene-render use: the training one with its
    ``evaluation`` section (view selection for held-out scenes, resolution) applied, and not
    the training resolution: evaluation renders the file's resolution unless that section
    names one. The training's own selection of views and scenes (``num_targets``,
    ``train_scenes``, and ``target_views`` when the section names other targets) is left out."""
    evaluation = data_config.get("evaluation") or {}
    training_only = ("evaluation", "resolution", "num_targets", "train_scenes")
    training_only += ("target_views",) if {"targets", "target_views"} & set(evaluation) else ()
    out = {k: v for k, v in data_config.items() if k not in training_only}
    return {**out, **evaluation}


def make_dataset(scenes: SceneFile, split: str, data_config: dict, seed: int, num_rays="config") -> "SceneDataset":
    """The dataset a run config's ``data`` section describes (``num_rays=None``: full images;
    ``data.train_scenes`` names the scenes of the train split to use)."""
    try:
        return SceneDataset(scenes, split, view_selection(data_config),
                            data_config["num_rays"] if num_rays == "config" else num_rays, seed=seed,
                            input_stride=data_config.get("input_stride", 1),
                            resolution=data_config.get("resolution"),
                            scene_names=data_config.get("train_scenes") if split == "train" else None)
    except ValueError as error:
        raise BadInput(str(error)) from None


def scene_key(scenes: SceneFile, scene: int) -> int:
    """A scene's identity across scene files, as a positive int64: a hash of its name and of
    its first camera pose (rounded to 1e-4), so the same scene converted at another resolution
    or into another file keeps its key, while another scene of the same name (a synthetic
    file of another seed) does not."""
    c2w = scenes.read_views(scene, [0], ("camera_to_world",))["camera_to_world"][0]
    text = f"{scenes.names[scene]}\0" + " ".join(f"{x:.4f}" for x in np.asarray(c2w, np.float64).ravel()[:12])
    text = text.replace("-0.0000", "0.0000")
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def scene_keys(scenes: SceneFile, indices) -> torch.Tensor:
    """[N] int64 :func:`scene_key` of the scenes ``indices``."""
    return torch.tensor([scene_key(scenes, int(i)) for i in indices], dtype=torch.int64)


def resize_views(data: dict, height: int, width: int) -> tuple:
    """Views read from a scene file resized to ``height`` x ``width``: rgb by area averaging
    (rounded back to uint8), other per-pixel fields by the nearest pixel, intrinsics scaled
    (pixel edges map to pixel edges). Returns (data, height, width)."""
    out = dict(data)
    H, W = data["rgb"].shape[1:3]
    rgb = torch.from_numpy(data["rgb"]).permute(0, 3, 1, 2).float()
    rgb = F.interpolate(rgb, size=(height, width), mode="area")
    out["rgb"] = rgb.round().clamp(0, 255).permute(0, 2, 3, 1).numpy().astype(np.uint8)
    rows, columns = nearest_pixels((H, W), (height, width))
    for name in ("instance", "semantic", "depth"):
        if name in data:
            out[name] = data[name][:, rows][:, :, columns]
    out["intrinsics"] = cameras.resized_intrinsics(data["intrinsics"], (H, W), (height, width))
    return out, height, width


def nearest_pixels(size: tuple, new_size: tuple) -> tuple:
    """(rows [h], columns [w]) int64: the pixel of an image of ``size`` (H, W) nearest to
    each pixel centre of the same image resized to ``new_size`` (h, w); ``labels[rows][:,
    columns]`` resizes a label map [H, W] by the nearest pixel."""
    (H, W), (height, width) = size, new_size
    return (((np.arange(height) + 0.5) * H / height).astype(np.int64),
            ((np.arange(width) + 0.5) * W / width).astype(np.int64))


def render_range(scenes: SceneFile) -> np.ndarray:
    """The file's (near, far) render range. Files without one (own captures) get 0 to twice
    the largest distance of a camera from the cameras' centroid, which bounds the content of
    any capture whose cameras surround it."""
    if scenes.render_range is not None:
        return np.asarray(scenes.render_range, np.float64)
    positions = np.concatenate([scenes.read_views(s, fields=("camera_to_world",))["camera_to_world"][:, :3, 3]
                                for s in range(scenes.num_scenes)])
    return np.array([0.0, 2 * np.linalg.norm(positions - positions.mean(0), axis=1).max() + 1e-3])


def stride_intrinsics(K: np.ndarray, stride: int) -> np.ndarray:
    """K of an image that keeps every ``stride``-th pixel from ``stride // 2`` on: new pixel k
    is old pixel ``stride * k + stride // 2``, so u_old = stride * u_new + stride // 2 + 0.5 - stride / 2."""
    offset = stride // 2 + 0.5 - stride / 2
    A = np.array([[1 / stride, 0, -offset / stride], [0, 1 / stride, -offset / stride], [0, 0, 1]])
    return A @ K


def _f32(array) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, np.float32))


class ShardedSampler(Sampler):
    """Item order for one DDP rank: a shared per-epoch permutation, split across ranks.

    It yields (epoch, index) pairs, which :class:`SceneDataset` accepts as keys. Every rank
    gets the same number of items (the permutation is wrapped around to a multiple of
    ``world_size``). Within a rank, the DataLoader hands each index to exactly one worker, so
    items are sharded across workers too.

    With ``batch_size``, each epoch is cut to whole batches (``batches_per_epoch``), and with
    ``infinite`` the epochs follow each other without end, so one DataLoader serves a whole
    training run and the step alone says where the data stands. ``start`` skips the first
    items of the first epoch on this rank, to resume mid-epoch.
    """

    def __init__(self, num_items: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 seed: int = 0, start: int = 0, batch_size: int | None = None, infinite: bool = False):
        self.num_items, self.rank, self.world_size = num_items, rank, world_size
        self.shuffle, self.seed, self.epoch, self.start = shuffle, seed, 0, start
        self.per_rank = math.ceil(num_items / world_size)
        self.batches_per_epoch = self.per_rank // batch_size if batch_size else None
        self.per_epoch = self.batches_per_epoch * batch_size if batch_size else self.per_rank
        self.infinite = infinite

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def epoch_order(self, epoch: int) -> list:
        """This rank's item indices of ``epoch``."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        else:
            order = np.arange(self.num_items)
        order = np.resize(order, self.per_rank * self.world_size)  # wraps around to pad
        return order[self.rank::self.world_size][:self.per_epoch].tolist()

    def __iter__(self):
        epoch, start = self.epoch, self.start
        while True:
            yield from ((epoch, index) for index in self.epoch_order(epoch)[start:])
            if not self.infinite:
                return
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        if self.infinite:
            raise TypeError("an infinite sampler has no length")
        return self.per_epoch - self.start
