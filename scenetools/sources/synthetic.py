"""Procedural CLEVR-like scenes: the dataset every demo and test can rely on.

A z-up world with a ground plane at z = 0 and 2 to 6 spheres, cubes and cylinders standing
on it, lit by one directional light with hard shadows (Lambertian shading) under a sky
gradient with distance haze. There is one camera in each equal sector of azimuth about the
z axis, at a random angle inside it, looking at the origin (z up, 40° horizontal field of
view). In generator version 3 (the default) every camera also has its own distance from the
origin, 5.8 to 12, and elevation, 10° to 40° above the horizon (so heights of 1.0 to 7.7):
the data covers the cameras of the ``rotate_and_closeup`` motion (6.2 to 6.6 from the
centre at 14° to 24°) as well as the old ring's, and the horizon sits at a different height
in every view. Version 2 put all the cameras of a scene on one ring, 10 from the z axis at
one height per scene (3.5 to 6); ``generator_version=2`` (``scene-convert
--generator-version 2``) still makes exactly those files.
Rendering is exact ray casting through pixel centres, vectorised in torch over whole
batches of scenes, so depth and instance masks are exact too.

Scene ``i`` of a file depends only on (seed, i) and the generator version: the same seed
gives the same file, and :func:`sample_scene` recreates any scene's objects and cameras
(both versions place the same objects and azimuths; only the cameras' distances and
heights differ). :func:`render` with no objects gives the background-only image of the same
cameras, the baseline a model must beat on object pixels.

The other kind, ``kind="objects"`` (``scene-convert --from synthetic --kind objects``), makes
single part-labelled objects like SRN's ShapeNet renders (chairs, tables, lamps, cars on
white, 50 random views per train object and 251 spiral views per val/test object, per-pixel
part classes in ``semantic``): see :mod:`scenetools.sources.synthetic_objects`. Its files say
``source_info["kind"] = "objects"``; the scenes above are unchanged by it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import cameras
from ..scenefile import Scene
from . import SceneRef, SourceInfo, synthetic_objects

#: Bump when anything below changes the rendered images; written to the file (as
#: ``source_info["generator_version"]``). Version 1 spaced the cameras evenly on the ring,
#: version 2 put one per azimuth sector at a random angle in it, version 3 gives each camera
#: its own distance and height.
GENERATOR_VERSION = 3
#: The versions :class:`SyntheticSource` can generate, each exactly as it always did.
GENERATOR_VERSIONS = (2, 3)
#: Versions whose images have the ground, sky, haze and light :func:`background` renders:
#: they differ only in where the cameras stand, so ``background`` of a file's cameras is
#: exact for any of them.
BACKGROUND_VERSIONS = (1, 2, 3)

KINDS = ("scenes", "objects")
SHAPES = ("sphere", "cube", "cylinder")
COLORS = np.array([  # CLEVR's palette
    [87, 87, 87], [173, 35, 35], [42, 75, 215], [29, 105, 20],
    [129, 74, 25], [129, 38, 192], [41, 208, 208], [255, 238, 51]]) / 255.0
GROUND_ALBEDO = np.array([0.62, 0.62, 0.60])
SKY_HORIZON, SKY_ZENITH = np.array([0.80, 0.85, 0.92]), np.array([0.42, 0.58, 0.85])
HAZE_DISTANCE = 45.0  # ground colour fades towards the horizon sky over about this distance
LIGHT_DIRECTION = np.array([-0.45, -0.35, 0.82]) / np.linalg.norm([-0.45, -0.35, 0.82])  # towards the light
AMBIENT = 0.35
# Version 3: per camera, uniform. Distances reach 0.4 below the 6.19 from the centre that
# rotate_and_closeup brings a version-2 camera (radius 10, height 3.5) to, and beyond the
# ring's 10.6 to 11.7; elevations (angle above the horizon, seen from the origin) reach
# below the motion's 14.3 to 23.6 degrees and above the ring's 19.3 to 31. No object surface lies farther than
# |(3.5 * sqrt(2), 1.8)| = 5.27 from the origin (a cube's top corner), so every camera stays
# more than RENDER_RANGE's near bound of 0.5 from every surface; at 5.8 at least 70% of the
# placement area is in view. The horizon is in view below 20 degrees (a third of the views).
CAMERA_DISTANCE = (5.8, 12.0)  # from the origin, the point every camera looks at
CAMERA_ELEVATION_DEGREES = (10.0, 40.0)  # heights 1.0 (5.8 at 10 degrees) to 7.7 (12 at 40)
# Version 2: one ring per scene.
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


def sample_scene(seed: int, index: int, num_views: int, size: int, generator_version: int = GENERATOR_VERSION):
    """Objects and cameras of scene ``index`` as ``generator_version`` makes them:
    (SceneObjects, c2w [V, 4, 4], K [V, 3, 3])."""
    if generator_version not in GENERATOR_VERSIONS:
        raise ValueError(f"generator version {generator_version} is not one of {GENERATOR_VERSIONS}")
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

    # Stratified azimuths: one camera per 360/V degree sector, at a random place inside it.
    # Evenly spaced cameras would only ever show a model V relative poses, and it would render
    # nothing sensible in between (an orbit video would lose the objects half of the time).
    # Both versions draw the phase, a ring height and the azimuths, so a scene has the same
    # objects and azimuths in both; version 3 then gives each camera its own distance and
    # elevation instead of the scene's ring.
    phase, ring_height = rng.uniform(0, 2 * math.pi), rng.uniform(*RING_HEIGHT)
    azimuth = phase + 2 * math.pi * (np.arange(num_views) + rng.uniform(-0.5, 0.5, num_views)) / num_views
    if generator_version == 2:  # one ring per scene
        radius, height = np.full(num_views, RING_RADIUS), np.full(num_views, ring_height)
    else:
        distance = rng.uniform(*CAMERA_DISTANCE, num_views)
        elevation = np.radians(rng.uniform(*CAMERA_ELEVATION_DEGREES, num_views))
        radius, height = distance * np.cos(elevation), distance * np.sin(elevation)
    eyes = np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), height], -1)
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
    # Ray-to-bounding-sphere test for all (scene, object, ray) at once, from dot products:
    # disc = b^2 - |o - c|^2 + radius^2 with b = (o - c) . d, the same float operations in
    # the same order as ever, but in place, [S, K, R] buffers being the bulk of the work.
    b = torch.bmm(centre, dirs.transpose(1, 2))  # c . d
    torch.sub((origins * dirs).sum(-1)[:, None], b, out=b)  # (o - c) . d
    oc2 = torch.bmm(centre, origins.transpose(1, 2)).mul_(2)  # 2 o . c
    torch.sub((origins * origins).sum(-1)[:, None], oc2, out=oc2).add_((centre * centre).sum(-1)[..., None])
    disc = (b * b).sub_(oc2).add_(radius[..., None] ** 2)
    # Candidates as flat indices (s * K + k) * R + r, in (s, k, r) order: rays through an
    # object's bounding sphere ...
    K = centre.shape[1]
    flat = torch.nonzero(((disc > 0) & present[..., None]).view(-1)).squeeze(1)
    # ... that is not wholly behind their origin: sqrt(disc) - b > 0, only on those few.
    flat = flat[torch.sqrt(disc.view(-1)[flat]) - b.view(-1)[flat] > 0]
    sk, r_idx = flat // R, flat % R  # (scene, object) and ray
    k_idx = sk % K
    sr = sk // K * R + r_idx  # (scene, ray)

    t_all = torch.full((S, K, R), torch.inf)
    normals = torch.zeros(len(flat), 3)
    t_hit = torch.full((len(flat),), torch.inf)
    shape = objects["shape"].reshape(-1)[sk]
    flat_origins, flat_dirs, flat_centres = origins.reshape(-1, 3), dirs.reshape(-1, 3), centre.reshape(-1, 3)
    for shape_id, intersect in enumerate(_INTERSECT):
        sel = torch.nonzero(shape == shape_id, as_tuple=True)[0]
        if not len(sel):
            continue
        obj, ray = sk[sel], sr[sel]
        rot = _rotation_z(objects["angle"].reshape(-1)[obj])
        o_local = torch.bmm((flat_origins[ray] - flat_centres[obj])[:, None], rot)[:, 0]
        d_local = torch.bmm(flat_dirs[ray][:, None], rot)[:, 0]
        t, n_local = intersect(o_local, d_local, objects["size"].reshape(-1)[obj])
        t_hit[sel] = t
        normals[sel] = torch.bmm(rot, n_local[:, :, None])[:, :, 0]
    t_all.view(-1)[flat] = t_hit
    t, index = t_all.min(1)
    # The normal of each ray's nearest hit: the candidate whose object won.
    won = index.view(-1)[sr] == k_idx
    normal = torch.zeros(S * R, 3)
    normal[sr[won]] = normals[won]
    normal = normal.view(S, R, 3)
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
    """scene-convert --from synthetic: renders scenes instead of reading them. ``kind``
    "scenes" (the default) makes the multi-object scenes above, "objects" single part-labelled
    objects (:mod:`scenetools.sources.synthetic_objects`; ``views`` then applies to train
    objects, ``test_views`` to val and test ones, and ``categories`` picks the categories)."""

    batch_size = 16  # scenes rendered per vectorised call

    def __init__(self, scenes: int = 1000, views: int | None = None, size: int = 64, seed: int = 0,
                 generator_version: int | None = None, kind: str = "scenes", test_views: int | None = None,
                 categories=None):
        if scenes < 1 or (views is not None and views < 1) or size < 8 or (test_views is not None and test_views < 1):
            raise ValueError("need --scenes >= 1, --views >= 1, --test-views >= 1 and --size >= 8")
        if kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}")
        self.kind, self.scenes, self.size, self.seed = kind, scenes, size, seed
        if kind == "objects":
            self._init_objects(views, test_views, categories, generator_version)
            return
        if test_views is not None or categories:
            raise ValueError("--test-views and --categories apply to --kind objects")
        generator_version = GENERATOR_VERSION if generator_version is None else generator_version
        if generator_version not in GENERATOR_VERSIONS:
            raise ValueError(f"--generator-version must be one of {', '.join(map(str, GENERATOR_VERSIONS))}")
        self.views = 10 if views is None else views
        self.generator_version = generator_version
        self.info = SourceInfo(
            source="synthetic", height=size, width=size, render_range=RENDER_RANGE,
            fields={"depth": "float32", "instance": "uint8"},
            attrs={"world_up": [0.0, 0.0, 1.0],
                   "source_info": {"generator": "scenetools.synthetic", "generator_version": generator_version,
                                   "seed": seed, "scenes": scenes, "views": self.views, "size": size}})

    def _init_objects(self, views, test_views, categories, generator_version):
        if generator_version not in (None, synthetic_objects.GENERATOR_VERSION):
            raise ValueError(f"--generator-version: --kind objects has version {synthetic_objects.GENERATOR_VERSION} only")
        self.objects = synthetic_objects.ObjectsSource(self.scenes, views, test_views, self.size, self.seed,
                                                       categories)
        self.batch_size = synthetic_objects.ObjectsSource.batch_size
        self.info = SourceInfo(
            source="synthetic:objects", height=self.size, width=self.size,
            render_range=synthetic_objects.RENDER_RANGE,
            fields={"depth": "float32", "instance": "uint8", "semantic": "uint8"},
            attrs={"world_up": [0.0, 0.0, 1.0],
                   "semantic_classes": synthetic_objects.class_names(self.objects.categories),
                   "source_info": self.objects.source_info()},
            views_per_scene=self.objects.views)

    def scan(self) -> list:
        return [SceneRef(f"{'object' if self.kind == 'objects' else 'scene'}_{i:06d}", split_of(i, self.scenes), i)
                for i in range(self.scenes)]

    def load(self, refs: list) -> list:
        if self.kind == "objects":
            return [Scene(name=ref.name, split=ref.split, **self.objects.load(ref, ref.split)) for ref in refs]
        sampled = [sample_scene(self.seed, ref.key, self.views, self.size, self.generator_version) for ref in refs]
        c2w = np.stack([s[1] for s in sampled])
        K = np.stack([s[2] for s in sampled])
        rgb, depth, instance = render([s[0] for s in sampled], c2w, K, self.size, self.size)
        return [Scene(name=ref.name, split=ref.split, rgb=rgb[i], camera_to_world=c2w[i], intrinsics=K[i],
                      depth=depth[i], instance=instance[i], near_far=RENDER_RANGE)
                for i, ref in enumerate(refs)]


def baselines(scenes) -> dict:
    """scene-eval's baselines for a synthetic file: the background-only render of the same
    cameras (ground, haze and sky without the objects; white for single objects), for the
    versions it is exact for."""
    if scenes.source_info.get("kind") == "objects":
        return {"background": synthetic_objects.white}
    version = scenes.source_info.get("generator_version")
    return {"background": background} if version in BACKGROUND_VERSIONS else {}
