"""Point clouds of rendered surfaces, as binary PLY files (``formats/pointcloud.md``).

The surface point of a ray is ``camera_pos + depth * ray`` (world frame; ``depth`` is the
distance along the unit ray), for the rays whose depth is finite and inside the scene's
render range. Each point keeps its rendered colour and, from a model that predicts
``semantic``, its predicted class (the argmax of the class scores).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from .atomic import atomic_output, remove
from .render import to_uint8


def surface_points(camera_pos, rays, out: dict, render_range) -> dict:
    """The surface points of R rays from one camera.

    ``camera_pos`` [3]; ``rays`` [R, 3] unit world-frame directions; ``out`` the rendered
    {"rgb": [R, 3] in [0, 1], "depth": [R], optionally "semantic": [R, C] class scores};
    ``render_range`` (near, far). Returns {"xyz": float32 [P, 3], "rgb": uint8 [P, 3] and,
    with ``semantic``, "label": [P] (uint8, uint16 above 256 classes)} for the P rays whose
    depth is finite and in [near, far], in ray order.
    """
    depth = out["depth"].double().numpy()
    near, far = render_range
    keep = np.isfinite(depth) & (depth >= near) & (depth <= far)
    xyz = np.asarray(camera_pos, np.float64) + depth[keep, None] * np.asarray(rays, np.float64)[keep]
    mask = torch.from_numpy(keep)
    cloud = {"xyz": xyz.astype(np.float32), "rgb": to_uint8(out["rgb"][mask])}
    if "semantic" in out:
        classes = out["semantic"].shape[-1]
        cloud["label"] = out["semantic"][mask].argmax(-1).numpy().astype(np.uint8 if classes <= 256 else np.uint16)
    return cloud


def merge(clouds: list) -> dict:
    """One cloud of all points of ``clouds`` (dicts of :func:`surface_points`), in order."""
    return {key: np.concatenate([cloud[key] for cloud in clouds]) for key in clouds[0]} if clouds else \
        {"xyz": np.zeros((0, 3), np.float32), "rgb": np.zeros((0, 3), np.uint8)}


#: PLY property types of the vertex fields
PLY_TYPES = {np.dtype(np.float32): "float", np.dtype(np.uint8): "uchar", np.dtype(np.uint16): "ushort"}


def write_ply(path, cloud: dict, comments=()) -> None:
    """Write ``cloud`` ({"xyz" float32 [P, 3], "rgb" uint8 [P, 3], optionally "label" [P]
    uint8 or uint16}) to ``path`` atomically as a binary little-endian PLY: one ``vertex``
    element with x y z (float), red green blue (uchar) and label (uchar or ushort), after
    one ``comment`` line per item of ``comments``."""
    columns = [(name, cloud["xyz"][:, i]) for i, name in enumerate("xyz")]
    columns += [(name, cloud["rgb"][:, i]) for i, name in enumerate(("red", "green", "blue"))]
    if "label" in cloud:
        columns.append(("label", cloud["label"]))
    layout = np.dtype([(name, values.dtype.newbyteorder("<")) for name, values in columns])  # packed
    vertices = np.empty(len(cloud["xyz"]), layout)
    for name, values in columns:
        vertices[name] = values
    header = ["ply", "format binary_little_endian 1.0"] + [f"comment {one_line(text)}" for text in comments]
    header += [f"element vertex {len(vertices)}"]
    header += [f"property {PLY_TYPES[values.dtype]} {name}" for name, values in columns] + ["end_header"]
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(vertices.tobytes())


def one_line(text) -> str:
    """``text`` as one line of printable ASCII, for a PLY header."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in " ".join(str(text).split()))


@contextlib.contextmanager
def ply_output(target, per_frame: bool, comments=()):
    """Yield ``add(frame, cloud)`` for each frame's :func:`surface_points`; written
    atomically to ``target``: a folder of ``00000.ply`` ... (``per_frame``), or, when the
    block ends without error, one PLY of every frame's points in order."""
    if per_frame:
        with atomic_output(target) as tmp:
            remove(tmp)  # left over from an interrupted run
            tmp.mkdir()
            yield lambda frame, cloud: write_ply(tmp / f"{frame:05d}.ply", cloud, [*comments, f"frame {frame}"])
        return
    clouds = []
    yield lambda frame, cloud: clouds.append(cloud)
    write_ply(target, merge(clouds), [*comments, f"frames 0 to {len(clouds) - 1}"])
