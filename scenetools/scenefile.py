"""The scene file (HDF5, ``formats/scene-h5.md``): one in-memory scene type, a writer that
validates before it writes, a reader that is safe across DataLoader forks, and a validator.
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from . import cameras
from .atomic import partial_path, remove
from .errors import BadInput

FORMAT = "scenetools.scene"
FORMAT_VERSION = 1
CODECS = ("raw", "png")
#: Optional per-view image fields and the dtypes each may be stored as.
OPTIONAL_FIELDS = {"depth": ("float32",), "instance": ("uint8", "uint16"), "semantic": ("uint8", "uint16")}
IMAGE_FIELDS = ("rgb",) + tuple(OPTIONAL_FIELDS)
RIGID_TOLERANCE = 1e-3


@dataclass
class Scene:
    """One scene in memory: V views of H x W pixels.

    rgb [V, H, W, 3] uint8; camera_to_world [V, 4, 4] (OpenCV axes); intrinsics [V, 3, 3]
    in pixels; optional depth [V, H, W] float32 (distance along the ray, inf = no surface,
    0 = unknown), instance [V, H, W] (0 = background) and semantic [V, H, W] class ids.
    """

    name: str
    rgb: np.ndarray
    camera_to_world: np.ndarray
    intrinsics: np.ndarray
    depth: np.ndarray | None = None
    instance: np.ndarray | None = None
    semantic: np.ndarray | None = None
    near_far: tuple | None = None
    category: str | None = None
    split: str = "train"

    @property
    def num_views(self) -> int:
        return len(self.rgb)

    def fields(self) -> dict:
        """The optional image fields this scene carries."""
        return {k: getattr(self, k) for k in OPTIONAL_FIELDS if getattr(self, k) is not None}


def validate_scene(scene: Scene, height: int, width: int, fields: dict) -> None:
    """Raise ValueError describing the first way ``scene`` breaks the format."""
    V = scene.num_views
    _expect(scene.rgb, (V, height, width, 3), ("uint8",), "rgb")
    if V < 1:
        raise ValueError("a scene needs at least one view")
    _expect(scene.camera_to_world, (V, 4, 4), ("float32", "float64"), "camera_to_world")
    _expect(scene.intrinsics, (V, 3, 3), ("float32", "float64"), "intrinsics")
    check_cameras(scene.camera_to_world, scene.intrinsics)
    present = scene.fields()
    if set(present) != set(fields):
        raise ValueError(f"scene has fields {sorted(present)}, the file expects {sorted(fields)}")
    for name, array in present.items():
        allowed = ("float32", "float64") if name == "depth" else ("uint8", "uint16", "int32", "int64")
        _expect(array, (V, height, width), allowed, name)
    if scene.depth is not None and (np.isnan(scene.depth).any() or (scene.depth < 0).any()):
        raise ValueError("depth has NaN or negative values")
    for name in ("instance", "semantic"):
        array = present.get(name)
        if array is not None and array.size and (array.min() < 0 or array.max() > np.iinfo(fields[name]).max):
            raise ValueError(f"{name} ids outside the range of {fields[name]}")
    if scene.near_far is not None and not (0 <= scene.near_far[0] < scene.near_far[1]):
        raise ValueError(f"near_far {scene.near_far} is not 0 <= near < far")


def check_cameras(c2w: np.ndarray, K: np.ndarray | None = None) -> None:
    """Raise ValueError if a pose is not a finite rigid transform or K is not a pinhole."""
    finite = np.isfinite(c2w).all((-1, -2)) & (True if K is None else np.isfinite(K).all((-1, -2)))
    if not finite.all():
        raise ValueError(f"non-finite camera (NaN or inf) in view {np.flatnonzero(~finite)[0]}")
    error = cameras.rigid_transform_error(c2w)
    if (error > RIGID_TOLERANCE).any():
        view = int(np.argmax(error))
        raise ValueError(f"camera_to_world of view {view} is not a rigid transform (rotation not orthonormal, error {error[view]:.3g})")
    if K is not None and ((K[:, 0, 0] <= 0).any() or (K[:, 1, 1] <= 0).any() or not np.allclose(K[:, 2], [0, 0, 1])):
        raise ValueError("intrinsics must have positive focal lengths and a last row of (0, 0, 1)")


def _expect(array, shape, dtypes, name):
    array = np.asarray(array)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape}")
    if array.dtype.name not in dtypes:
        raise ValueError(f"{name} has dtype {array.dtype}, expected {' or '.join(dtypes)}")


# ----------------------------------------------------------------------------- PNG codec

def encode_png(array: np.ndarray, field_name: str) -> np.ndarray:
    """Encode one view's image field as PNG bytes (a uint8 array, for h5py vlen storage).

    rgb -> RGB PNG; depth -> RGBA PNG of the little-endian float32 bytes (lossless, as
    TFDS stores float images); instance/semantic -> 8- or 16-bit grey PNG.
    """
    if field_name == "depth":
        array = np.ascontiguousarray(array, "<f4").view(np.uint8).reshape(array.shape + (4,))
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=3)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def decode_png(data: np.ndarray, field_name: str, dtype: str) -> np.ndarray:
    with Image.open(io.BytesIO(data.tobytes())) as image:
        array = np.asarray(image)
    if field_name == "depth":
        return array.reshape(array.shape[:2] + (4,)).view("<f4")[..., 0].astype(np.float32)
    return array.astype(dtype, copy=False)


# ----------------------------------------------------------------------------- writer

@dataclass
class PreparedScene:
    """A scene validated and encoded for one file layout, ready to be written."""

    name: str
    split: str
    category: str | None
    near_far: tuple | None
    camera_to_world: np.ndarray
    intrinsics: np.ndarray
    images: dict  # field -> [V, ...] array (raw) or list of V PNG byte arrays

    @property
    def view_count(self) -> int:
        return len(self.camera_to_world)

    @property
    def nbytes(self) -> int:
        return sum(sum(d.nbytes for d in v) if isinstance(v, list) else v.nbytes for v in self.images.values())


def prepare_scene(scene: Scene, height: int, width: int, fields: dict, codec: str) -> PreparedScene:
    """Validate ``scene`` for a file of this layout and encode its images.

    Raises BadInput naming the scene if it is invalid.
    """
    try:
        validate_scene(scene, height, width, fields)
    except ValueError as error:
        raise BadInput(f"scene {scene.name!r}: {error}") from None
    images = {}
    for name, dtype in [("rgb", "uint8")] + list(fields.items()):
        array = np.asarray(getattr(scene, name)).astype(dtype, copy=False)
        images[name] = [encode_png(image, name) for image in array] if codec == "png" else array
    return PreparedScene(scene.name, scene.split, scene.category, scene.near_far,
                         np.asarray(scene.camera_to_world, np.float32), np.asarray(scene.intrinsics, np.float32),
                         images)


class SceneWriter:
    """Write scenes into a new scene file.

    Everything goes to a partial file next to ``path`` and is renamed to ``path`` by
    :meth:`close`. With a ``resume_key`` the partial file survives an interruption, and a
    writer opened later with the same key continues after the last complete scene
    (:attr:`num_written` tells where).

    Args:
        fields: the optional image fields every scene carries, with their stored dtype,
            e.g. ``{"depth": "float32", "instance": "uint8"}``.
        codec: ``raw`` (one uncompressed chunk per view) or ``png``.
        render_range: the dataset's native (near, far) render range.
        attrs: more file attributes: ``world_up`` [3], ``semantic_classes`` (list of str),
            ``source_info`` (a dict, stored as JSON).
    """

    block_scenes, block_bytes = 64, 16 * 2**20  # buffered before each write

    def __init__(self, path, *, height: int, width: int, source: str, render_range=None,
                 codec: str = "raw", fields: dict | None = None, attrs: dict | None = None,
                 resume_key: str | None = None):
        if codec not in CODECS:
            raise BadInput(f"unknown codec {codec!r} (use one of {', '.join(CODECS)})")
        self.path, self.partial = Path(path), partial_path(path)
        self.height, self.width, self.codec = height, width, codec
        self.fields = {k: np.dtype(v).name for k, v in (fields or {}).items()}
        for name, dtype in self.fields.items():
            if dtype not in OPTIONAL_FIELDS.get(name, ()):
                raise ValueError(f"field {name} cannot be stored as {dtype}")
        self._image_fields = ["rgb"] + list(self.fields)
        self._buffer, self._buffered_bytes = [], 0
        self.resume_key = resume_key
        self.file = self._resume() if resume_key else None
        if self.file is None:
            self.file = self._create(source, render_range, attrs or {})

    @property
    def num_written(self) -> int:
        return int(self.file.attrs["scenes_written"])

    def _create(self, source, render_range, attrs) -> h5py.File:
        remove(self.partial)
        f = h5py.File(self.partial, "w", track_order=True)
        f.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, source=source,
                       image_height=self.height, image_width=self.width,
                       camera_convention="opencv_camera_to_world", depth_convention="ray_distance",
                       scenes_written=0)
        if render_range is not None:
            f.attrs["render_range"] = np.asarray(render_range, np.float64)
        if attrs.get("world_up") is not None:
            f.attrs["world_up"] = np.asarray(attrs["world_up"], np.float64)
        if attrs.get("semantic_classes") is not None:
            f.attrs["semantic_classes"] = list(attrs["semantic_classes"])
        if attrs.get("source_info") is not None:
            f.attrs["source_info"] = json.dumps(attrs["source_info"], sort_keys=True)
        if self.resume_key:
            f.attrs["resume_key"] = self.resume_key
        strings = h5py.string_dtype()
        for name, dtype in [("name", strings), ("split", strings), ("category", strings),
                            ("view_offset", "int64"), ("view_count", "int32")]:
            f.create_dataset(f"scenes/{name}", (0,), dtype=dtype, maxshape=(None,), chunks=(4096,))
        f.create_dataset("scenes/near_far", (0, 2), dtype="float32", maxshape=(None, 2), chunks=(4096, 2),
                         fillvalue=np.nan)
        f.create_dataset("views/camera_to_world", (0, 4, 4), "float32", maxshape=(None, 4, 4), chunks=(1024, 4, 4))
        f.create_dataset("views/intrinsics", (0, 3, 3), "float32", maxshape=(None, 3, 3), chunks=(1024, 3, 3))
        for name, dtype in [("rgb", "uint8")] + list(self.fields.items()):
            self._create_image_dataset(f, name, dtype)
        return f

    def _create_image_dataset(self, f, name, dtype):
        H, W = self.height, self.width
        if self.codec == "png":
            ds = f.create_dataset(f"views/{name}", (0,), dtype=h5py.vlen_dtype(np.uint8), maxshape=(None,), chunks=(64,))
        else:
            pixel = (3,) if name == "rgb" else ()
            ds = f.create_dataset(f"views/{name}", (0, H, W) + pixel, dtype=dtype, maxshape=(None, H, W) + pixel,
                                  chunks=(1, H, W) + pixel)
        ds.attrs.update(codec=self.codec, dtype=dtype)

    def _resume(self) -> h5py.File | None:
        """Reopen a partial file from an interrupted run with the same key, cut back to its
        last complete scene. Returns None when there is nothing usable to resume."""
        if not self.partial.exists():
            return None
        try:
            f = h5py.File(self.partial, "a")
        except OSError:  # killed while HDF5 metadata was being written
            return None
        if f.attrs.get("resume_key") != self.resume_key:
            f.close()
            return None
        scenes = int(f.attrs["scenes_written"])
        views = int(f["scenes/view_offset"][scenes - 1] + f["scenes/view_count"][scenes - 1]) if scenes else 0
        for ds in _datasets(f["scenes"]):
            ds.resize(scenes, axis=0)
        for ds in _datasets(f["views"]):
            ds.resize(views, axis=0)
        return f

    def add(self, scene: Scene | PreparedScene) -> None:
        """Validate and append a scene (or one already prepared by :meth:`prepare`).

        Raises BadInput naming the scene if it is invalid. Scenes are buffered and written in
        blocks; a resumable writer counts a scene as written once its block is flushed.
        """
        if not isinstance(scene, PreparedScene):
            scene = self.prepare(scene)
        self._buffer.append(scene)
        self._buffered_bytes += scene.nbytes
        if self._buffered_bytes >= self.block_bytes or len(self._buffer) >= self.block_scenes:
            self.flush()

    def prepare(self, scene: Scene) -> PreparedScene:
        """Validate and encode a scene for this file; safe to run in a worker process."""
        return prepare_scene(scene, self.height, self.width, self.fields, self.codec)

    def flush(self) -> None:
        """Write the buffered scenes as one block."""
        if not self._buffer:
            return
        f, block = self.file, self._buffer
        n_scenes, n_views = f["scenes/name"].shape[0], f["views/rgb"].shape[0]
        counts = np.array([s.view_count for s in block])
        total = int(counts.sum())
        for ds in _datasets(f["scenes"]):
            ds.resize(n_scenes + len(block), axis=0)
        for ds in _datasets(f["views"]):
            ds.resize(n_views + total, axis=0)
        rows, views = slice(n_scenes, n_scenes + len(block)), slice(n_views, n_views + total)
        f["scenes/name"][rows] = [s.name for s in block]
        f["scenes/split"][rows] = [s.split for s in block]
        f["scenes/category"][rows] = [s.category or "" for s in block]
        f["scenes/view_offset"][rows] = n_views + np.cumsum(counts) - counts
        f["scenes/view_count"][rows] = counts
        f["scenes/near_far"][rows] = [s.near_far if s.near_far is not None else (np.nan, np.nan) for s in block]
        f["views/camera_to_world"][views] = np.concatenate([s.camera_to_world for s in block])
        f["views/intrinsics"][views] = np.concatenate([s.intrinsics for s in block])
        for name in self._image_fields:
            if self.codec == "png":
                ds = f[f"views/{name}"]
                for i, data in enumerate(d for s in block for d in s.images[name]):
                    ds[n_views + i] = data
            else:
                f[f"views/{name}"][views] = np.concatenate([s.images[name] for s in block])
        f.attrs["scenes_written"] = n_scenes + len(block)
        self._buffer, self._buffered_bytes = [], 0
        if self.resume_key:
            f.flush()

    def close(self) -> Path | None:
        """Finish the file and move it to its final name (nothing if already aborted)."""
        if not self.file.id.valid:
            return None
        self.flush()
        self.file.attrs.pop("scenes_written", None)
        self.file.attrs.pop("resume_key", None)
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self, keep_partial: bool = False) -> None:
        """Stop writing; keep the partial file only if asked (so a rerun can resume)."""
        if self.file.id.valid:
            self.file.close()
        if not keep_partial:
            remove(self.partial)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # bad input leaves nothing behind; an interruption keeps what a rerun can resume
            self.abort(keep_partial=bool(self.resume_key) and not issubclass(exc_type, BadInput))


def _datasets(group):
    return [ds for ds in group.values() if isinstance(ds, h5py.Dataset)]


def write_index(path, shards) -> Path:
    """Join complete scene files (shards) into one index file of virtual datasets.

    The index holds the concatenated scene table and file attributes; its ``views/*``
    datasets map onto the shards, stored by path relative to the index file.
    """
    path = Path(path)
    tmp = partial_path(path)
    metas = [_read_meta(s) for s in shards]
    first = metas[0]
    for shard, meta in zip(shards, metas):
        if (meta["height"], meta["width"], meta["fields"], meta["codecs"]) != (
                first["height"], first["width"], first["fields"], first["codecs"]):
            raise BadInput("shard does not match the first shard's image size, fields or codec", shard)
    with h5py.File(shards[0], "r") as f0, h5py.File(tmp, "w", track_order=True) as out:
        out.attrs.update({k: v for k, v in f0.attrs.items() if k not in ("scenes_written", "resume_key")})
        out.attrs["shards"] = [os.path.relpath(s, path.parent) for s in shards]
        offsets = np.cumsum([0] + [m["num_views"] for m in metas])
        for name in f0["scenes"]:
            parts = []
            for shard in shards:
                with h5py.File(shard, "r") as f:
                    parts.append(f["scenes"][name][:])
            data = np.concatenate(parts)
            if name == "view_offset":
                data = np.concatenate([p + offsets[i] for i, p in enumerate(parts)])
            out.create_dataset(f"scenes/{name}", data=data, dtype=f0["scenes"][name].dtype)
        for name, ds0 in f0["views"].items():
            layout = h5py.VirtualLayout(shape=(offsets[-1],) + ds0.shape[1:], dtype=ds0.dtype)
            for i, shard in enumerate(shards):
                n = offsets[i + 1] - offsets[i]
                source = h5py.VirtualSource(os.path.relpath(shard, path.parent), f"views/{name}",
                                            shape=(n,) + ds0.shape[1:], dtype=ds0.dtype)
                layout[offsets[i]:offsets[i + 1]] = source
            out.create_virtual_dataset(f"views/{name}", layout)
            out[f"views/{name}"].attrs.update(dict(ds0.attrs))
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- reader

def _read_meta(path) -> dict:
    """Read and check a scene file's structure (cheap: attrs, shapes, the scene table)."""
    path = Path(path)
    if not path.exists():
        raise BadInput("no such file", path)
    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise BadInput(f"not a readable HDF5 file ({error})", path) from None
    with f:
        try:
            return _check_structure(f, path)
        except (KeyError, TypeError, ValueError, OSError) as error:
            raise BadInput(f"broken scene file ({error})", path) from None


def _check_structure(f: h5py.File, path: Path) -> dict:
    def fail(problem):
        raise BadInput(problem, path)

    if f.attrs.get("format") != FORMAT:
        fail(f"not a scene file (missing attribute format={FORMAT!r})")
    version = int(f.attrs.get("format_version", -1))
    if version != FORMAT_VERSION:
        fail(f"scene file version {version}; this scenetools reads version {FORMAT_VERSION}")
    if "scenes_written" in f.attrs:
        fail("incomplete scene file (its writer did not finish)")
    for shard in f.attrs.get("shards", []):
        if not (path.parent / shard).exists():
            fail(f"missing shard {shard}")
    required = ["scenes/name", "scenes/split", "scenes/view_offset", "scenes/view_count",
                "views/rgb", "views/camera_to_world", "views/intrinsics"]
    for name in required:
        if name not in f:
            fail(f"missing dataset {name}")
    H, W = int(f.attrs["image_height"]), int(f.attrs["image_width"])
    counts = f["scenes/view_count"][:].astype(np.int64)
    offsets = f["scenes/view_offset"][:].astype(np.int64)
    S, N = len(counts), int(counts.sum())
    if len(offsets) != S or (counts < 1).any() or (S and not np.array_equal(offsets, np.cumsum(counts) - counts)):
        fail("scenes/view_offset and scenes/view_count are inconsistent")
    for name in ("scenes/name", "scenes/split") + tuple(k for k in ("scenes/category", "scenes/near_far") if k in f):
        if f[name].shape[0] != S:
            fail(f"{name} has {f[name].shape[0]} rows for {S} scenes")
    _check_dataset(f, "views/camera_to_world", (N, 4, 4), ("float32", "float64"), fail)
    _check_dataset(f, "views/intrinsics", (N, 3, 3), ("float32", "float64"), fail)
    fields, codecs = {}, {}
    for name in IMAGE_FIELDS:
        if name not in f["views"]:
            continue
        ds = f[f"views/{name}"]
        codec, dtype = ds.attrs.get("codec"), ds.attrs.get("dtype", "uint8")
        if codec not in CODECS:
            fail(f"views/{name} has unknown codec {codec!r}")
        allowed = ("uint8",) if name == "rgb" else OPTIONAL_FIELDS[name]
        if codec == "raw":
            shape = (N, H, W, 3) if name == "rgb" else (N, H, W)
            _check_dataset(f, f"views/{name}", shape, allowed, fail)
            dtype = ds.dtype.name
        elif ds.shape != (N,) or ds.dtype.kind != "O" or dtype not in allowed:
            fail(f"views/{name} should hold {N} PNG-encoded {'/'.join(allowed)} images")
        codecs[name] = codec
        if name != "rgb":
            fields[name] = dtype
    return dict(height=H, width=W, num_views=N, fields=fields, codecs=codecs,
                counts=counts, offsets=offsets)


def _check_dataset(f, name, shape, dtypes, fail):
    ds = f[name]
    if ds.shape != shape:
        fail(f"{name} has shape {ds.shape}, expected {shape}")
    if ds.dtype.name not in dtypes:
        fail(f"{name} has dtype {ds.dtype}, expected {' or '.join(dtypes)}")


class SceneFile:
    """Read-only access to a scene file (single or sharded).

    The constructor reads metadata in a short ``with`` block and keeps no handle, so the
    object can be handed to DataLoader workers. Each process opens its own handle on first
    read and never uses one inherited through a fork.
    """

    def __init__(self, path):
        self.path = Path(path)
        meta = _read_meta(self.path)
        self.height, self.width = meta["height"], meta["width"]
        self.fields, self.codecs = meta["fields"], meta["codecs"]
        self.view_count, self.view_offset = meta["counts"], meta["offsets"]
        with h5py.File(self.path, "r") as f:
            self.attrs = {k: _plain(v) for k, v in f.attrs.items()}
            self.names = f["scenes/name"].asstr()[:]
            self.split_of = f["scenes/split"].asstr()[:]
            self.categories = f["scenes/category"].asstr()[:] if "scenes/category" in f else None
            self.near_far = f["scenes/near_far"][:] if "scenes/near_far" in f else None
        self._h5, self._pid = None, None

    # -- metadata
    @property
    def num_scenes(self) -> int:
        return len(self.names)

    @property
    def num_views(self) -> int:
        return int(self.view_count.sum())

    @property
    def source(self) -> str:
        return self.attrs.get("source", "")

    @property
    def render_range(self):
        return self.attrs.get("render_range")

    @property
    def world_up(self):
        return self.attrs.get("world_up")

    @property
    def semantic_classes(self):
        return self.attrs.get("semantic_classes")

    @property
    def source_info(self) -> dict:
        return json.loads(self.attrs.get("source_info", "{}"))

    def splits(self) -> dict:
        """{split name: sorted scene indices}."""
        return {name: np.flatnonzero(self.split_of == name) for name in dict.fromkeys(self.split_of)}

    def split(self, name: str) -> np.ndarray:
        indices = np.flatnonzero(self.split_of == name)
        if not len(indices):
            known = ", ".join(self.splits()) or "none"
            raise BadInput(f"has no scenes in split {name!r} (splits: {known})", self.path)
        return indices

    # -- data
    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r", rdcc_nbytes=16 * 2**20)
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):
        return {**self.__dict__, "_h5": None, "_pid": None}

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def read_views(self, scene: int, views=None, fields=("rgb", "camera_to_world", "intrinsics")) -> dict:
        """Arrays of some views of one scene: {field: [len(views), ...]}.

        ``views`` are indices within the scene (default: all). Fields are ``rgb`` (uint8),
        ``camera_to_world``, ``intrinsics`` (float64), and any optional field in the file.
        """
        count, offset = int(self.view_count[scene]), int(self.view_offset[scene])
        views = np.arange(count) if views is None else np.asarray(views)
        if len(views) and (views.min() < 0 or views.max() >= count):
            raise IndexError(f"scene {scene} has {count} views, asked for {views.tolist()}")
        rows = offset + views
        f = self._file()
        out = {}
        for name in fields:
            if name in ("camera_to_world", "intrinsics"):
                out[name] = self._read_rows(f[f"views/{name}"], rows).astype(np.float64)
            elif name in self.codecs:
                out[name] = self._read_image(f, name, rows)
            else:
                raise BadInput(f"has no field {name!r} (it has {', '.join(self.codecs)})", self.path)
        if "camera_to_world" in out:
            try:
                check_cameras(out["camera_to_world"], out.get("intrinsics"))
            except ValueError as error:
                raise BadInput(f"scene {scene} ({self.names[scene]}): {error}", self.path) from None
        return out

    @staticmethod
    def _read_rows(ds, rows):
        if len(rows) and np.all(np.diff(rows) == 1):
            return ds[rows[0]:rows[-1] + 1]
        order = np.argsort(rows)
        data = ds[rows[order]] if len(rows) else ds[:0]
        return data[np.argsort(order)]

    def _read_image(self, f, name, rows):
        ds = f[f"views/{name}"]
        if self.codecs[name] == "raw":
            return self._read_rows(ds, rows)
        dtype = self.fields.get(name, "uint8")
        images = []
        for row in rows:
            try:
                images.append(decode_png(ds[row], name, dtype))
            except (OSError, ValueError, SyntaxError) as error:
                raise BadInput(f"views/{name}[{row}]: corrupt PNG ({error})", self.path) from None
        shape = (self.height, self.width) + ((3,) if name == "rgb" else ())
        for row, image in zip(rows, images):
            if image.shape != shape:
                raise BadInput(f"views/{name}[{row}]: PNG of shape {image.shape}, expected {shape}", self.path)
        return np.stack(images) if images else np.zeros((0,) + shape, dtype)

    def scene(self, index: int) -> Scene:
        """The whole scene ``index`` as a :class:`Scene`."""
        data = self.read_views(index, fields=("rgb", "camera_to_world", "intrinsics") + tuple(self.fields))
        near_far = None
        if self.near_far is not None and np.isfinite(self.near_far[index]).all():
            near_far = tuple(float(x) for x in self.near_far[index])
        category = self.categories[index] if self.categories is not None else ""
        return Scene(name=self.names[index], split=self.split_of[index], near_far=near_far,
                     category=category or None, **data)


def validate_file(path) -> SceneFile:
    """Fully check a scene file: its structure, and every camera (read in blocks).

    Returns the opened :class:`SceneFile`; raises :class:`BadInput` naming the problem.
    """
    from .progress import progress

    scenes = SceneFile(path)
    block = 65536
    with h5py.File(scenes.path, "r") as f, progress(total=scenes.num_views, desc="checking cameras",
                                                    unit="views") as bar:
        for start in range(0, scenes.num_views, block):
            stop = min(start + block, scenes.num_views)
            c2w = f["views/camera_to_world"][start:stop].astype(np.float64)
            K = f["views/intrinsics"][start:stop].astype(np.float64)
            try:
                check_cameras(c2w, K)
            except ValueError as error:
                row = start + _first_bad_view(c2w, K)
                scene = int(np.searchsorted(scenes.view_offset, row, side="right") - 1)
                raise BadInput(f"scene {scene} ({scenes.names[scene]}): {error}", scenes.path) from None
            bar.update(stop - start)
    return scenes


def _first_bad_view(c2w, K) -> int:
    for i in range(len(c2w)):
        try:
            check_cameras(c2w[i:i + 1], K[i:i + 1])
        except ValueError:
            return i
    return 0


def _plain(value):
    """h5py attribute -> plain Python / numpy value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
