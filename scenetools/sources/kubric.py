"""Kubric MultiShapeNet: SRT's MSN (2.3.3) and OSRT's MSN-hard (2.8.0), read from their
TFDS folders with tensorflow alone (no tensorflow-datasets, no sunds).

Layout: a TFDS version folder, as google-research/sunds wrote it
(``sunds/datasets/kubric/frames_builder.py``, ``sunds/core/specs.py``)::

    multi_shapenet_frames/2.3.3/        (MSN-hard: kubric_frames/multi_shapenet_conditional/2.8.0)
        dataset_info.json               name, version, splits with their shardLengths
        features.json                   the feature spec; TFDS wrote it in one of three styles
        cameras-camera_0-category_image.labels.txt ...   category names, if the version has them
        <name>-<split>.tfrecord-00000-of-000NN ...       TFRecord shards of tf.train.Example

IN is the version folder, or a folder holding version folders (the highest is read, as
TFDS does). One Example is one scene, its nested features flattened with ``/``:
``scene_name`` ("scene_<seed>", numbered per split), the frame ``pose/{R,t}`` (frame to
scene) and, for ``camera_0`` to ``camera_9``, ``cameras/camera_i/intrinsics/K``,
``.../extrinsics/{R,t}`` (frame to camera), ``.../color_image`` (RGB PNG) and, depending on
the version, ``category_image`` and ``instance_image`` (grey PNGs) and ``depth_image``
(float32 bit-cast to 4 bytes per pixel, stored as an RGBA PNG).

Conventions converted here:

* cameras: sunds' extrinsics are world-to-camera in OpenCV axes (Kubric's Blender
  camera-to-world composed with diag(1, -1, -1), then inverted), so
  ``camera_to_world = pose @ inverse(extrinsics)``, sunds' ``scene_from_camera``. Kubric's
  pose is the identity, but it is composed all the same.
* intrinsics: sunds' K is in pixels, principal point (W/2, H/2), rays through pixel centres
  (u + 0.5, v + 0.5): our convention already, so K is kept as stored.
* depth: Kubric renders the distance from the camera centre (its z pass goes through
  ``camera.z_to_depth`` since September 2021), which is our distance along the ray: kept.
* instance: OSRT reads ids 0..34 "with 1 indicating background" and treats the rare 0 as
  background too, so ours = max(id, 1) - 1: 0 = background, objects 1..K.
* semantic: ``category_image`` holds Kubric's segmentation id, the category's line in the
  labels file + 1 (0 = background): kept, with semantic_classes = ["background"] + labels.
* world: z up (Kubric's floor is z = 0); native render range (0, 20) as SRT and OSRT use it.
* splits: TFDS "validation" becomes "val". Scene names are "<split>/<scene_name>", since
  every split numbers its scenes from 0.

``scan`` reads only the TFRecord framing and the few protobuf bytes around each record's
``scene_name``, seeking over the images; ``load`` seeks to its records, parses them with
``tf.io.parse_single_example`` and decodes the PNGs with Pillow.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import cameras, images
from ..errors import BadInput
from ..scenefile import Scene, check_cameras
from . import SceneRef, SourceInfo
from .files import require

RENDER_RANGE = (0.0, 20.0)  # SRT's and OSRT's render_kwargs min_dist, max_dist
WORLD_UP = [0.0, 0.0, 1.0]
SPLIT_NAMES = {"validation": "val"}
SPLIT_ORDER = ("train", "val", "test")
DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
VERSION_FOLDER = re.compile(r"^\d+\.\d+\.\d+$")
CAMERA_KEY = re.compile(r"^cameras/([^/]+)/(.+)$")
INSTALL_HINT = "reading Kubric TFRecords needs tensorflow: pip install scenetools[kubric]"

#: Camera features: (kind, shape, dtype); None in a shape is the image height or width.
REQUIRED_CAMERA_FEATURES = {
    "intrinsics/K": ("tensor", (3, 3), "float32"),
    "extrinsics/R": ("tensor", (3, 3), "float32"),
    "extrinsics/t": ("tensor", (3,), "float32"),
    "color_image": ("image", (None, None, 3), "uint8"),
}
IMAGE_FIELDS = {  # sunds feature -> (our field, stored dtype, PIL mode it is decoded to)
    "depth_image": ("depth", "float32", "RGBA"),
    "instance_image": ("instance", "uint8", "L"),
    "category_image": ("semantic", "uint8", "L"),
}
OPTIONAL_CAMERA_FEATURES = {
    "depth_image": ("image", (None, None, 1), "float32"),
    "instance_image": ("image", (None, None, 1), "uint8"),
    "category_image": ("image", (None, None, 1), "uint8"),
    "intrinsics/type": ("text", (), "string"),
    "intrinsics/distortion/radial": ("tensor", (3,), "float32"),
    "intrinsics/distortion/tangential": ("tensor", (2,), "float32"),
}
POSE_FEATURES = {"pose/R": ("tensor", (3, 3), "float32"), "pose/t": ("tensor", (3,), "float32")}


# ----------------------------------------------------------------------------- tensorflow

def _require_tensorflow() -> None:
    """Fail early, without the cost of importing it, when tensorflow is not installed."""
    try:
        found = importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BadInput(INSTALL_HINT)


@functools.lru_cache(maxsize=None)
def _tensorflow():
    """Import tensorflow quietly (its C++ logging would break one-line errors), CPU only."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"  # else it logs a oneDNN notice on import
    try:
        import tensorflow as tf
    except ImportError:
        raise BadInput(INSTALL_HINT) from None
    with contextlib.suppress(RuntimeError, ValueError):  # devices already set up: leave them
        tf.config.set_visible_devices([], "GPU")
    return tf


def _tf_message(error) -> str:
    """A tensorflow error's message without its op decorations."""
    message = getattr(error, "message", None) or str(error)
    return re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message).strip()


# ----------------------------------------------------------------------------- TFDS metadata

def find_version_folder(path) -> Path:
    """The TFDS version folder: ``path`` itself or its highest version subfolder."""
    path = require(path, "folder")
    if (path / "dataset_info.json").exists():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and VERSION_FOLDER.match(p.name)]
    if not versions:
        hint = ("every TFDS version folder has one" if VERSION_FOLDER.match(path.name) else
                "give the TFDS version folder (e.g. multi_shapenet_frames/2.3.3) or the folder holding it")
        raise BadInput(f"no such file: {hint}", path / "dataset_info.json")
    return max(versions, key=lambda p: tuple(int(x) for x in p.name.split(".")))


def _read_json(path: Path):
    try:
        return json.loads(require(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"malformed JSON ({error})", path) from None


def read_splits(folder: Path) -> tuple:
    """(dataset_info dict, [(our split, [(shard file name, record count), ...]), ...])."""
    info_path = folder / "dataset_info.json"
    info = _read_json(info_path)
    file_format = info.get("fileFormat") or "tfrecord"
    if file_format != "tfrecord":
        raise BadInput(f"file format {file_format!r} is not supported (only tfrecord)", info_path)
    try:
        splits = [(s["name"], [int(n) for n in s["shardLengths"]], s.get("filepathTemplate") or DEFAULT_TEMPLATE)
                  for s in info["splits"]]
        name = info["name"]
    except (KeyError, TypeError, ValueError) as error:
        raise BadInput(f"malformed dataset_info.json (no name or splits with shardLengths: {error!r})",
                       info_path) from None
    if not splits:
        raise BadInput("lists no splits", info_path)
    listed = []
    for split, lengths, template in splits:
        shards = [(_shard_path(folder, template, name, split, i, len(lengths)).name, n)
                  for i, n in enumerate(lengths)]
        listed.append((SPLIT_NAMES.get(split, split), shards))
    order = {name: k for k, name in enumerate(SPLIT_ORDER)}
    listed.sort(key=lambda item: order.get(item[0], len(order)))
    return info, listed


def _shard_path(folder: Path, template: str, dataset: str, split: str, index: int, count: int) -> Path:
    x_of_y = f"{index:05d}-of-{count:05d}"
    name = (template.replace("{DATASET}", dataset).replace("{SPLIT}", split)
            .replace("{FILEFORMAT}", "tfrecord").replace("{SHARD_X_OF_Y}", x_of_y))
    path = folder / name
    if path.is_file():
        return path
    renamed = list(folder.glob(f"*-{split}.tfrecord-{x_of_y}"))  # a dataset copied under another name
    if len(renamed) == 1:
        return renamed[0]
    raise BadInput(f"missing shard {index + 1} of {count} of split {split} (listed in dataset_info.json)", path)


@dataclass(frozen=True)
class Feature:
    """One leaf of features.json: kind is image, tensor, text or the TFDS class name."""

    kind: str
    shape: tuple  # None for an unknown dimension
    dtype: str
    num_classes: int | None = None
    encoding: str = "none"


def read_features(path: Path) -> dict:
    """features.json flattened to {"cameras/camera_0/color_image": Feature, ...}."""
    spec = _read_json(path)
    leaves = {}
    try:
        _flatten(spec, "", leaves)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise BadInput(f"unknown feature layout (unreadable feature spec: {error!r})", path) from None
    return leaves


def _flatten(node: dict, prefix: str, leaves: dict) -> None:
    cls, content, style = _class_and_content(node)
    if cls == "FeaturesDict":
        children = content["features"] if style == "proto" else content
        for key, child in children.items():
            _flatten(child, f"{prefix}/{key}" if prefix else key, leaves)
    else:
        leaves[prefix] = _leaf(cls, content, style)


def _class_and_content(node: dict) -> tuple:
    """(class name, content, style) of a feature in any of TFDS' features.json styles: legacy
    {"type", "content"}; {"pythonClassName", "jsonFeature"} holding the legacy content as a
    JSON string; and typed protos {"pythonClassName", "featuresDict" | "image" | ...}."""
    if "type" in node:
        cls, content = node["type"].rsplit(".", 1)[-1], node["content"]
        if node.get("proto_cls"):
            return cls, json.loads(content) if isinstance(content, str) else content, "proto"
        return cls, content, "legacy"
    cls = node.get("pythonClassName", "").rsplit(".", 1)[-1]
    if "jsonFeature" in node:
        return cls, json.loads(node["jsonFeature"]["json"]), "legacy"
    for key, default in (("featuresDict", "FeaturesDict"), ("image", "Image"), ("tensor", "Tensor"),
                         ("text", "Text")):
        if key in node:
            return cls or default, node[key], "proto"
    raise ValueError(f"unrecognised feature {cls or sorted(node)}")


def _leaf(cls: str, content: dict, style: str) -> Feature:
    kind = {"Image": "image", "LabeledImage": "image", "Tensor": "tensor", "Scalar": "tensor",
            "Text": "text"}.get(cls)
    if kind is None or kind == "text":
        return Feature(kind or cls, (), "string" if kind else "")
    if style == "legacy":
        dims, labels = content.get("shape", ()), content.get("labels")
        num_classes = labels if isinstance(labels, int) else len(labels) if isinstance(labels, list) else None
    else:
        dims = content.get("shape", {}).get("dimensions", [])
        num_classes = int(content.get("label", {}).get("numClasses", 0)) or None
    shape = tuple(None if d is None or int(d) < 0 else int(d) for d in dims)
    dtype = str(content.get("dtype", "")).replace("tf.", "")
    return Feature(kind, shape, dtype, num_classes, content.get("encoding") or "none")


def camera_layout(leaves: dict, path: Path) -> dict:
    """Check features.json against the sunds Kubric frames spec.

    Returns {"cameras": ["camera_0", ...], "optional": [the optional camera features every
    camera has], "pose": bool, "size": (H, W) (None where unknown), "category_classes":
    int | None}; BadInput naming features.json otherwise.
    """
    def fail(problem):
        raise BadInput(f"unknown feature layout: {problem} (expected the sunds Kubric frames spec: scene_name, "
                       "cameras/camera_0..N/{color_image, intrinsics/K, extrinsics/R, extrinsics/t, ...})", path)

    if leaves.get("scene_name", Feature("", (), "")).kind != "text":
        fail("no scene_name text feature")
    per_camera = {}
    for key, feature in leaves.items():
        match = CAMERA_KEY.match(key)
        if match:
            per_camera.setdefault(match.group(1), {})[match.group(2)] = feature
    names = [f"camera_{i}" for i in range(len(per_camera))]
    if not per_camera or set(per_camera) != set(names):
        fail(f"cameras are {sorted(per_camera) or 'missing'}")
    sizes, optional_sets = set(), set()
    for name in names:
        features = per_camera[name]
        for key, expected in REQUIRED_CAMERA_FEATURES.items():
            if key not in features:
                fail(f"cameras/{name} has no {key}")
        present = tuple(key for key in OPTIONAL_CAMERA_FEATURES if key in features)
        optional_sets.add(present)
        for key in list(REQUIRED_CAMERA_FEATURES) + list(present):
            expected = {**REQUIRED_CAMERA_FEATURES, **OPTIONAL_CAMERA_FEATURES}[key]
            problem = _mismatch(features[key], *expected)
            if problem:
                fail(f"cameras/{name}/{key} is {problem}")
            if expected[0] == "image":
                sizes.add(features[key].shape[:2])
    if len(optional_sets) > 1:
        fail("the cameras do not all have the same features")
    if len(sizes) > 1:
        fail(f"the camera images have different sizes {sorted(sizes, key=str)}")
    pose = [key for key in POSE_FEATURES if key in leaves]
    for key in pose:
        problem = _mismatch(leaves[key], *POSE_FEATURES[key])
        if problem:
            fail(f"{key} is {problem}")
    if len(pose) == 1:
        fail(f"{pose[0]} without its other half")
    category = per_camera["camera_0"].get("category_image")
    return {"cameras": names, "optional": list(optional_sets.pop()), "pose": bool(pose),
            "size": sizes.pop(), "category_classes": category.num_classes if category else None}


def _mismatch(feature: Feature, kind: str, shape: tuple, dtype: str) -> str | None:
    """How ``feature`` differs from the expected kind, shape and dtype (None if it does not)."""
    fits = (feature.kind == kind and feature.dtype == dtype and len(feature.shape) == len(shape)
            and all(e is None or d == e for d, e in zip(feature.shape, shape)) and feature.encoding == "none")
    if fits:
        return None
    return (f"a {feature.kind} {feature.dtype} {list(feature.shape)} (encoding {feature.encoding}), "
            f"expected {kind} {dtype}")


def read_category_labels(folder: Path, camera_names: list, num_classes: int | None) -> list | None:
    """The category names of ``category_image`` (the same file for every camera), or None."""
    if not (folder / "cameras-camera_0-category_image.labels.txt").exists() and not num_classes:
        return None  # a version without label names
    labels = None
    for name in camera_names:
        path = folder / f"cameras-{name}-category_image.labels.txt"
        try:
            names = [line.strip() for line in require(path).read_text().splitlines() if line.strip()]
        except UnicodeDecodeError as error:
            raise BadInput(f"unreadable labels file ({error})", path) from None
        if num_classes and len(names) != num_classes:
            raise BadInput(f"has {len(names)} labels, features.json says {num_classes}", path)
        if labels is not None and names != labels:
            raise BadInput("differs from the labels of camera_0", path)
        labels = names
    return labels


# ----------------------------------------------------------------------------- TFRecord framing

def _crc32c_table() -> list:
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0x82F63B78 if n & 1 else n >> 1
        table.append(n)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C, rotated right by 15 bits plus a constant."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _Window:
    """Small reads at any position of a file through a 4 KiB window, so walking the small
    fields of a record costs one read per window, not one per field."""

    SIZE = 4096

    def __init__(self, file):
        self.file, self.start, self.data = file, 0, b""

    def read(self, pos: int, n: int) -> bytes:
        if not (self.start <= pos and pos + n <= self.start + len(self.data)):
            self.file.seek(pos)
            self.data, self.start = self.file.read(max(n, self.SIZE)), pos
        return self.data[pos - self.start:pos - self.start + n]


def _record_span(window: _Window, pos: int, file_size: int, path: Path, index: int) -> tuple:
    """(data offset, data length) of the record at ``pos``: uint64 length, uint32 masked
    CRC of the length, the data, uint32 masked CRC of the data."""
    header = window.read(pos, 12)
    if len(header) < 12:
        raise BadInput(f"truncated TFRecord: record {index} at byte {pos} has an incomplete header", path)
    (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
    if crc != masked_crc32c(header[:8]):
        raise BadInput(f"corrupt TFRecord: bad length checksum of record {index} at byte {pos}", path)
    if pos + 12 + length + 4 > file_size:
        raise BadInput(f"truncated TFRecord: record {index} at byte {pos} needs {length + 16} bytes, "
                       f"the file ends {file_size - pos} bytes after its start", path)
    return pos + 12, length


def scan_shard(path: Path, expected: int) -> list:
    """[(scene_name, data offset, data length)] of every record of a TFRecord shard."""
    size = path.stat().st_size
    records, pos = [], 0
    with open(path, "rb", buffering=0) as file:
        window = _Window(file)
        while pos < size:
            offset, length = _record_span(window, pos, size, path, len(records))
            records.append((_scene_name(window, offset, length, path, len(records)), offset, length))
            pos = offset + length + 4
    if len(records) != expected:
        raise BadInput(f"has {len(records)} records, dataset_info.json says {expected}", path)
    return records


# The few protobuf rules needed to find one feature of a serialised tf.train.Example:
# Example.features (field 1) -> Features.feature, a map whose entries (field 1) hold the key
# (field 1) and the Feature (field 2) -> Feature.bytes_list (field 1) -> BytesList.value (1).

def _varint(window: _Window, pos: int) -> tuple:
    value = 0
    for i, byte in enumerate(window.read(pos, 10)):
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise ValueError(f"malformed varint at byte {pos}")


def _fields(window: _Window, start: int, end: int, number: int):
    """(start, end) of every length-delimited field ``number`` of the message at [start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(window, pos)
        wire = key & 7
        if wire == 2:
            size, pos = _varint(window, pos)
            if pos + size > end:
                raise ValueError(f"field at byte {pos} runs past the end of its message")
            if key >> 3 == number:
                yield pos, pos + size
            pos += size
        elif wire == 0:
            pos = _varint(window, pos)[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {pos}")


def _first(fields):
    return next(fields, None)


def _bytes_feature(window: _Window, start: int, end: int, name: bytes) -> bytes | None:
    """The first bytes value of feature ``name`` of the Example at [start, end), reading only
    the map keys and that feature (so a record's images are seeked over, never read)."""
    for features in _fields(window, start, end, 1):
        for entry in _fields(window, *features, 1):
            key = _first(_fields(window, *entry, 1))
            if key is None or window.read(key[0], key[1] - key[0]) != name:
                continue
            value = _first(_fields(window, *entry, 2))
            bytes_list = value and _first(_fields(window, *value, 1))
            item = bytes_list and _first(_fields(window, *bytes_list, 1))
            return window.read(item[0], item[1] - item[0]) if item else None
    return None


def _scene_name(window: _Window, offset: int, length: int, path: Path, index: int) -> str:
    try:
        name = _bytes_feature(window, offset, offset + length, b"scene_name")
        if name is None:
            raise ValueError("it has no scene_name")
        return name.decode()
    except (ValueError, UnicodeDecodeError) as error:
        raise BadInput(f"record {index} at byte {offset - 12} is not a Kubric tf.train.Example ({error})",
                       path) from None


# ----------------------------------------------------------------------------- images

def decode_png(data: bytes, mode: str, size, where: str, path: Path) -> np.ndarray:
    """Decode one PNG of a record to a numpy array of layout ``mode`` ("RGB", "L" or
    "RGBA"), of ``size`` (H, W) if given.

    Colour images become RGB as tensorflow's decode_png(channels=3) makes them; grey ids
    ("L") and bit-cast floats ("RGBA") must be stored in exactly that layout, since a
    conversion would alter them.
    """
    try:
        array = images.decode(data)
    except images.DECODE_ERRORS as error:
        raise BadInput(f"{where}: unreadable or truncated PNG ({error})", path) from None
    stored = images.channels(array)
    if mode == "RGB" and stored in ("L", "RGB", "RGBA"):
        array = images.to_rgb(array)
    elif stored != mode:
        raise BadInput(f"{where}: PNG of mode {stored}, expected {mode}", path)
    if size is not None and array.shape[:2] != tuple(size):
        raise BadInput(f"{where}: image is {array.shape[0]}x{array.shape[1]}, expected {size[0]}x{size[1]}", path)
    return array


# ----------------------------------------------------------------------------- source

class KubricSource:
    """scene-convert --from kubric: a Kubric MultiShapeNet TFDS version folder."""

    batch_size = 8

    def __init__(self, path: Path):
        self.folder = find_version_folder(path)
        dataset_info, self.shards = read_splits(self.folder)
        features_path = self.folder / "features.json"
        layout = camera_layout(read_features(require(features_path)), features_path)
        _require_tensorflow()
        self.cameras, self.optional = layout["cameras"], layout["optional"]
        self.pose = layout["pose"]
        self.keys = self._keys()
        height, width = layout["size"]
        if height is None or width is None:
            height, width = self._first_image_size()
        self.size = (height, width)
        fields = {IMAGE_FIELDS[k][0]: IMAGE_FIELDS[k][1] for k in IMAGE_FIELDS if k in self.optional}
        attrs = {"world_up": WORLD_UP, "source_info": self._source_info(dataset_info)}
        if "category_image" in self.optional:
            labels = read_category_labels(self.folder, self.cameras, layout["category_classes"])
            if labels:
                attrs["semantic_classes"] = ["background"] + labels
        name = "/".join(str(x) for x in (dataset_info["name"], dataset_info.get("configName"),
                                         dataset_info.get("version", self.folder.name)) if x)
        self.info = SourceInfo(source=f"kubric:{name}", height=height, width=width, render_range=RENDER_RANGE,
                               fields=fields, attrs=attrs, views_per_scene=len(self.cameras))

    def _keys(self) -> dict:
        """{Example key: (kind, shape)} of every feature ``load`` parses."""
        keys = {key: POSE_FEATURES[key][:2] for key in POSE_FEATURES if self.pose}
        for name in self.cameras:
            for key in list(REQUIRED_CAMERA_FEATURES) + self.optional:
                kind, shape, _ = {**REQUIRED_CAMERA_FEATURES, **OPTIONAL_CAMERA_FEATURES}[key]
                keys[f"cameras/{name}/{key}"] = (kind, () if kind != "tensor" else shape)
        return keys

    def _source_info(self, dataset_info: dict) -> dict:
        return {"dataset": dataset_info["name"], "config": dataset_info.get("configName"),
                "version": dataset_info.get("version", self.folder.name),
                "scenes": {split: sum(n for _, n in shards) for split, shards in self.shards},
                "images": ["color_image"] + [key for key in IMAGE_FIELDS if key in self.optional],
                "cameras": "camera_to_world = pose @ inverse(extrinsics) as sunds; K as stored",
                "depth": "Kubric's distance from the camera centre, as stored",
                "instance": "OSRT: raw ids 0 and 1 are background (0), raw id k >= 2 is object k - 1",
                "semantic": "category_image as stored: 0 background, k the k-th line of the labels file"}

    def _first_image_size(self) -> tuple:
        """Image size of the first record, for a features.json that leaves it open."""
        shard = next((shard for _, shards in self.shards for shard, count in shards if count), None)
        if shard is None:
            raise BadInput("lists no records, and features.json does not give the image size",
                           self.folder / "dataset_info.json")
        path = self.folder / shard
        with open(require(path), "rb", buffering=0) as file:
            window = _Window(file)
            offset, length = _record_span(window, 0, path.stat().st_size, path, 0)
            record = window.read(offset, length)
        example = self._parse([(record, "record 0", path)])[0]
        return decode_png(example["cameras/camera_0/color_image"], "RGB", None, "record 0", path).shape[:2]

    def scan(self) -> list:
        """One ref per record, by split (train, val, test), shard and record order."""
        refs, seen = [], set()
        for split, shards in self.shards:
            for shard, count in shards:
                path = self.folder / shard
                for index, (scene_name, offset, length) in enumerate(scan_shard(path, count)):
                    name = f"{split}/{scene_name}"
                    if name in seen:
                        raise BadInput(f"record {index}: scene_name {scene_name!r} appears twice in split {split}",
                                       path)
                    seen.add(name)
                    refs.append(SceneRef(name, split, (shard, index, offset, length)))
        return refs

    def load(self, refs: list) -> list:
        records = self._read_records(refs)
        examples = self._parse(records)
        return [self._scene(ref, example, where, path)
                for ref, (_, where, path), example in zip(refs, records, examples)]

    def _read_records(self, refs: list) -> list:
        """[(serialised Example, where, shard path)] of ``refs``, by seeking in their shards."""
        records = []
        with contextlib.ExitStack() as stack:
            files = {}
            for ref in refs:
                shard, index, offset, length = ref.key
                path = self.folder / shard
                if shard not in files:
                    files[shard] = stack.enter_context(open(require(path), "rb"))
                files[shard].seek(offset)
                record = files[shard].read(length)
                where = f"record {index} ({ref.name})"
                if len(record) != length:
                    raise BadInput(f"truncated TFRecord: {where} at byte {offset - 12} is cut short", path)
                records.append((record, where, path))
        return records

    def _parse(self, records: list) -> list:
        """Parse records as ``tf.io.parse_example`` does, all in one call; on failure, one at a
        time to name the record at fault."""
        tf = _tensorflow()
        spec = {key: tf.io.FixedLenFeature(shape, tf.float32 if kind == "tensor" else tf.string)
                for key, (kind, shape) in self.keys.items()}
        try:
            parsed = {key: value.numpy() for key, value in
                      tf.io.parse_example([record for record, _, _ in records], spec).items()}
            return [{key: value[i] for key, value in parsed.items()} for i in range(len(records))]
        except (tf.errors.InvalidArgumentError, ValueError):
            pass
        examples = []
        for record, where, path in records:
            try:
                parsed = tf.io.parse_single_example(record, spec)
            except (tf.errors.InvalidArgumentError, ValueError) as error:
                raise BadInput(f"{where}: malformed tf.train.Example ({_tf_message(error)})", path) from None
            examples.append({key: value.numpy() for key, value in parsed.items()})
        return examples

    def _scene(self, ref: SceneRef, example: dict, where: str, path: Path) -> Scene:
        pose = np.eye(4)
        if self.pose:
            pose[:3, :3], pose[:3, 3] = example["pose/R"], example["pose/t"]
        K, c2w = zip(*(self._camera(example, f"cameras/{name}", where, path) for name in self.cameras))
        K, c2w = np.stack(K), pose @ np.stack(c2w)
        try:
            check_cameras(c2w, K)
        except ValueError as error:
            raise BadInput(f"{where}: {error}", path) from None
        decoded = {}
        for key in ["color_image"] + [k for k in IMAGE_FIELDS if k in self.optional]:
            mode = IMAGE_FIELDS[key][2] if key in IMAGE_FIELDS else "RGB"
            decoded[key] = np.stack([decode_png(example[f"cameras/{name}/{key}"], mode, self.size,
                                               f"{where}, cameras/{name}/{key}", path) for name in self.cameras])
        depth, instance = decoded.get("depth_image"), decoded.get("instance_image")
        return Scene(name=ref.name, split=ref.split, rgb=decoded["color_image"], camera_to_world=c2w, intrinsics=K,
                     depth=images.float32_from_rgba(depth) if depth is not None else None,
                     instance=np.maximum(instance, 1) - 1 if instance is not None else None,
                     semantic=decoded.get("category_image"), near_far=RENDER_RANGE)

    def _camera(self, example: dict, prefix: str, where: str, path: Path) -> tuple:
        """(K, camera-to-frame) of one camera; only sunds' distortion-free pinhole is read."""
        kind = example.get(f"{prefix}/intrinsics/type", b"PERSPECTIVE")
        if kind != b"PERSPECTIVE":
            raise BadInput(f"{where}: {prefix} is a {kind.decode(errors='replace')} camera, only PERSPECTIVE is "
                           "supported", path)
        for key in ("radial", "tangential"):
            coefficients = example.get(f"{prefix}/intrinsics/distortion/{key}")
            if coefficients is not None and np.abs(coefficients).max() > 1e-6:
                raise BadInput(f"{where}: {prefix} has {key} lens distortion {coefficients.tolist()}, "
                               "which is not supported", path)
        R, t = example[f"{prefix}/extrinsics/R"], example[f"{prefix}/extrinsics/t"]
        return example[f"{prefix}/intrinsics/K"].astype(np.float64), cameras.world_to_camera_to_c2w(R, t)
