"""Image bytes and files <-> numpy arrays: the one PNG encoder and the one image decoder
that the sources, the scene file and scene-video share.

Arrays are "as stored": [H, W] grey (uint8; uint16 for 16-bit PNGs), [H, W, 3] RGB or
[H, W, 4] RGBA. A float32 image (depth) travels as RGBA PNG bytes holding each pixel's
little-endian float32, as TFDS stores float images.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

#: What decoding a truncated or corrupt image raises (PIL raises each of these).
DECODE_ERRORS = (OSError, SyntaxError, ValueError)


def decode(source) -> np.ndarray:
    """Decode a whole image (PNG, JPEG, ...) from a file path or from bytes (or a uint8
    array of them), as stored; palette images become RGB(A). Raises one of
    :data:`DECODE_ERRORS` on a truncated or corrupt image."""
    return decode_with_text(source)[0]


def decode_with_text(source) -> tuple:
    """(:func:`decode`'s array, the PNG's text chunks as a dict)."""
    stream = source if isinstance(source, (str, Path)) else io.BytesIO(bytes(memoryview(source)))
    with Image.open(stream) as image:
        image.load()  # decode everything now: a truncated file fails here, not later
        text = dict(getattr(image, "text", {}))
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(image).astype(np.uint16), text
        elif image.mode not in ("L", "RGB", "RGBA", "I", "F"):
            image = image.convert("RGB")
        return np.asarray(image), text


def encode_png(array: np.ndarray, compress_level: int = 3, text: dict | None = None) -> np.ndarray:
    """PNG bytes (a uint8 array, as h5py stores variable-length data) of an image array,
    with optional text chunks."""
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", pnginfo=info, compress_level=compress_level)
    return np.frombuffer(buffer.getvalue(), np.uint8)


def png_problem(data) -> str | None:
    """What is wrong with PNG bytes (a CRC check of every chunk, without decoding), or None."""
    try:
        with Image.open(io.BytesIO(bytes(memoryview(data)))) as image:
            image.verify()
    except Exception as error:  # noqa: BLE001 - PIL raises many kinds on bad data
        return f"corrupt PNG ({' '.join(str(error).split()) or type(error).__name__})"
    return None


def rgba_from_float32(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 4] holding the little-endian bytes of a float32 [H, W] image."""
    return np.ascontiguousarray(image, "<f4").view(np.uint8).reshape(image.shape + (4,))


def float32_from_rgba(rgba: np.ndarray) -> np.ndarray:
    """The float32 [H, W] image whose bytes an RGBA [H, W, 4] image holds."""
    return np.ascontiguousarray(rgba).view("<f4")[..., 0].astype(np.float32)


def channels(array: np.ndarray) -> str:
    """The stored layout of a decoded image: "L", "I;16", "RGB" or "RGBA"."""
    if array.ndim == 2:
        return "I;16" if array.dtype == np.uint16 else "L"
    return {3: "RGB", 4: "RGBA"}.get(array.shape[-1], f"{array.shape[-1]} channels")


def to_rgb(array: np.ndarray, background: int | None = None) -> np.ndarray:
    """uint8 [H, W, 3] from an 8-bit grey, RGB or RGBA image. Alpha is dropped (as
    tensorflow's decode_png(channels=3) does), or composited onto a grey ``background``
    level (255: white, as SRN's renderings are shown)."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.shape[-1] == 4 and background is not None:
        alpha = array[..., 3:].astype(np.float32) / 255.0
        rgb = array[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
        return (rgb + 0.5).astype(np.uint8)
    return array[..., :3].astype(np.uint8, copy=False)
