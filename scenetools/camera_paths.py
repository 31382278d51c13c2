"""Camera paths for rendering: the reference motions, a spiral, and nerfstudio camera-path files.

A path is a list of (camera_to_world [4, 4], K [3, 3]) pairs in our conventions. Motions
start from a base camera (the scene's first input view) and move about the scene's centre
(the point its cameras look at) and up axis (the file's ``world_up``, else the cameras'
mean up), with distances relative to the base camera's distance from the centre, so they
work for any dataset, not just CLEVR's units.

Reference motions (stelzner/srt and stelzner/osrt ``render.py``), with t = frame / frames:

* ``rotate``: one orbit about the up axis, θ = 2πt.
* ``zoom``: camera fixed, focal length ×1 → ×5 (the sensor width 0.032 → 0.0064).
* ``closeup``: the camera moves in to 0.2 of its horizontal distance and 0.1 of its height
  (height eased out with -t²/2 + 3t/2) while the point it tracks moves from the centre to
  3× the way past it, on the ground plane through the centre.
* ``rotate_and_closeup``: closeup with lookup 1.5 at t_c = (1 - cos 2πt) / 4, then rotate by 2πt.
* ``eyeroll``: camera fixed, the tracked point circles the centre at 0.15 of the camera's
  distance (the reference's 1.5 in CLEVR, whose cameras sit about 10 away), θ = -2πt.
* ``spiral``: one orbit while the camera rises and sinks by a quarter of its height.

``fade`` eases in and out as the reference's ``apply_fade``: constant acceleration over the
first 20% of the path, constant speed, constant deceleration over the last 20%.
"""
from __future__ import annotations

import json
import math

import numpy as np

from . import cameras
from .errors import BadInput

MOTIONS = ("rotate", "zoom", "closeup", "rotate_and_closeup", "eyeroll", "spiral", "path")


def apply_fade(t: float, t_fade: float = 0.2) -> float:
    v_max = 1.0 / (1.0 - t_fade)
    acceleration = v_max / t_fade
    if t <= t_fade:
        return 0.5 * acceleration * t ** 2
    if t <= 1.0 - t_fade:
        return 0.5 * acceleration * t_fade ** 2 + v_max * (t - t_fade)
    return 1.0 - 0.5 * acceleration * (t - 1.0) ** 2


def easeout(t: float) -> float:
    return -0.5 * t ** 2 + 1.5 * t


class SceneFrame:
    """Where a scene is: its centre, up axis and a horizontal basis, from its cameras."""

    def __init__(self, scene_c2w: np.ndarray, world_up=None):
        self.center = cameras.look_at_center(scene_c2w)
        self.up = cameras.up_direction(scene_c2w, world_up)
        helper = np.array([1.0, 0.0, 0.0]) if abs(self.up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        self.e1 = helper - self.up * (helper @ self.up)
        self.e1 /= np.linalg.norm(self.e1)
        self.e2 = np.cross(self.up, self.e1)

    def split(self, point):
        """(horizontal offset from the centre [3], height above it) of a world point."""
        offset = np.asarray(point, np.float64) - self.center
        height = offset @ self.up
        return offset - height * self.up, height


def reorient(base_c2w: np.ndarray, frame: SceneFrame, eye, track) -> np.ndarray:
    """The base camera moved to ``eye`` and turned to look at ``track``, keeping the base
    camera's offset from a camera looking at the centre (as the reference turns its rays by
    inverse(new extrinsic) @ original extrinsic)."""
    look_base = cameras.look_at(base_c2w[:3, 3], frame.center, frame.up)
    look_new = cameras.look_at(eye, track, frame.up)
    c2w = np.eye(4)
    c2w[:3, :3] = look_new[:3, :3] @ look_base[:3, :3].T @ base_c2w[:3, :3]
    c2w[:3, 3] = eye
    return c2w


def closeup(base_c2w, frame: SceneFrame, t, closeup_factor=0.2, z_closeup=0.1, lookup=3.0) -> np.ndarray:
    horizontal, height = frame.split(base_c2w[:3, 3])
    final_track = horizontal * (1 - lookup)  # on the plane through the centre
    position = frame.center + horizontal * (1 + (closeup_factor - 1) * t) + frame.up * height * (
        1 + (z_closeup - 1) * easeout(t))
    track = frame.center + final_track * t
    return reorient(base_c2w, frame, position, track)


def motion_path(motion: str, base_c2w: np.ndarray, K: np.ndarray, frame: SceneFrame, num_frames: int,
                fade: bool = False) -> list:
    """[(c2w, K)] for ``num_frames`` frames of a motion from the base camera."""
    if motion not in MOTIONS or motion == "path":
        raise BadInput(f"unknown motion {motion!r} (known: {', '.join(MOTIONS)})")
    path = []
    for index in range(num_frames):
        t = index / num_frames
        t = apply_fade(t) if fade and motion != "zoom" else t
        c2w, K_frame = base_c2w, K
        if motion == "rotate":
            c2w = cameras.orbit(base_c2w, frame.center, frame.up, 2 * math.pi * t)
        elif motion == "zoom":
            scale = np.diag([1 + 4 * index / num_frames, 1 + 4 * index / num_frames, 1.0])
            K_frame = K.copy()
            K_frame[:2, :2] = (scale @ K)[:2, :2]
        elif motion == "closeup":
            c2w = closeup(base_c2w, frame, t)
        elif motion == "rotate_and_closeup":
            c2w = closeup(base_c2w, frame, 0.25 * (1 - math.cos(2 * math.pi * t)), lookup=1.5)
            c2w = cameras.orbit(c2w, frame.center, frame.up, 2 * math.pi * t)
        elif motion == "eyeroll":
            theta = -2 * math.pi * t
            radius = 0.15 * np.linalg.norm(base_c2w[:3, 3] - frame.center)
            track = frame.center + radius * (math.cos(theta) * frame.e1 + math.sin(theta) * frame.e2)
            c2w = reorient(base_c2w, frame, base_c2w[:3, 3], track)
        elif motion == "spiral":
            _, height = frame.split(base_c2w[:3, 3])
            lifted = base_c2w.copy()
            lifted[:3, 3] += frame.up * 0.25 * height * math.sin(2 * math.pi * t)
            lifted = reorient(base_c2w, frame, lifted[:3, 3], frame.center)
            c2w = cameras.orbit(lifted, frame.center, frame.up, 2 * math.pi * t)
        path.append((c2w, K_frame))
    return path


# ----------------------------------------------------------------------------- nerfstudio files

def save_camera_path(path: list, height: int, width: int, fps: float, destination) -> None:
    """Write a nerfstudio-compatible ``camera_path.json``: per frame the camera-to-world in
    OpenGL axes (16 numbers, row-major), the vertical field of view in degrees and the aspect.
    Our K must have square pixels and a centred principal point to be exact there, so it is
    also kept per frame under ``intrinsics`` (ignored by nerfstudio)."""
    frames = []
    for c2w, K in path:
        fov = math.degrees(2 * math.atan(0.5 * height / K[1, 1]))
        frames.append({"camera_to_world": cameras.opencv_to_opengl(c2w).reshape(-1).tolist(), "fov": fov,
                       "aspect": width / height, "intrinsics": np.asarray(K).tolist()})
    document = {"camera_type": "perspective", "render_height": height, "render_width": width,
                "seconds": len(path) / fps, "fps": fps, "camera_path": frames}
    with open(destination, "w") as f:
        json.dump(document, f, indent=1)


def load_camera_path(source, height: int | None = None, width: int | None = None) -> tuple:
    """(path [(c2w, K)], height, width) from a nerfstudio ``camera_path.json`` (or one we wrote)."""
    try:
        with open(source) as f:
            document = json.load(f)
        height = height or int(document["render_height"])
        width = width or int(document["render_width"])
        path = []
        for entry in document["camera_path"]:
            c2w = cameras.opengl_to_opencv(np.asarray(entry["camera_to_world"], np.float64).reshape(4, 4))
            if "intrinsics" in entry and (height, width) == (document["render_height"], document["render_width"]):
                K = np.asarray(entry["intrinsics"], np.float64)
            else:
                fy = 0.5 * height / math.tan(math.radians(float(entry["fov"])) / 2)
                K = cameras.intrinsics(fy, fy, width / 2, height / 2)
            path.append((c2w, K))
    except FileNotFoundError:
        raise BadInput("no such camera path file", source) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadInput(f"not a camera path JSON ({type(error).__name__}: {error})", source) from None
    if not path:
        raise BadInput("camera path has no frames", source)
    errors = cameras.rigid_transform_error(np.stack([c2w for c2w, _ in path]))
    if not np.all(errors < 1e-3):
        raise BadInput("camera path has a non-rigid or non-finite camera_to_world", source)
    return path, height, width
