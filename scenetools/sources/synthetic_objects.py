"""Single objects with part labels, like SRN's ShapeNet renders and semantic SRN's part-labelled
Chair/Table scenes: the CPU demo data for SRN and semantic SRN (``scene-convert --from
synthetic --kind objects``).

Each scene is one object, built from boxes, cylinders and ellipsoids, each primitive one part:

========  =============================================================================
category  parts (class names ``<category>_<part>``)
========  =============================================================================
chair     seat, back (tilted back a little), leg (4, boxes or round), arm (a third of chairs: a rail and a post each side)
table     top (rectangular or round), leg (4 legs, or for some round tops a pedestal and foot)
lamp      base, pole, shade (a drum or an ellipsoid)
car       body, cabin, wheel (4)
========  =============================================================================

Every size and proportion is drawn per object, and so are the colours (a palette per part
kind: wood, metal, fabric, paint). Objects are canonically oriented in a z-up world, like
ShapeNet's: chairs face -y, cars point along x. Each object is moved so that its bounding box
is centred at the origin and scaled so that the box's half-diagonal is ``OBJECT_RADIUS``
(ShapeNet normalises its models' bounding boxes the same way), so no surface lies farther
than 0.7 from the origin.

Cameras: every camera is ``CAMERA_DISTANCE`` = 2 from the origin and looks at it (no roll,
image up towards +z), at an elevation of 5 to 80 degrees, with SRN's field of view (f =
131.25 px at 128 px, about 52 degrees). Train objects have views at random directions,
uniform over that band of the sphere; val and test objects have theirs along a Fibonacci
spiral over the same band, the same for every object (evenly spread novel views). Surfaces
lie between 2 - 0.7 and 2 + 0.7 of every camera, inside the render range (1.25, 2.75),
SRN chairs' near/far.

Rendering is exact ray casting through pixel centres onto a white background (depth inf,
class 0), lit by a key and a fill light from fixed world directions plus ambient light
(Lambert, no shadows; at most full light, so no surface is as bright as the background),
so shape reads from every side. ``semantic`` holds each pixel's part
class (0 = background; names in the file attribute ``semantic_classes``: ``background`` then
the parts of each chosen category in the order above); ``instance`` numbers the primitives
(1 to P; each leg its own), so ``instance > 0`` is the object's mask.

Object ``i`` depends only on (seed, i, the categories chosen) and its views also on their
number: the object is drawn before its cameras.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import cameras

GENERATOR_VERSION = 1
CATEGORIES = ("chair", "table", "lamp", "car")
PARTS = {"chair": ("seat", "back", "leg", "arm"), "table": ("top", "leg"),
         "lamp": ("base", "pole", "shade"), "car": ("body", "cabin", "wheel")}
BOX, CYLINDER, ELLIPSOID = 0, 1, 2  # unit cube [-1, 1]^3, unit cylinder about z, unit sphere
OBJECT_RADIUS = 0.7
CAMERA_DISTANCE = 2.0
ELEVATION_DEGREES = (5.0, 80.0)
FOCAL_PER_PIXEL = 131.25 / 128  # SRN's intrinsics.txt: f = 131.25 px for 128 px images
RENDER_RANGE = (1.25, 2.75)  # SRN chairs' near/far; surfaces lie in [1.3, 2.7]
TRAIN_VIEWS, TEST_VIEWS = 50, 251  # SRN's cars_train and cars_test views per object
GOLDEN_ANGLE = math.pi * (3 - math.sqrt(5))
KEY_LIGHT = np.array([-0.4, -0.55, 0.75]) / np.linalg.norm([-0.4, -0.55, 0.75])  # towards the light
FILL_LIGHT = np.array([0.6, 0.5, 0.1]) / np.linalg.norm([0.6, 0.5, 0.1])
AMBIENT, KEY, FILL = 0.35, 0.6, 0.25
EPS = 1e-5
MAX_RAYS = 1 << 20  # rays cast per call: bounds the [primitives, rays] buffers
PALETTES = {
    "wood": [[0.55, 0.36, 0.20], [0.70, 0.50, 0.30], [0.40, 0.25, 0.13], [0.78, 0.62, 0.42]],
    "metal": [[0.35, 0.35, 0.38], [0.60, 0.60, 0.63], [0.18, 0.18, 0.20]],
    "fabric": [[0.70, 0.15, 0.15], [0.20, 0.35, 0.65], [0.25, 0.50, 0.30], [0.80, 0.70, 0.35],
               [0.50, 0.30, 0.55], [0.30, 0.30, 0.30]],
    "shade": [[0.85, 0.80, 0.62], [0.80, 0.55, 0.35], [0.45, 0.65, 0.55], [0.75, 0.72, 0.68]],
    "paint": [[0.68, 0.12, 0.12], [0.15, 0.30, 0.75], [0.12, 0.40, 0.10], [0.80, 0.75, 0.15],
              [0.50, 0.50, 0.52], [0.10, 0.10, 0.12], [0.16, 0.65, 0.65]],
    "glass": [[0.20, 0.25, 0.32]], "tyre": [[0.12, 0.12, 0.12]],
}


def class_names(categories) -> list:
    """``semantic_classes`` of a file of these categories: background, then their parts."""
    return ["background"] + [f"{c}_{p}" for c in categories for p in PARTS[c]]


@dataclass
class Parts:
    """One object as P primitives: primitive k is ``rotation[k] @ diag(half[k]) @ u +
    centre[k]`` for u in the unit shape ``kind[k]``."""

    category: str
    kind: np.ndarray  # [P] BOX, CYLINDER or ELLIPSOID
    centre: np.ndarray  # [P, 3]
    rotation: np.ndarray  # [P, 3, 3] primitive frame -> world
    half: np.ndarray  # [P, 3] half-extents (cylinders: x, y radii and half-height)
    part: np.ndarray  # [P] index into PARTS[category]
    albedo: np.ndarray  # [P, 3] in [0, 1]

    def __len__(self) -> int:
        return len(self.kind)


# ----------------------------------------------------------------------------- objects

def _rotation_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


class _Builder:
    """Collects primitives of one object; ``colour(palette)`` draws a jittered palette colour."""

    def __init__(self, category: str, rng: np.random.Generator):
        self.category, self.rng, self.prims = category, rng, []

    def colour(self, palette: str) -> np.ndarray:
        options = PALETTES[palette]
        base = np.array(options[self.rng.integers(len(options))])
        return np.clip(base + self.rng.uniform(-0.04, 0.04, 3), 0.02, 0.88)

    def add(self, part: str, kind: int, centre, half, albedo, rotation=None):
        rotation = np.eye(3) if rotation is None else rotation
        self.prims.append((kind, np.asarray(centre, float), rotation, np.asarray(half, float),
                           PARTS[self.category].index(part), albedo))

    def legs(self, part, half_x, half_y, inset, top, radius, colour):
        """Four legs from the floor to height ``top`` at (±(half_x - inset), ±(half_y - inset))."""
        kind = CYLINDER if self.rng.random() < 0.5 else BOX
        for sx in (-1, 1):
            for sy in (-1, 1):
                self.add(part, kind, [sx * (half_x - inset), sy * (half_y - inset), top / 2],
                         [radius, radius, top / 2], colour)

    def parts(self) -> Parts:
        kind, centre, rotation, half, part, albedo = (np.array(x) for x in zip(*self.prims))
        return _normalise(Parts(self.category, kind, centre, rotation, half, part, albedo))


def _chair(b: _Builder):
    u = b.rng.uniform
    hx, hy, thick, seat = u(0.2, 0.3), u(0.2, 0.28), u(0.02, 0.05), u(0.38, 0.55)
    frame = b.colour("wood" if b.rng.random() < 0.6 else "metal")
    cushion = frame if b.rng.random() < 0.35 else b.colour("fabric")
    b.add("seat", BOX, [0, 0, seat - thick], [hx, hy, thick], cushion)
    leg = u(0.02, 0.04)
    b.legs("leg", hx, hy, leg + u(0, 0.03), seat - 2 * thick, leg, frame)
    height, back_thick, tilt = u(0.35, 0.65), u(0.02, 0.05), math.radians(u(0, 15))
    tilted = _rotation_x(-tilt)  # the top leans back, towards +y
    base = np.array([0, hy - back_thick, seat])
    b.add("back", BOX, base + tilted @ [0, 0, height / 2], [hx, back_thick, height / 2], cushion, tilted)
    if b.rng.random() < 0.35:
        rail, arm = u(0.15, 0.25), u(0.015, 0.03)
        for sx in (-1, 1):
            x = sx * (hx - arm)
            b.add("arm", BOX, [x, 0, seat + rail], [arm, hy, arm], frame)
            b.add("arm", BOX, [x, -hy + arm, seat + rail / 2], [arm, arm, rail / 2], frame)


def _table(b: _Builder):
    u = b.rng.uniform
    height, thick = u(0.45, 0.75), u(0.02, 0.045)
    top, legs = b.colour("wood"), b.colour("wood" if b.rng.random() < 0.5 else "metal")
    if b.rng.random() < 0.6:
        hx, hy = u(0.3, 0.6), u(0.25, 0.45)
        b.add("top", BOX, [0, 0, height - thick], [hx, hy, thick], top)
        b.legs("leg", hx, hy, u(0.04, 0.08), height - 2 * thick, u(0.02, 0.04), legs)
        return
    radius = u(0.3, 0.5)
    b.add("top", CYLINDER, [0, 0, height - thick], [radius, radius, thick], top)
    if b.rng.random() < 0.5:
        inner = radius / math.sqrt(2)
        b.legs("leg", inner, inner, u(0.03, 0.08), height - 2 * thick, u(0.02, 0.04), legs)
        return
    stem, foot, foot_thick = u(0.03, 0.07), u(0.15, 0.3), u(0.015, 0.03)
    b.add("leg", CYLINDER, [0, 0, height / 2], [stem, stem, height / 2 - thick], legs)
    b.add("leg", CYLINDER, [0, 0, foot_thick], [foot, foot, foot_thick], legs)


def _lamp(b: _Builder):
    u = b.rng.uniform
    metal = b.colour("metal")
    base_h, base_r = u(0.015, 0.04), u(0.12, 0.22)
    kind = CYLINDER if b.rng.random() < 0.7 else BOX
    b.add("base", kind, [0, 0, base_h], [base_r, base_r, base_h], metal)
    pole_r, pole_h = u(0.012, 0.025), u(0.5, 1.0)
    b.add("pole", CYLINDER, [0, 0, 2 * base_h + pole_h / 2], [pole_r, pole_r, pole_h / 2], metal)
    shade_r, shade_h = u(0.12, 0.26), u(0.08, 0.16)
    kind = CYLINDER if b.rng.random() < 0.6 else ELLIPSOID
    b.add("shade", kind, [0, 0, 2 * base_h + pole_h], [shade_r, shade_r, shade_h], b.colour("shade"))


def _car(b: _Builder):
    u = b.rng.uniform
    length, width, body_h, wheel = u(0.4, 0.55), u(0.17, 0.24), u(0.06, 0.11), u(0.07, 0.11)
    paint = b.colour("paint")
    floor = 0.8 * wheel
    b.add("body", BOX, [0, 0, floor + body_h], [length, width, body_h], paint)
    cabin_l, cabin_h = length * u(0.4, 0.65), u(0.06, 0.11)
    shift = length * u(-0.25, 0.1)
    b.add("cabin", BOX, [shift, 0, floor + 2 * body_h + cabin_h], [cabin_l, 0.9 * width, cabin_h], b.colour("glass"))
    tyre, axle = b.colour("tyre"), _rotation_x(math.pi / 2)  # cylinder axis along y
    half_width, wheelbase = u(0.025, 0.045), length * u(0.6, 0.75)
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.add("wheel", CYLINDER, [sx * wheelbase, sy * (width - half_width * 0.5), wheel],
                  [wheel, wheel, half_width], tyre, axle)


BUILDERS = {"chair": _chair, "table": _table, "lamp": _lamp, "car": _car}


def _normalise(parts: Parts) -> Parts:
    """Centre the object's bounding box at the origin and scale its half-diagonal to OBJECT_RADIUS."""
    reach = np.einsum("pij,pj->pi", np.abs(parts.rotation), parts.half)  # per-primitive box half-size
    low, high = (parts.centre - reach).min(0), (parts.centre + reach).max(0)
    scale = OBJECT_RADIUS / np.linalg.norm((high - low) / 2)
    parts.centre = (parts.centre - (low + high) / 2) * scale
    parts.half = parts.half * scale
    return parts


def sample_object(seed: int, index: int, num_views: int, size: int, categories=CATEGORIES, spiral: bool = False):
    """Object ``index`` and its cameras: (Parts, c2w [V, 4, 4], K [V, 3, 3]). Categories take
    turns by index; ``spiral`` puts the cameras on the test spiral instead of at random."""
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    category = categories[index % len(categories)]
    builder = _Builder(category, rng)
    BUILDERS[category](builder)
    parts = builder.parts()
    low, high = np.sin(np.radians(ELEVATION_DEGREES))
    if spiral:  # area-uniform heights, golden-angle azimuths
        z = low + (high - low) * (np.arange(num_views) + 0.5) / num_views
        azimuth = GOLDEN_ANGLE * np.arange(num_views)
    else:
        z, azimuth = rng.uniform(low, high, num_views), rng.uniform(0, 2 * math.pi, num_views)
    ring = np.sqrt(1 - z * z)
    eyes = CAMERA_DISTANCE * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], -1)
    c2w = cameras.look_at(eyes, np.zeros(3))
    focal = FOCAL_PER_PIXEL * size
    K = np.broadcast_to(cameras.intrinsics(focal, focal, size / 2, size / 2), (num_views, 3, 3)).copy()
    return parts, c2w, K


# ----------------------------------------------------------------------------- ray casting
# Each _hit_* takes M rays in a primitive's unit frame (u = diag(1/half) R^T (x - centre)):
# origins o and directions d [M, 3], d not unit, so t is the same along the world ray. It
# returns t [M] (inf for a miss) and the unit-frame normal [M, 3] (not normalised).

def _hit_box(o, d):
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (-1 - o) * inv, (1 - o) * inv
    t_near, axis = torch.minimum(t1, t2).max(-1)
    t_far = torch.maximum(t1, t2).min(-1).values
    t = torch.where((t_far >= t_near) & (t_near > EPS), t_near, torch.inf)
    return t, torch.zeros_like(d).scatter_(-1, axis[..., None], 1.0) * -torch.sign(d)


def _hit_cylinder(o, d):
    a = d[..., 0] ** 2 + d[..., 1] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1]
    disc = b * b - a * (o[..., 0] ** 2 + o[..., 1] ** 2 - 1)
    t_side = (-b - torch.sqrt(disc.clamp_min(0))) / a.clamp_min(1e-12)
    t_side = torch.where((disc > 0) & (t_side > EPS) & ((o[..., 2] + t_side * d[..., 2]).abs() <= 1), t_side, torch.inf)
    dz = torch.where(d[..., 2].abs() < 1e-12, torch.full_like(a, 1e-12), d[..., 2])
    cap_z = torch.where(dz < 0, 1.0, -1.0)  # the cap facing the ray
    t_cap = (cap_z - o[..., 2]) / dz
    xy = o[..., :2] + t_cap[..., None] * d[..., :2]
    t_cap = torch.where((t_cap > EPS) & ((xy * xy).sum(-1) <= 1), t_cap, torch.inf)
    t = torch.minimum(t_side, t_cap)
    point = o + t[..., None].nan_to_num(0, 0, 0) * d
    side = torch.stack([point[..., 0], point[..., 1], torch.zeros_like(t)], -1)
    cap = torch.stack([torch.zeros_like(t), torch.zeros_like(t), cap_z], -1)
    return t, torch.where((t_side <= t_cap)[..., None], side, cap)


def _hit_ellipsoid(o, d):
    a, b = (d * d).sum(-1), (o * d).sum(-1)
    disc = b * b - a * ((o * o).sum(-1) - 1)
    t = (-b - torch.sqrt(disc.clamp_min(0))) / a
    t = torch.where((disc > 0) & (t > EPS), t, torch.inf)
    return t, o + t[..., None].nan_to_num(0, 0, 0) * d


_HIT = {BOX: _hit_box, CYLINDER: _hit_cylinder, ELLIPSOID: _hit_ellipsoid}


UNIT_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)


def _candidates(parts: Parts, c2w, K, height: int, width: int):
    """(view, primitive, ray) index triples of the rays that may hit each primitive: the pixels
    whose centre lies in the bounding rectangle of the projected corners of the primitive's
    box (which holds every kind of primitive; every primitive is in front of every camera)."""
    corners = parts.centre[:, None] + np.einsum("pij,pj,cj->pci", parts.rotation, parts.half, UNIT_CORNERS)
    camera = np.einsum("vji,vpcj->vpci", c2w[:, :3, :3], corners[None] - c2w[:, None, None, :3, 3])
    uv = np.einsum("vij,vpcj->vpci", K, camera)
    uv = torch.as_tensor(uv[..., :2] / uv[..., 2:], dtype=torch.float32)  # [V, P, 8, 2]
    low, high = uv.min(2).values, uv.max(2).values
    u, v = torch.arange(width) + 0.5, torch.arange(height) + 0.5
    in_u = (u >= low[..., 0, None]) & (u <= high[..., 0, None])  # [V, P, W]
    in_v = (v >= low[..., 1, None]) & (v <= high[..., 1, None])  # [V, P, H]
    view, prim, row, col = torch.nonzero(in_v[..., :, None] & in_u[..., None, :], as_tuple=True)
    return view, prim, row * width + col


def _cast(c2w, K, dirs, parts: Parts, height: int, width: int):
    """Nearest primitive hit of every ray of V cameras (c2w [V, 4, 4], K [V, 3, 3], unit ray
    directions ``dirs`` [V, R, 3]): t [V, R] (inf = background), primitive index [V, R] and
    unit world normals [V, R, 3]. Only rays near a primitive's image are intersected."""
    centre = torch.as_tensor(parts.centre, dtype=torch.float32)
    half = torch.as_tensor(parts.half, dtype=torch.float32)
    rotation = torch.as_tensor(parts.rotation, dtype=torch.float32)
    to_unit = rotation.transpose(1, 2) / half[:, :, None]  # [P, 3, 3]: diag(1/half) R^T
    eyes = torch.as_tensor(c2w[:, :3, 3], dtype=torch.float32)
    origins = torch.einsum("pij,vpj->vpi", to_unit, eyes[:, None] - centre)  # [V, P, 3] in unit frames
    view, prim, ray = _candidates(parts, c2w, K, height, width)
    t_all = torch.full((len(c2w), len(parts), dirs.shape[1]), torch.inf)
    normals = torch.zeros(len(prim), 3)
    kinds = torch.as_tensor(parts.kind)[prim]
    for kind, hit in _HIT.items():
        sel = torch.nonzero(kinds == kind, as_tuple=True)[0]
        if not len(sel):
            continue
        v, p, r = view[sel], prim[sel], ray[sel]
        t, n = hit(origins[v, p], torch.bmm(to_unit[p], dirs[v, r][:, :, None])[:, :, 0])
        t_all[v, p, r] = t
        normals[sel] = torch.bmm(rotation[p], (n / half[p])[:, :, None])[:, :, 0]  # R diag(1/half) n
    t, index = t_all.min(1)
    won = index[view, ray] == prim
    normal = torch.zeros(dirs.shape)
    normal[view[won], ray[won]] = torch.nn.functional.normalize(normals[won], dim=-1)
    return t, index, normal


def render(parts: Parts, c2w: np.ndarray, K: np.ndarray, height: int, width: int):
    """Render one object from V cameras (c2w [V, 4, 4], K [V, 3, 3]): rgb uint8 [V, H, W, 3]
    on white, depth float32 [V, H, W] (distance along the ray, inf off the object) and the
    primitive hit, int64 [V, H, W] (-1 off the object)."""
    chunk = max(1, MAX_RAYS // (height * width))
    threads = torch.get_num_threads()
    # One thread: the tensors are small, and on a busy machine torch's threads wait for each
    # other (measured 14x slower with 2 threads on 2 loaded cores). --workers parallelises.
    torch.set_num_threads(1)
    try:
        pieces = [_render_views(parts, c2w[i:i + chunk], K[i:i + chunk], height, width)
                  for i in range(0, len(c2w), chunk)]
    finally:
        torch.set_num_threads(threads)
    return tuple(np.concatenate(arrays) for arrays in zip(*pieces))


def _render_views(parts: Parts, c2w: np.ndarray, K: np.ndarray, height: int, width: int):
    V = len(c2w)
    dirs = torch.as_tensor(cameras.ray_directions(K, c2w, height, width), dtype=torch.float32).reshape(V, -1, 3)
    depth, index, normal = _cast(c2w, K, dirs, parts, height, width)
    hit = torch.isfinite(depth)
    light = AMBIENT + sum(w * (normal @ torch.as_tensor(l, dtype=torch.float32)).clamp_min(0)
                          for w, l in ((KEY, KEY_LIGHT), (FILL, FILL_LIGHT))).clamp(max=1)
    albedo = torch.as_tensor(parts.albedo, dtype=torch.float32)[index]
    color = torch.where(hit[..., None], albedo * light[..., None], torch.ones(3))
    rgb = (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).reshape(V, height, width, 3).numpy()
    index = torch.where(hit, index, -1).reshape(V, height, width).numpy()
    return rgb, depth.reshape(V, height, width).numpy(), index


def labels(parts: Parts, primitive: np.ndarray, categories) -> tuple:
    """(semantic, instance) uint8 [V, H, W] of a render's primitive indices: the part's class
    id in ``class_names(categories)`` (0 = background) and the primitive number (0 = none)."""
    offset = 1 + sum(len(PARTS[c]) for c in categories[:categories.index(parts.category)])
    class_of = np.concatenate([[0], offset + parts.part]).astype(np.uint8)
    return class_of[primitive + 1], (primitive + 1).astype(np.uint8)


# ----------------------------------------------------------------------------- source

class ObjectsSource:
    """The ``--kind objects`` scenes of :class:`scenetools.sources.synthetic.SyntheticSource`:
    scene i is object i, split 80/10/10 by index like the other kind."""

    batch_size = 4

    def __init__(self, scenes: int, views: int | None, test_views: int | None, size: int, seed: int,
                 categories=None):
        categories = tuple(categories or CATEGORIES)
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown or not categories or len(set(categories)) < len(categories):
            raise ValueError(f"--categories: give some of {', '.join(CATEGORIES)}, each once")
        self.scenes, self.size, self.seed, self.categories = scenes, size, seed, categories
        self.views, self.test_views = views or TRAIN_VIEWS, test_views or TEST_VIEWS

    def source_info(self) -> dict:
        return {"generator": "scenetools.synthetic", "kind": "objects", "generator_version": GENERATOR_VERSION,
                "seed": self.seed, "scenes": self.scenes, "views": self.views, "test_views": self.test_views,
                "size": self.size, "categories": list(self.categories)}

    def load(self, ref, split: str):
        """The Scene fields of object ``ref.key``: train views at random, others on the spiral."""
        train = split == "train"
        parts, c2w, K = sample_object(self.seed, ref.key, self.views if train else self.test_views, self.size,
                                      self.categories, spiral=not train)
        rgb, depth, primitive = render(parts, c2w, K, self.size, self.size)
        semantic, instance = labels(parts, primitive, self.categories)
        return dict(rgb=rgb, camera_to_world=c2w, intrinsics=K, depth=depth, instance=instance,
                    semantic=semantic, near_far=RENDER_RANGE, category=parts.category)


def white(c2w: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """The background of every view of an objects file, rgb uint8 [V, H, W, 3]: white."""
    return np.full((len(c2w), height, width, 3), 255, np.uint8)
