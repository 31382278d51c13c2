"""Frames to video: labelled side-by-side panels, encoded by the ffmpeg inside imageio-ffmpeg.

MP4 is h264 ``yuv420p`` with ``+faststart`` (plays everywhere); ``--gif`` makes a palette GIF.
Frames are streamed to ffmpeg one at a time, so memory does not grow with the video length.
"""
from __future__ import annotations

import subprocess

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageDraw

from .errors import BadInput

LABELS = {"input": "input view", "rgb": "render", "segmentation": "segmentation", "semantic": "classes",
          "depth": "depth", "slots": "slots"}
LABEL_HEIGHT = 16
MIN_HEIGHT = 256  # small renders are scaled up (nearest) to at least this height


def compose(images: dict, layout: list) -> np.ndarray:
    """One video frame: the panels of ``layout`` side by side, each under a label, scaled to a
    common height. ``images`` maps output name -> uint8 [H, W, 3]."""
    height = max(images[name].shape[0] for name in layout)
    factor = max(1, -(-MIN_HEIGHT // height))
    panels = []
    for name in layout:
        image = images[name]
        if image.shape[0] != height:  # e.g. an input view at another resolution
            width = round(image.shape[1] * height / image.shape[0])
            image = np.asarray(Image.fromarray(image).resize((width, height), Image.NEAREST))
        panels.append(image.repeat(factor, 0).repeat(factor, 1))
    canvas = np.concatenate(panels, axis=1)
    canvas = np.concatenate([np.full((LABEL_HEIGHT,) + canvas.shape[1:], 255, np.uint8), canvas], axis=0)
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    x = 0
    for name, panel in zip(layout, panels):
        draw.text((x + 4, 2), LABELS.get(name, name), fill=(0, 0, 0))
        x += panel.shape[1]
    return np.asarray(picture)


class VideoWriter:
    """Feed uint8 [H, W, 3] frames to ffmpeg; odd sizes are padded to even ones."""

    def __init__(self, path, fps: float = 30, gif: bool = False, crf: int = 18):
        self.path, self.fps, self.gif, self.crf = str(path), fps, gif, crf
        self.process, self.size = None, None

    def _start(self, height, width):
        self.size = (height, width)
        command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo",
                   "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(self.fps), "-i", "-",
                   "-vf" if not self.gif else "-filter_complex"]
        if self.gif:
            command += ["split[a][b];[a]palettegen[p];[b][p]paletteuse", "-loop", "0"]
        else:
            command += ["pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-crf", str(self.crf), "-movflags", "+faststart"]
        command.append(self.path)
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        if self.process is None:
            self._start(*frame.shape[:2])
        if frame.shape[:2] != self.size:
            raise BadInput(f"frame of size {frame.shape[1]}x{frame.shape[0]} in a video of "
                           f"{self.size[1]}x{self.size[0]}")
        self.process.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())

    def close(self) -> None:
        if self.process is None:
            raise BadInput("no frames to encode")
        self.process.stdin.close()
        error = self.process.stderr.read().decode(errors="replace")
        if self.process.wait() != 0:
            raise RuntimeError(f"ffmpeg failed: {' '.join(error.split())[:300]}")

    def abort(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
