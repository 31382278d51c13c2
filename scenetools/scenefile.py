"""The scene file (HDF5, ``formats/scene-h5.md``): one in-memory scene type, a writer that
validates before it writes, a reader that is safe across DataLoader forks, and a validator.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import cameras, images
from .atomic import GuardedFile, partial_path, remove
from .errors import BadInput, write_failure
from .progress import note, progress

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


def check_cameras(c2w: np.ndarray, K: np.ndarray | None = None, views=None) -> None:
    """Raise ValueError if a pose is not a finite rigid transform or K is not a pinhole.

    ``views`` numbers the cameras in the message (default 0, 1, ...).
    """
    views = np.arange(len(c2w)) if views is None else np.asarray(views)
    finite = np.isfinite(c2w).all((-1, -2)) & (True if K is None else np.isfinite(K).all((-1, -2)))
    if not finite.all():
        raise ValueError(f"non-finite camera (NaN or inf) in view {views[np.flatnonzero(~finite)[0]]}")
    error = cameras.rigid_transform_error(c2w)
    if (error > RIGID_TOLERANCE).any():
        bad = int(np.argmax(error))
        raise ValueError(f"camera_to_world of view {views[bad]} is not a rigid transform "
                         f"(rotation not orthonormal, error {error[bad]:.3g})")
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
    return images.encode_png(images.rgba_from_float32(array) if field_name == "depth" else array)


def decode_png(data: np.ndarray, field_name: str, dtype: str) -> np.ndarray:
    array = images.decode(data)
    if field_name == "depth":
        return images.float32_from_rgba(array)
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

    The partial file only ever changes between safe points, one after each block of scenes:
    a failed write (a full disk) puts it back as the last safe point left it and raises
    WriteError, and a resume first reads back every scene it counts, keeping only the
    scenes before the first damaged one (after a kill in the middle of a flush).

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
        self._attrs = self._file_attrs(source, render_range, attrs or {})
        self._kept = 0  # scenes in the file as the last safe point left it
        if not (resume_key and self._resume()):
            self._create(self.partial)

    @property
    def num_written(self) -> int:
        return int(self.file.attrs["scenes_written"])

    def _file_attrs(self, source, render_range, attrs) -> dict:
        out = dict(format=FORMAT, format_version=FORMAT_VERSION, source=source,
                   image_height=self.height, image_width=self.width,
                   camera_convention="opencv_camera_to_world", depth_convention="ray_distance",
                   scenes_written=0)
        if render_range is not None:
            out["render_range"] = np.asarray(render_range, np.float64)
        if attrs.get("world_up") is not None:
            out["world_up"] = np.asarray(attrs["world_up"], np.float64)
        if attrs.get("semantic_classes") is not None:
            out["semantic_classes"] = list(attrs["semantic_classes"])
        if attrs.get("source_info") is not None:
            out["source_info"] = json.dumps(attrs["source_info"], sort_keys=True)
        if self.resume_key:
            out["resume_key"] = self.resume_key
        return out

    def _open(self, path, mode) -> h5py.File:
        self._io = GuardedFile(path, "w+" if mode == "w" else "r+")
        try:
            self.file = _new_h5(self._io) if mode == "w" else h5py.File(self._io, mode)
        except BaseException:
            self._io.close()
            raise
        return self.file

    def _create(self, path) -> None:
        remove(path)
        remove(self._closed_marker)
        f = self._open(path, "w")
        try:
            self._layout(f)
            self._safe_point()
        except BaseException:
            self._close_file()
            remove(path)
            raise

    def _layout(self, f) -> None:
        f.attrs.update(self._attrs)
        strings = h5py.string_dtype()
        for name, dtype in [("name", strings), ("split", strings), ("category", strings),
                            ("view_offset", "int64"), ("view_count", "int32")]:
            _create_dataset(f, f"scenes/{name}", (), dtype, 4096)
        _create_dataset(f, "scenes/near_far", (2,), "float32", 4096, fillvalue=np.nan)
        _create_dataset(f, "views/camera_to_world", (4, 4), "float32", 1024)
        _create_dataset(f, "views/intrinsics", (3, 3), "float32", 1024)
        for name, dtype in [("rgb", "uint8")] + list(self.fields.items()):
            if self.codec == "png":
                ds = _create_dataset(f, f"views/{name}", (), h5py.vlen_dtype(np.uint8), 64)
            else:
                ds = _create_dataset(f, f"views/{name}", (self.height, self.width) + ((3,) if name == "rgb" else ()),
                                     dtype, 1)
            ds.attrs.update(codec=self.codec, dtype=dtype)

    def _resume(self) -> bool:
        """Reopen the partial file of an interrupted run with the same key, after reading back
        every scene it counts; keep the scenes before the first damaged one. False when there
        is nothing usable to resume."""
        if not self.partial.exists():
            return False
        try:
            with h5py.File(self.partial, "r") as old:
                if _plain(old.attrs.get("resume_key")) != self.resume_key:
                    return False
                written = int(old.attrs["scenes_written"])
                intact, problem = _intact_scenes(old, written)
                closed = self._closed_marker.exists()
                if intact < written or not closed:
                    # A run killed while HDF5 wrote can leave its internal heaps inconsistent in
                    # ways that reading back every scene does not show, but appending does.
                    why = problem if intact < written else "its last writer did not close it (killed?)"
                    note(f"{self.partial}: {why}; copying the {intact} intact scenes into a new file")
                    self._rebuild(old, intact)
                    return True
            remove(self._closed_marker)
            f = self._open(self.partial, "a")
        except (OSError, KeyError, ValueError) as error:  # e.g. killed while HDF5 wrote its superblock
            note(f"{self.partial}: cannot resume from it ({_one_line(error)}); starting over")
            return False
        try:  # drop rows of a block that was being written when the run stopped
            for group, rows in [("scenes", written), ("views", _views_before(f, written))]:
                for ds in _datasets(f[group]):
                    ds.resize(rows, axis=0)
            self._safe_point()
        except BaseException:
            self._close_file()
            raise
        return True

    def _rebuild(self, old: h5py.File, scenes: int) -> None:
        """Copy the first ``scenes`` scenes of ``old`` into a new partial file that replaces it."""
        tmp = partial_path(self.partial)
        self._create(tmp)
        try:
            for start in range(0, scenes, self.block_scenes):
                self._buffer = [_read_prepared(old, s) for s in range(start, min(start + self.block_scenes, scenes))]
                self.flush()
        except BaseException:
            self._close_file()
            remove(tmp)
            raise
        os.replace(tmp, self.partial)

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
        """Write the buffered scenes as one block, then reach a safe point."""
        if not self._buffer:
            return
        block, self._buffer, self._buffered_bytes = self._buffer, [], 0
        self._write(block)
        self._safe_point()

    def _write(self, block) -> None:
        f = self.file
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

    def _safe_point(self) -> None:
        """Make what is written so far the file a resume starts from; if a write failed, put
        the file back as the last safe point left it and raise WriteError."""
        if self.resume_key and self.file.id.valid:
            self.file.flush()
        if self._io.error is None:
            self._io.commit()
            if self.file.id.valid:
                self._kept = self.num_written
            return
        self._io.rollback()
        hint = (f"; the {self._kept} scenes written before are kept: make room and run the same command "
                "again to continue") if self.resume_key else ""
        raise write_failure(self._io.error, self.partial, hint)

    def close(self) -> Path | None:
        """Finish the file and move it to its final name (nothing if already aborted)."""
        if self._io.closed:
            return None
        try:
            self.flush()
            self.file.attrs.pop("scenes_written", None)
            self.file.attrs.pop("resume_key", None)
            self.file.close()
            self._safe_point()
        except BaseException as error:
            self.abort(keep_partial=bool(self.resume_key) and not isinstance(error, BadInput))
            raise
        self._io.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self, keep_partial: bool = False) -> None:
        """Stop writing; keep the partial file only if asked (so a rerun can resume), as the
        last safe point left it."""
        self._close_file()
        if keep_partial:
            with contextlib.suppress(OSError):  # without it, a resume copies the file first
                self._closed_marker.touch()  # a resume may append to it as it is
        else:
            remove(self.partial)

    @property
    def _closed_marker(self) -> Path:
        """Present while the partial file rests closed as a safe point left it; a partial
        file without it was left by a killed run and is copied before a resume."""
        return self.partial.with_name(self.partial.name + ".closed")

    def _close_file(self) -> None:
        self._io.rollback()  # nothing unfinished reaches the disk, even as HDF5 closes
        if self.file.id.valid:
            self.file.close()
        self._io.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:  # bad input leaves nothing behind; an interruption keeps what a rerun can resume
            self.abort(keep_partial=bool(self.resume_key) and not issubclass(exc_type, BadInput))


def _new_h5(fileobj) -> h5py.File:
    """A new HDF5 file written to ``fileobj``. Its root group keeps the creation order of its
    links and attributes and, like every dataset, records no timestamps."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fileobj_driver(h5py.h5fd.fileobj_driver, fileobj)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_link_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    fcpl.set_attr_creation_order(h5py.h5p.CRT_ORDER_TRACKED | h5py.h5p.CRT_ORDER_INDEXED)
    fcpl.set_obj_track_times(False)
    return h5py.File(h5py.h5f.create(repr(fileobj).encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def _create_dataset(f, name, shape, dtype, chunk_rows, **options) -> h5py.Dataset:
    """A dataset of rows of ``shape`` that grows along its first axis. It records no
    timestamps, so two conversions with the same arguments give the same bytes, and its
    chunks carry Fletcher32 checksums, except where HDF5 cannot filter (variable-length
    data: PNGs have CRCs of their own)."""
    return f.create_dataset(name, (0,) + shape, dtype, maxshape=(None,) + shape, chunks=(chunk_rows,) + shape,
                            fletcher32=np.dtype(dtype).kind != "O", track_times=False, **options)


def _datasets(group):
    return [ds for ds in group.values() if isinstance(ds, h5py.Dataset)]


def _views_before(f, scenes: int) -> int:
    """The number of view rows the first ``scenes`` scenes own."""
    return int(f["scenes/view_offset"][scenes - 1] + f["scenes/view_count"][scenes - 1]) if scenes else 0


def _read_prepared(f, scene: int) -> PreparedScene:
    """Scene ``scene`` of an open scene file, as the writer got it (images still encoded)."""
    start = int(f["scenes/view_offset"][scene])
    rows = slice(start, start + int(f["scenes/view_count"][scene]))
    near_far = f["scenes/near_far"][scene]
    images = {name: list(ds[rows]) if ds.attrs["codec"] == "png" else ds[rows]
              for name, ds in f["views"].items() if name in IMAGE_FIELDS}
    return PreparedScene(f["scenes/name"].asstr()[scene], f["scenes/split"].asstr()[scene],
                         f["scenes/category"].asstr()[scene] or None,
                         tuple(near_far) if np.isfinite(near_far).all() else None,
                         f["views/camera_to_world"][rows], f["views/intrinsics"][rows], images)


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
    guard = GuardedFile(tmp, "w+")
    try:
        with h5py.File(shards[0], "r") as f0, _new_h5(guard) as out:
            _write_index(out, f0, path, shards, metas)
        if guard.error is not None:
            raise write_failure(guard.error, path)
    except BaseException:
        guard.close()
        remove(tmp)
        raise
    guard.close()
    os.replace(tmp, path)
    return path


def _write_index(out, f0, path, shards, metas) -> None:
    """Fill the open index file ``out`` (``f0`` is the first shard)."""
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
        out.create_dataset(f"scenes/{name}", data=data, dtype=f0["scenes"][name].dtype, track_times=False,
                           fletcher32=data.dtype.kind != "O")
    for name, ds0 in f0["views"].items():
        layout = h5py.VirtualLayout(shape=(offsets[-1],) + ds0.shape[1:], dtype=ds0.dtype)
        layout.dcpl.set_obj_track_times(False)
        for i, shard in enumerate(shards):
            n = offsets[i + 1] - offsets[i]
            source = h5py.VirtualSource(os.path.relpath(shard, path.parent), f"views/{name}",
                                        shape=(n,) + ds0.shape[1:], dtype=ds0.dtype)
            layout[offsets[i]:offsets[i + 1]] = source
        out.create_virtual_dataset(f"views/{name}", layout)
        out[f"views/{name}"].attrs.update(dict(ds0.attrs))


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
    with f, _reading(path, (KeyError, TypeError, ValueError, OSError)):
        return _check_structure(f, path)


@contextlib.contextmanager
def _reading(path, errors=(OSError,)):
    """Turn ``errors`` (HDF5 failing to read ``path``) into BadInput naming the file."""
    try:
        yield
    except errors as error:
        raise BadInput(f"broken scene file ({_one_line(error)})", path) from None


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
        with _reading(self.path), h5py.File(self.path, "r") as f:
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

    def first_held_out(self) -> int:
        """The first validation scene (else the first test scene, else scene 0): what a
        command shows when no scene is named."""
        splits = self.splits()
        return next((int(splits[name][0]) for name in ("val", "test", "train") if name in splits), 0)

    def scene_of(self, row: int) -> int:
        """The scene owning view row ``row`` of the file."""
        return int(np.searchsorted(self.view_offset, row, side="right") - 1)

    def where(self, row: int) -> str:
        """View row ``row`` as messages name it: ``scene S (NAME), view V`` (V within the scene)."""
        scene = self.scene_of(row)
        return f"scene {scene} ({self.names[scene]}), view {row - self.view_offset[scene]}"

    def split(self, name: str) -> np.ndarray:
        indices = np.flatnonzero(self.split_of == name)
        if not len(indices):
            known = ", ".join(self.splits()) or "none"
            raise BadInput(f"has no scenes in split {name!r} (splits: {known})", self.path)
        return indices

    # -- data
    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            with _reading(self.path):
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
            if name not in ("camera_to_world", "intrinsics") and name not in self.codecs:
                raise BadInput(f"has no field {name!r} (it has {', '.join(self.codecs)})", self.path)
            out[name] = self._read_field(f[f"views/{name}"], name, rows)
        if "camera_to_world" in out:
            try:
                check_cameras(out["camera_to_world"], out.get("intrinsics"), views)
            except ValueError as error:
                raise BadInput(f"scene {scene} ({self.names[scene]}): {error}", self.path) from None
        return out

    def _read_field(self, ds, name, rows) -> np.ndarray:
        """Rows of one field; BadInput naming the scene and view of a row that cannot be read."""
        try:
            if self.codecs.get(name) == "png":
                return self._decode(ds, name, rows)
            data = self._read_rows(ds, rows)
        except OSError:
            damaged = next(((row, problem) for row in rows if (problem := _row_problem(ds, row))), None)
            if damaged is None:
                raise
            raise self._damaged(name, *damaged) from None
        return data.astype(np.float64) if name in ("camera_to_world", "intrinsics") else data

    def _damaged(self, name, row, problem) -> BadInput:
        return BadInput(f"{self.where(row)}: views/{name}[{row}]: {problem}", self.path)

    @staticmethod
    def _read_rows(ds, rows):
        if len(rows) and np.all(np.diff(rows) == 1):
            return ds[rows[0]:rows[-1] + 1]
        order = np.argsort(rows)
        data = ds[rows[order]] if len(rows) else ds[:0]
        return data[np.argsort(order)]

    def _decode(self, ds, name, rows):
        dtype = self.fields.get(name, "uint8")
        shape = (self.height, self.width) + ((3,) if name == "rgb" else ())
        images = []
        for row in rows:
            data = ds[row]
            try:
                image = decode_png(data, name, dtype)
            except (OSError, ValueError, SyntaxError) as error:
                raise self._damaged(name, row, f"corrupt PNG ({error})") from None
            if image.shape != shape:
                raise self._damaged(name, row, f"PNG of shape {image.shape}, expected {shape}")
            images.append(image)
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


# ----------------------------------------------------------------------------- preview scenes

def preview_of(scenes: SceneFile, index: int) -> dict:
    """Scene ``index`` as a checkpoint's preview scene (formats/checkpoint.md): its views as
    PNG bytes (uint8 arrays), its cameras and the file attributes a render needs."""
    views = scenes.read_views(index)
    near_far = scenes.near_far[index] if scenes.near_far is not None else None
    return {"name": str(scenes.names[index]), "split": str(scenes.split_of[index]), "source": scenes.source,
            "rgb_png": [encode_png(image, "rgb") for image in views["rgb"]],
            "camera_to_world": views["camera_to_world"], "intrinsics": views["intrinsics"],
            "near_far": None if near_far is None or not np.isfinite(near_far).all() else list(map(float, near_far)),
            "render_range": None if scenes.render_range is None else list(map(float, scenes.render_range)),
            "world_up": None if scenes.world_up is None else list(map(float, scenes.world_up)),
            "semantic_classes": None if scenes.semantic_classes is None else list(map(str, scenes.semantic_classes))}


@contextlib.contextmanager
def preview_scene_file(preview: dict):
    """A one-scene :class:`SceneFile` holding a preview scene, for the block's duration."""
    rgb = np.stack([decode_png(np.asarray(data, np.uint8), "rgb", "uint8") for data in preview["rgb_png"]])
    scene = Scene(name=preview["name"], split=preview["split"], rgb=rgb,
                  camera_to_world=np.asarray(preview["camera_to_world"], np.float32),
                  intrinsics=np.asarray(preview["intrinsics"], np.float32),
                  near_far=tuple(preview["near_far"]) if preview["near_far"] else None)
    attrs = {"world_up": preview["world_up"], "semantic_classes": preview.get("semantic_classes")}  # older: none
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{preview['name']}.h5"
        with SceneWriter(path, height=rgb.shape[1], width=rgb.shape[2], source=preview["source"],
                         render_range=preview["render_range"], attrs=attrs) as writer:
            writer.add(scene)
        scenes = SceneFile(path)
        try:
            yield scenes
        finally:
            scenes.close()


def validate_file(path) -> SceneFile:
    """Fully check a scene file: its structure, that every view reads back intact (HDF5
    checksums, where the file has them, and PNG CRCs), and every camera.

    Returns the opened :class:`SceneFile`; raises :class:`BadInput` naming the file, and the
    scene and view at fault.
    """
    scenes = SceneFile(path)
    names = ["camera_to_world", "intrinsics", *scenes.codecs]
    with _reading(scenes.path), h5py.File(scenes.path, "r") as f, \
            progress(total=(len(names) + 1) * scenes.num_views, desc="checking", unit="views") as bar:
        for name in names:
            damaged = _first_damaged(f[f"views/{name}"], 0, scenes.num_views, bar.update)
            if damaged:
                raise scenes._damaged(name, *damaged)
        _check_all_cameras(scenes, f, bar.update)
    return scenes


def _check_all_cameras(scenes: SceneFile, f, done, block: int = 65536) -> None:
    for start in range(0, scenes.num_views, block):
        stop = min(start + block, scenes.num_views)
        c2w = f["views/camera_to_world"][start:stop].astype(np.float64)
        K = f["views/intrinsics"][start:stop].astype(np.float64)
        try:
            check_cameras(c2w, K)
        except ValueError as error:
            row = start + _first_bad_view(c2w, K)
            scenes.read_views(scenes.scene_of(row), fields=("camera_to_world", "intrinsics"))  # names the view
            raise BadInput(f"{scenes.where(row)}: {error}", scenes.path) from None
        done(stop - start)


def _first_bad_view(c2w, K) -> int:
    for i in range(len(c2w)):
        try:
            check_cameras(c2w[i:i + 1], K[i:i + 1])
        except ValueError:
            return i
    return 0


def _first_damaged(ds, start: int, stop: int, done=lambda rows: None) -> tuple | None:
    """(row, problem) for the first row in [start, stop) of ``ds`` that does not read back
    intact, or None; ``done(rows)`` reports progress.

    Besides HDF5's checksums this catches rows past the end, chunks never written (HDF5
    would read them as fill values) and corrupt PNGs (HDF5 cannot checksum variable-length
    data; PNGs carry CRCs). It reads in blocks and looks at single rows only in a bad block.
    """
    row_bytes = 2**16 if ds.dtype.kind == "O" else int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
    step = max(1, 2**24 // max(row_bytes, 1))
    every_chunk = _all_chunks_written(ds)
    for low in range(start, stop, step):
        high = min(low + step, stop)
        if not (every_chunk and high <= len(ds) and _reads_back(ds, low, high)):
            for row in range(low, high):
                problem = _row_problem(ds, row)
                if problem:
                    return row, problem
        done(high - low)
    return None


def _all_chunks_written(ds) -> bool:
    return not ds.chunks or ds.id.get_num_chunks() == -(-len(ds) // ds.chunks[0])


def _reads_back(ds, low: int, high: int) -> bool:
    try:
        data = ds[low:high]
    except OSError:
        return False
    return ds.attrs.get("codec") != "png" or not any(map(images.png_problem, data))


def _row_problem(ds, row: int) -> str | None:
    """What is wrong with row ``row`` of ``ds``, or None if it reads back intact."""
    if row >= len(ds):
        return "missing (the dataset ends before it)"
    if ds.chunks:
        chunk = (row - row % ds.chunks[0],) + (0,) * (ds.ndim - 1)
        if ds.id.get_chunk_info_by_coord(chunk).byte_offset is None:
            return "never written"
    try:
        data = ds[row]
    except OSError as error:
        return "corrupt data (checksum mismatch)" if ds.fletcher32 and "filter" in str(error) else \
            f"unreadable ({_one_line(error)})"
    return images.png_problem(data) if ds.attrs.get("codec") == "png" else None


def _intact_scenes(f, written: int) -> tuple:
    """(how many of the first ``written`` scenes of a file read back whole, what is wrong
    with the next one)."""
    scenes, problem = written, None
    for ds in _datasets(f["scenes"]):
        damaged = _first_damaged(ds, 0, scenes)
        if damaged:
            scenes, problem = damaged[0], f"{ds.name}[{damaged[0]}]: {damaged[1]}"
    counts = f["scenes/view_count"][:scenes].astype(np.int64)
    ends = np.cumsum(counts)
    bad = np.flatnonzero((f["scenes/view_offset"][:scenes] != ends - counts) | (counts < 1))
    if len(bad):
        scenes, problem = int(bad[0]), f"scene {bad[0]}: inconsistent scene table"
    views = int(ends[scenes - 1]) if scenes else 0
    for ds in _datasets(f["views"]):
        damaged = _first_damaged(ds, 0, views)
        if damaged:
            views, problem = damaged[0], f"{ds.name}[{damaged[0]}]: {damaged[1]}"
    return int(np.searchsorted(ends[:scenes], views, side="right")), problem


def _one_line(error) -> str:
    return " ".join(str(error).split())


def _plain(value):
    """h5py attribute -> plain Python / numpy value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value
