"""Reading the raw files of datasets, with errors that name the file.

Every source reads its images, arrays and text through these, so a missing file, a
truncated PNG or a malformed text file becomes one :class:`BadInput` naming the file.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadInput


def require(path, what: str = "file") -> Path:
    """``path`` as a Path; BadInput if it is not an existing file (or folder, what="folder")."""
    path = Path(path)
    exists = path.is_dir() if what == "folder" else path.is_file()
    if not exists:
        raise BadInput(f"no such {what}", path)
    return path


def read_image(path) -> np.ndarray:
    """Decode an image file fully (PNG, JPEG, ...) to a numpy array, as stored: [H, W],
    [H, W, 3] or [H, W, 4]; 16-bit grey PNGs stay uint16."""
    path = require(path)
    try:
        with Image.open(path) as image:
            image.load()  # decode everything now: a truncated file fails here, not later
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(image).astype(np.uint16)
            elif image.mode not in ("L", "RGB", "RGBA", "I", "F"):
                image = image.convert("RGB")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInput(f"unreadable or truncated image ({error})", path) from None


def rgb_on_background(image: np.ndarray, background: int = 255) -> np.ndarray:
    """uint8 [H, W, 3] from a grey, RGB or RGBA image; alpha is composited onto
    ``background`` (white by default, as SRN's renderings are shown)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[-1] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
        return (rgb + 0.5).astype(np.uint8)
    return image[..., :3].astype(np.uint8, copy=False)


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
    return rgb_on_background(image)


def image_size(path) -> tuple:
    """(height, width) of an image file, from its header only."""
    path = require(path)
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError) as error:
        raise BadInput(f"unreadable image ({error})", path) from None
