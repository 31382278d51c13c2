"""Reading the raw files of datasets, with errors that name the file.

Every source reads its images, arrays and text through these, so a missing file, a
truncated PNG or a malformed text file becomes one :class:`BadInput` naming the file.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from .. import images
from ..errors import BadInput


def require(path, what: str = "file") -> Path:
    """``path`` as a Path; BadInput if it is not an existing file (or folder, what="folder")."""
    path = Path(path)
    exists = path.is_dir() if what == "folder" else path.is_file()
    if not exists:
        raise BadInput(f"no such {what}", path)
    return path


def read_image(path) -> np.ndarray:
    """Decode an image file fully (PNG, JPEG, ...) to a numpy array, as stored
    (:func:`scenetools.images.decode`): [H, W], [H, W, 3] or [H, W, 4]."""
    path = require(path)
    try:
        return images.decode(path)
    except images.DECODE_ERRORS as error:
        raise BadInput(f"unreadable or truncated image ({error})", path) from None


def read_numbers(path) -> list:
    """Every line of a text file as a list of floats (blank lines skipped)."""
    path = require(path)
    try:
        lines = path.read_text().splitlines()
        return [[float(x) for x in line.split()] for line in lines if line.strip()]
    except (UnicodeDecodeError, ValueError) as error:
        raise BadInput(f"malformed numbers ({error})", path) from None


def read_npz(path, keys=()) -> dict:
    """Load an .npz file; BadInput if it is unreadable or lacks any of ``keys``."""
    path = require(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise BadInput(f"missing arrays {', '.join(missing)} (has {', '.join(data.files)})", path)
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise BadInput(f"unreadable npz ({error})", path) from None


def read_npy(path) -> np.ndarray:
    path = require(path)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise BadInput(f"unreadable npy ({error})", path) from None


def read_rgb(path, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] of an 8-bit image file (alpha composited onto white), checked to be
    H x W: every view of a file has one size, the first image's."""
    image = read_image(path)
    if image.dtype != np.uint8:
        raise BadInput(f"expected an 8-bit image, got {image.dtype} pixels", path)
    if image.shape[:2] != (height, width):
        raise BadInput(f"image is {image.shape[1]}x{image.shape[0]}, expected {width}x{height} "
                       "(the size of the first image: all views must share one size)", path)
    return images.to_rgb(image, background=255)  # alpha onto white, as SRN shows its renders


def image_size(path) -> tuple:
    """(height, width) of an image file, from its header only."""
    path = require(path)
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInput(f"unreadable image ({error})", path) from None
