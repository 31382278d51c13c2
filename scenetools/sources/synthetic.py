"""Procedural CLEVR-like scenes: the dataset every demo and test can rely on.

A z-up world with a ground plane at z = 0 and 2 to 6 spheres, cubes and cylinders standing
on it, lit by one directional light with hard shadows (Lambertian shading) under a sky
gradient with distance haze. Cameras sit on a ring around the z axis, one in each equal
sector of azimuth at a random angle inside it, and look at the origin. Rendering is exact
ray casting through pixel centres, vectorised in torch over whole batches of scenes, so
depth and instance masks are exact too.

Scene ``i`` of a file depends only on (seed, i): the same seed gives the same file, and
:func:`sample_scene` recreates any scene's objects. :func:`render` with no objects gives the
background-only image of the same cameras, the baseline a model must beat on object pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import cameras
from ..scenefile import Scene
from . import SceneRef, SourceInfo

#: Bump when anything below changes the rendered images; written to the file so the
#: background baseline is only recomputed for files it matches.
GENERATOR_VERSION = 2

SHAPES = ("sphere", "cube", "cylinder")
COLORS = np.array([  # CLEVR's palette
    [87, 87, 87], [173, 35, 35], [42, 75, 215], [29, 105, 20],
    [129, 74, 25], [129, 38, 192], [41, 208, 208], [255, 238, 51]]) / 255.0
GROUND_ALBEDO = np.array([0.62, 0.62, 0.60])
SKY_HORIZON, SKY_ZENITH = np.array([0.80, 0.85, 0.92]), np.array([0.42, 0.58, 0.85])
HAZE_DISTANCE = 45.0  # ground colour fades towards the horizon sky over about this distance
LIGHT_DIRECTION = np.array([-0.45, -0.35, 0.82]) / np.linalg.norm([-0.45, -0.35, 0.82])  # towards the light
AMBIENT = 0.35
RING_RADIUS = 10.0
RING_HEIGHT = (3.5, 6.0)  # per scene, so the horizon moves between scenes
HORIZONTAL_FOV_DEGREES = 40.0
OBJECT_SIZE = (0.5, 0.9)  # sphere/cylinder radius, cube half-edge
PLACEMENT_RANGE = 2.6  # object centres lie in [-r, r]^2
MAX_OBJECTS = 6
RENDER_RANGE = (0.5, 60.0)
EPS = 1e-4


@dataclass
class SceneObjects:
    """The objects of one scene, as arrays over K objects."""

    shape: np.ndarray  # [K] index into SHAPES
    color: np.ndarray  # [K] index into COLORS
    position: np.ndarray  # [K, 3] centre of the object (its base stands on z = 0)
    size: np.ndarray  # [K] radius or half-edge; every shape is 2 * size tall
    angle: np.ndarray  # [K] rotation about the vertical axis

    def __len__(self) -> int:
        return len(self.shape)


def sample_scene(seed: int, index: int, num_views: int, size: int):
    """Objects and cameras of scene ``index``: (SceneObjects, c2w [V, 4, 4], K [V, 3, 3])."""
    rng = np.random.default_rng([seed, index])
    count = int(rng.integers(2, MAX_OBJECTS + 1))
    shapes, colors = rng.integers(0, len(SHAPES), count), rng.integers(0, len(COLORS), count)
    sizes, angles = rng.uniform(*OBJECT_SIZE, count), rng.uniform(0, 0.5 * math.pi, count)
    footprint = np.where(shapes == SHAPES.index("cube"), sizes * math.sqrt(2), sizes)
    centres = []
    for k in range(count):  # rejection sampling: no two objects intersect
        for _ in range(200):
            xy = rng.uniform(-PLACEMENT_RANGE, PLACEMENT_RANGE, 2)
            if all(np.linalg.norm(xy - c) > footprint[k] + footprint[j] + 0.1 for j, c in enumerate(centres)):
                break
        else:  # no room left: keep the objects placed so far
            count = k
            break
        centres.append(xy)
    keep = slice(0, count)
    position = np.concatenate([np.array(centres).reshape(-1, 2), sizes[keep, None]], axis=1)
    objects = SceneObjects(shapes[keep], colors[keep], position, sizes[keep], angles[keep])

    phase, height = rng.uniform(0, 2 * math.pi), rng.uniform(*RING_HEIGHT)
    # Stratified azimuths: one camera per 360/V degree sector, at a random place inside it.
    # Evenly spaced cameras would only ever show a model V relative poses, and it would render
    # nothing sensible in between (an orbit video would lose the objects half of the time).
    azimuth = phase + 2 * math.pi * (np.arange(num_views) + rng.uniform(-0.5, 0.5, num_views)) / num_views
    eyes = np.stack([RING_RADIUS * np.cos(azimuth), RING_RADIUS * np.sin(azimuth), np.full(num_views, height)], -1)
    c2w = cameras.look_at(eyes, np.zeros(3))
    focal = cameras.focal_from_fov(math.radians(HORIZONTAL_FOV_DEGREES), size)
    K = np.broadcast_to(cameras.intrinsics(focal, focal, size / 2, size / 2), (num_views, 3, 3)).copy()
    return objects, c2w, K


# ----------------------------------------------------------------------------- ray casting
# Each intersect_* takes M rays in the object's local frame (object centre at the origin,
# rotated so the object is axis-aligned): origins o and unit directions d [M, 3] and
# sizes s [M]. It returns the distance t [M] (inf for a miss) and local normals [M, 3].

def _intersect_sphere(o, d, s):
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - s * s)
    t = -b - torch.sqrt(disc.clamp_min(0))
    t = torch.where((disc > 0) & (t > EPS), t, torch.inf)
    return t, (o + t[:, None].nan_to_num(0, 0, 0) * d) / s[:, None]


def _intersect_cube(o, d, s):
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (-s[:, None] - o) * inv, (s[:, None] - o) * inv
    t_near, axis = torch.minimum(t1, t2).max(-1)
    t_far = torch.maximum(t1, t2).min(-1).values
    t = torch.where((t_far >= t_near) & (t_near > EPS), t_near, torch.inf)
    normal = torch.zeros_like(o).scatter_(-1, axis[:, None], 1.0) * -torch.sign(d)
    return t, normal


def _intersect_cylinder(o, d, s):
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
    disc = b * b - a * (o[:, 0] ** 2 + o[:, 1] ** 2 - s * s)
    t_side = (-b - torch.sqrt(disc.clamp_min(0))) / a.clamp_min(1e-12)
    z_side = o[:, 2] + t_side * d[:, 2]
    t_side = torch.where((disc > 0) & (t_side > EPS) & (z_side.abs() <= s), t_side, torch.inf)
    dz = torch.where(d[:, 2].abs() < 1e-12, torch.full_like(a, 1e-12), d[:, 2])
    cap_z = torch.where(dz < 0, s, -s)  # the cap facing the ray
    t_cap = (cap_z - o[:, 2]) / dz
    xy = o[:, :2] + t_cap[:, None] * d[:, :2]
    t_cap = torch.where((t_cap > EPS) & ((xy * xy).sum(-1) <= s * s), t_cap, torch.inf)
    t = torch.minimum(t_side, t_cap)
    point = o + t[:, None].nan_to_num(0, 0, 0) * d
    side_normal = torch.stack([point[:, 0], point[:, 1], torch.zeros_like(t)], -1) / s[:, None]
    cap_normal = torch.stack([torch.zeros_like(t), torch.zeros_like(t), torch.sign(cap_z)], -1)
    return t, torch.where((t_side <= t_cap)[:, None], side_normal, cap_normal)


_INTERSECT = (_intersect_sphere, _intersect_cube, _intersect_cylinder)
#: Radius of each shape's bounding sphere, in units of its size.
_BOUNDING_RADIUS = torch.tensor([1.0, math.sqrt(3.0), math.sqrt(2.0)])


def _rotation_z(angle):
    """[M, 3, 3] rotations about the z axis (object local -> world)."""
    c, s, z, one = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle), torch.ones_like(angle)
    return torch.stack([c, -s, z, s, c, z, z, z, one], -1).reshape(-1, 3, 3)


def _cast(origins, dirs, objects):
    """Nearest object hit of every ray.

    origins, dirs: [S, R, 3]; objects: dict of padded tensors over [S, K] (shape -1 = none).
    Returns t [S, R] (inf = no object), object index [S, R] and world normals [S, R, 3].
    Only rays that pass through an object's bounding sphere are intersected exactly.
    """
    S, R, _ = dirs.shape
    centre, present = objects["position"], objects["shape"] >= 0
    radius = _BOUNDING_RADIUS[objects["shape"].clamp_min(0)] * objects["size"]
    # Ray-to-bounding-sphere test for all (scene, object, ray) at once, from dot products.
    c_dot_d = torch.bmm(centre, dirs.transpose(1, 2))  # [S, K, R]
    o_dot_c = torch.bmm(centre, origins.transpose(1, 2))
    o_dot_d = (origins * dirs).sum(-1)[:, None]
    b = o_dot_d - c_dot_d  # (o - c) . d
    oc2 = (origins * origins).sum(-1)[:, None] - 2 * o_dot_c + (centre * centre).sum(-1)[..., None]
    disc = b * b - oc2 + radius[..., None] ** 2
    candidate = (disc > 0) & (torch.sqrt(disc.clamp_min(0)) - b > 0) & present[..., None]
    s_idx, k_idx, r_idx = torch.nonzero(candidate, as_tuple=True)

    t_all = torch.full((S, objects["shape"].shape[1], R), torch.inf)
    normals = torch.zeros(len(s_idx), 3)
    t_hit = torch.full((len(s_idx),), torch.inf)
    shape = objects["shape"][s_idx, k_idx]
    for shape_id, intersect in enumerate(_INTERSECT):
        sel = torch.nonzero(shape == shape_id, as_tuple=True)[0]
        if not len(sel):
            continue
        s, k, r = s_idx[sel], k_idx[sel], r_idx[sel]
        rot = _rotation_z(objects["angle"][s, k])
        o_local = torch.bmm((origins[s, r] - centre[s, k])[:, None], rot)[:, 0]
        d_local = torch.bmm(dirs[s, r][:, None], rot)[:, 0]
        t, n_local = intersect(o_local, d_local, objects["size"][s, k])
        t_hit[sel] = t
        normals[sel] = torch.bmm(rot, n_local[:, :, None])[:, :, 0]
    t_all[s_idx, k_idx, r_idx] = t_hit
    t, index = t_all.min(1)
    # The normal of each ray's nearest hit: the candidate whose object won.
    won = index[s_idx, r_idx] == k_idx
    normal = torch.zeros(S, R, 3)
    normal[s_idx[won], r_idx[won]] = normals[won]
    return t, index, normal


def _pad_objects(scene_objects):
    """Stack per-scene SceneObjects into padded tensors [S, K, ...]."""
    S, K = len(scene_objects), max([len(o) for o in scene_objects] + [1])
    out = {"shape": torch.full((S, K), -1), "color": torch.zeros((S, K), dtype=torch.long),
           "position": torch.zeros((S, K, 3)), "size": torch.ones((S, K)), "angle": torch.zeros((S, K))}
    for i, o in enumerate(scene_objects):
        n = len(o)
        out["shape"][i, :n] = torch.as_tensor(o.shape)
        out["color"][i, :n] = torch.as_tensor(o.color)
        out["position"][i, :n] = torch.as_tensor(o.position, dtype=torch.float32)
        out["size"][i, :n] = torch.as_tensor(o.size, dtype=torch.float32)
        out["angle"][i, :n] = torch.as_tensor(o.angle, dtype=torch.float32)
    return out


def render(scene_objects, c2w: np.ndarray, K: np.ndarray, height: int, width: int):
    """Render a batch of scenes.

    scene_objects: list of S SceneObjects (or None entries for background only);
    c2w [S, V, 4, 4], K [S, V, 3, 3]. Returns rgb uint8 [S, V, H, W, 3], depth float32
    [S, V, H, W] (distance along the ray, inf for sky) and instance uint8 [S, V, H, W]
    (0 = ground or sky, k = object k-1).
    """
    S, V = c2w.shape[:2]
    empty = SceneObjects(*(np.zeros(0, int),) * 2, np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    objects = _pad_objects([o if o is not None else empty for o in scene_objects])
    dirs = torch.as_tensor(cameras.ray_directions(K, c2w, height, width), dtype=torch.float32).reshape(S, -1, 3)
    origins = torch.as_tensor(c2w[..., :3, 3], dtype=torch.float32)
    origins = origins[:, :, None].expand(S, V, height * width, 3).reshape(S, -1, 3)

    t_obj, index, normal = _cast(origins, dirs, objects)
    t_ground = torch.where(dirs[..., 2] < 0, -origins[..., 2] / dirs[..., 2].clamp(max=-1e-12), torch.inf)
    hit_object = t_obj < t_ground
    depth = torch.minimum(t_obj, t_ground)
    hit = torch.isfinite(depth)
    normal = torch.where(hit_object[..., None], normal, torch.tensor([0.0, 0.0, 1.0]))

    light = torch.as_tensor(LIGHT_DIRECTION, dtype=torch.float32)
    point = origins + depth.nan_to_num(0, 0, 0)[..., None] * dirs
    shadow_t, _, _ = _cast(point + 1e-3 * normal, light.expand_as(point), objects)
    lit = (normal @ light).clamp_min(0) * torch.isinf(shadow_t)
    object_albedo = torch.as_tensor(COLORS, dtype=torch.float32)[torch.gather(objects["color"], 1, index)]
    albedo = torch.where(hit_object[..., None], object_albedo, torch.as_tensor(GROUND_ALBEDO, dtype=torch.float32))
    color = albedo * (AMBIENT + (1 - AMBIENT) * lit)[..., None]

    up = dirs[..., 2].clamp_min(0)[..., None]
    horizon, zenith = (torch.as_tensor(c, dtype=torch.float32) for c in (SKY_HORIZON, SKY_ZENITH))
    sky = horizon + (zenith - horizon) * up.sqrt()
    haze = (1 - torch.exp(-depth.nan_to_num(0, 0, 0) / HAZE_DISTANCE))[..., None] * ~hit_object[..., None]
    color = torch.where(hit[..., None], color * (1 - haze) + horizon * haze, sky)

    rgb = (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).reshape(S, V, height, width, 3).numpy()
    instance = torch.where(hit_object, index + 1, 0).to(torch.uint8).reshape(S, V, height, width).numpy()
    return rgb, depth.reshape(S, V, height, width).numpy(), instance


def background(c2w: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Background-only rgb [V, H, W, 3] of one scene's cameras: ground, haze and sky with
    every object (and its shadow) removed."""
    rgb, _, _ = render([None], c2w[None], K[None], height, width)
    return rgb[0]


# ----------------------------------------------------------------------------- source

def split_of(index: int, num_scenes: int) -> str:
    """80/10/10 train/val/test by scene index (at least one val and test scene from 3 on)."""
    n_held = max(1, round(0.1 * num_scenes)) if num_scenes >= 3 else 0
    if index < num_scenes - 2 * n_held:
        return "train"
    return "val" if index < num_scenes - n_held else "test"


class SyntheticSource:
    """scene-convert --from synthetic: renders scenes instead of reading them."""

    batch_size = 16  # scenes rendered per vectorised call

    def __init__(self, scenes: int = 1000, views: int = 10, size: int = 64, seed: int = 0):
        if scenes < 1 or views < 1 or size < 8:
            raise ValueError("need --scenes >= 1, --views >= 1 and --size >= 8")
        self.scenes, self.views, self.size, self.seed = scenes, views, size, seed
        self.info = SourceInfo(
            source="synthetic", height=size, width=size, render_range=RENDER_RANGE,
            fields={"depth": "float32", "instance": "uint8"},
            attrs={"world_up": [0.0, 0.0, 1.0],
                   "source_info": {"generator": "scenetools.synthetic", "generator_version": GENERATOR_VERSION,
                                   "seed": seed, "scenes": scenes, "views": views, "size": size}})

    def scan(self) -> list:
        return [SceneRef(f"scene_{i:06d}", split_of(i, self.scenes), i) for i in range(self.scenes)]

    def load(self, refs: list) -> list:
        sampled = [sample_scene(self.seed, ref.key, self.views, self.size) for ref in refs]
        c2w = np.stack([s[1] for s in sampled])
        K = np.stack([s[2] for s in sampled])
        rgb, depth, instance = render([s[0] for s in sampled], c2w, K, self.size, self.size)
        return [Scene(name=ref.name, split=ref.split, rgb=rgb[i], camera_to_world=c2w[i], intrinsics=K[i],
                      depth=depth[i], instance=instance[i], near_far=RENDER_RANGE)
                for i, ref in enumerate(refs)]
