"""Frames between scene-render and scene-video: a stream of PNGs on a pipe, or a folder.

Stream (``formats/frame-stream.md``): PNG images back to back, nothing else. Each carries a
``tEXt`` chunk ``scenetools`` with JSON saying what it is: ``{"format": "scenetools.frames",
"version": 1, "output": "rgb" | "depth" | "segmentation" | "semantic" | "slots" | "input", "frame": k,
"frames": N}``
(input views come first, with ``frame`` = the input index). A stream of one output is a
plain PNG sequence that ffmpeg's ``image2pipe`` reads as it is.

Folder: ``DIR/<output>/00000.png ...`` per output and ``DIR/input/00000.png ...``.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from . import images
from .errors import BadInput

FORMAT, VERSION = "scenetools.frames", 1
OUTPUTS = ("input", "rgb", "segmentation", "semantic", "depth", "slots")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode_frame(image: np.ndarray, output: str, frame: int, frames: int) -> bytes:
    meta = {"format": FORMAT, "version": VERSION, "output": output, "frame": frame, "frames": frames}
    return images.encode_png(image, compress_level=1, text={"scenetools": json.dumps(meta)}).tobytes()


def read_stream(stream, name="<stdin>"):
    """Yield (metadata dict, image uint8 [H, W, 3]) for each PNG of a binary stream.

    A stream that ends inside a PNG, or before the announced number of frames, or holds
    something else, is BadInput.
    """
    seen = {}
    announced = None
    for data in _split_pngs(stream, name):
        try:
            array, text = images.decode_with_text(data)
            array = images.to_rgb(array)
            meta = json.loads(text.get("scenetools", "null")) or {"output": "rgb", "frame": None}
        except images.DECODE_ERRORS as error:
            raise BadInput(f"corrupt PNG in the frame stream ({error})", name) from None
        output = meta.get("output", "rgb")
        if meta.get("frame") is None:
            meta["frame"] = seen.get(output, 0)
        seen[output] = seen.get(output, 0) + 1
        announced = meta.get("frames", announced)
        yield meta, array
    if not seen:
        raise BadInput("empty frame stream (no PNG)", name)
    rendered = [count for output, count in seen.items() if output != "input"]
    if announced is not None and (not rendered or min(rendered) < announced):
        raise BadInput(f"truncated frame stream: {min(rendered, default=0)} of {announced} frames", name)


def _split_pngs(stream, name):
    """Yield the bytes of each whole PNG in the stream (chunk by chunk up to IEND)."""
    while True:
        signature = stream.read(8)
        if not signature:
            return
        if signature != PNG_SIGNATURE:
            raise BadInput("not a stream of PNG images", name)
        parts = [signature]
        while True:
            header = stream.read(8)
            if len(header) < 8:
                raise BadInput("truncated frame stream (it ends inside a PNG)", name)
            length, kind = struct.unpack(">I4s", header)
            body = stream.read(length + 4)
            if len(body) < length + 4:
                raise BadInput("truncated frame stream (it ends inside a PNG)", name)
            parts += [header, body]
            if kind == b"IEND":
                yield b"".join(parts)
                break


def write_folder_frame(folder: Path, image: np.ndarray, output: str, frame: int) -> None:
    target = Path(folder) / output
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{frame:05d}.png").write_bytes(images.encode_png(image, compress_level=1).tobytes())


def read_folder(folder) -> tuple:
    """({output: [png paths in order]}, number of frames) of a scene-render folder, or of a
    plain folder of PNGs (read as one rgb output)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInput("no such frames folder", folder)
    outputs = {name: sorted((folder / name).glob("*.png")) for name in OUTPUTS if (folder / name).is_dir()}
    outputs = {name: files for name, files in outputs.items() if files}
    if not outputs:
        flat = sorted(folder.glob("*.png"))
        if not flat:
            raise BadInput("no frames (no PNG files, nor rgb/, segmentation/, depth/ folders of them)", folder)
        outputs = {"rgb": flat}
    counts = {name: len(files) for name, files in outputs.items() if name != "input"}
    if not counts:
        raise BadInput("only input views, no rendered frames", folder)
    if len(set(counts.values())) > 1:
        raise BadInput(f"outputs have different numbers of frames: {counts}", folder)
    return outputs, next(iter(counts.values()))


def load_png(path) -> np.ndarray:
    """uint8 [H, W, 3] of a frame file."""
    try:
        return images.to_rgb(images.decode(path))
    except images.DECODE_ERRORS as error:
        raise BadInput(f"unreadable frame ({error})", path) from None
