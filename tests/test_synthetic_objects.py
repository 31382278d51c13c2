import math

import numpy as np
import pytest

from conftest import assert_bad_input, run_command
from scenetools.cli import convert as convert_cli
from scenetools.convert import convert
from scenetools.scenefile import SceneFile
from scenetools.sources import synthetic_objects as objects
from scenetools.sources.synthetic import SyntheticSource, baselines

SIZE = 32


def source(scenes=10, seed=4, **options):
    options = {"views": 4, "test_views": 6, **options}
    return SyntheticSource(scenes=scenes, size=SIZE, seed=seed, kind="objects", **options)


# Written out here from the definition of a primitive (rotation @ diag(half) @ u + centre for u
# in the unit cube, unit cylinder about z or unit sphere), independently of the renderer.

def signed_distance(points, parts, k):
    """Signed distance (exact for boxes and cylinders of round section, sign-exact for
    ellipsoids) from world points [N, 3] to primitive k."""
    local = (points - parts.centre[k]) @ parts.rotation[k]  # into the primitive's axes
    half = parts.half[k]
    if parts.kind[k] == objects.BOX:
        q = np.abs(local) - half
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
    if parts.kind[k] == objects.CYLINDER:
        q = np.stack([np.linalg.norm(local[:, :2], axis=-1) - half[0], np.abs(local[:, 2]) - half[2]], -1)
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
    return (np.linalg.norm(local / half, axis=-1) - 1) * half.min()


def nearest_distance(points, parts):
    return np.min([signed_distance(points, parts, k) for k in range(len(parts))], axis=0)


def hand_rays(K, c2w, rows, columns):
    """Unit world rays through the centres of pixels (rows, columns) of one camera, by hand."""
    x = (columns + 0.5 - K[0, 2]) / K[0, 0]
    y = (rows + 0.5 - K[1, 2]) / K[1, 1]
    camera = np.stack([x, y, np.ones_like(x)], -1)  # OpenCV axes: x right, y down, z forward
    world = camera @ c2w[:3, :3].T
    return world / np.linalg.norm(world, axis=-1, keepdims=True)


def test_labels_depth_and_colour_agree_with_the_geometry():
    src = source(scenes=8)
    classes = src.info.attrs["semantic_classes"]
    checked = 0
    for ref, scene in zip(src.scan(), src.load(src.scan())):
        views = 4 if ref.split == "train" else 6
        parts, c2w, K = objects.sample_object(4, ref.key, views, SIZE, spiral=ref.split != "train")
        np.testing.assert_array_equal(scene.camera_to_world, c2w)
        rows, columns = np.mgrid[0:SIZE, 0:SIZE].reshape(2, -1)
        for v in range(views):
            dirs = hand_rays(K[v], c2w[v], rows, columns)
            depth, ids = scene.depth[v].reshape(-1), scene.instance[v].reshape(-1).astype(int)
            semantic, rgb = scene.semantic[v].reshape(-1), scene.rgb[v].reshape(-1, 3)
            on = ids > 0
            # An object pixel's depth lands on the surface of its primitive, of its part's class ...
            points = c2w[v, :3, 3] + depth[on, None] * dirs[on]
            for k in range(len(parts)):
                mine = ids[on] == k + 1
                assert np.abs(signed_distance(points[mine], parts, k)).max(initial=0) < 1e-3
                name = f"{parts.category}_{objects.PARTS[parts.category][parts.part[k]]}"
                assert (semantic[on][mine] == classes.index(name)).all()
            # ... and nothing lies in front of it on the ray.
            for fraction in np.linspace(0.3, 0.995, 25):
                before = c2w[v, :3, 3] + fraction * depth[on, None] * dirs[on]
                assert nearest_distance(before, parts).min() > -1e-3
            # A background pixel's ray misses every primitive: white, class 0, depth inf.
            assert (semantic[~on] == 0).all() and np.isinf(depth[~on]).all() and (rgb[~on] == 255).all()
            for t in np.linspace(1.2, 2.8, 97):
                assert nearest_distance(c2w[v, :3, 3] + t * dirs[~on], parts).min() > -1e-3
            assert (semantic[on] > 0).all() and (rgb[on] < 250).any(-1).all()
            checked += on.sum()
    assert checked > 2000


def test_a_ray_intersected_by_hand_with_a_table_top():
    index = next(i for i in range(1, 40, 4) if objects.sample_object(0, i, 1, SIZE)[0].kind[0] == objects.BOX)
    parts, c2w, K = objects.sample_object(0, index, 40, SIZE, spiral=True)
    assert parts.category == "table" and objects.PARTS["table"][parts.part[0]] == "top"
    top = parts.centre[0, 2] + parts.half[0, 2]  # the upper face of the (axis-aligned) top
    view = int(np.argmax(c2w[:, 2, 3]))  # the highest camera looks down onto the top
    ray = hand_rays(K[view], c2w[view], np.array([SIZE // 2]), np.array([SIZE // 2]))[0]
    eye = c2w[view, :3, 3]
    t = (top - eye[2]) / ray[2]
    hit = eye + t * ray
    assert (np.abs(hit[:2] - parts.centre[0, :2]) < parts.half[0, :2]).all()
    rgb, depth, primitive = objects.render(parts, c2w[view:view + 1], K[view:view + 1], SIZE, SIZE)
    semantic, instance = objects.labels(parts, primitive, objects.CATEGORIES)
    assert depth[0, SIZE // 2, SIZE // 2] == pytest.approx(t, abs=1e-4)
    assert instance[0, SIZE // 2, SIZE // 2] == 1
    assert objects.class_names(objects.CATEGORIES)[semantic[0, SIZE // 2, SIZE // 2]] == "table_top"


def test_cameras_at_the_fixed_distance_look_at_the_origin():
    src = source(scenes=10)
    test_cameras = []
    for ref in src.scan():
        scene = src.load([ref])[0]
        c2w = scene.camera_to_world
        centres = c2w[:, :3, 3]
        distance = np.linalg.norm(centres, axis=-1)
        np.testing.assert_allclose(distance, objects.CAMERA_DISTANCE, rtol=1e-12)
        np.testing.assert_allclose(c2w[:, :3, 2], -centres / distance[:, None], atol=1e-12)  # looking at the origin
        np.testing.assert_allclose(c2w[:, 2, 0], 0, atol=1e-12)  # no roll
        assert (c2w[:, :3, 1] @ [0, 0, 1] < 0).all()  # image down is world down: upright
        elevation = np.degrees(np.arcsin(centres[:, 2] / distance))
        low, high = objects.ELEVATION_DEGREES
        assert ((elevation >= low) & (elevation <= high)).all()
        assert len(c2w) == (4 if ref.split == "train" else 6)
        K = scene.intrinsics[0]
        assert K[0, 0] == pytest.approx(131.25 / 128 * SIZE) and K[0, 2] == SIZE / 2
        depth = scene.depth[np.isfinite(scene.depth)]
        near, far = src.info.render_range
        assert near < depth.min() and depth.max() < far and scene.near_far == (near, far)
        if ref.split != "train":
            test_cameras.append(c2w)
    np.testing.assert_array_equal(test_cameras[0], test_cameras[-1])  # one spiral for every test object
    # Random train directions cover the band: many views of one object.
    centres = objects.sample_object(4, 0, 400, SIZE)[1][:, :3, 3]
    elevation = np.degrees(np.arcsin(centres[:, 2] / objects.CAMERA_DISTANCE))
    assert elevation.min() < 10 and elevation.max() > 70
    assert np.ptp(np.arctan2(centres[:, 1], centres[:, 0])) > 1.9 * math.pi


def test_same_seed_same_file_other_seed_differs(tmp_path):
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        convert(source(scenes=6, seed=seed), tmp_path / f"{name}.h5", codec="raw")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    a, c = SceneFile(tmp_path / "a.h5"), SceneFile(tmp_path / "c.h5")
    assert not np.array_equal(a.read_views(0)["rgb"], c.read_views(0)["rgb"])
    # An object depends only on (seed, index): not on its batch nor on its number of views.
    src = source(scenes=12)
    refs = src.scan()
    np.testing.assert_array_equal(src.load(refs[5:6])[0].semantic, src.load(refs[2:8])[3].semantic)
    few, many = objects.sample_object(5, 3, 2, SIZE)[0], objects.sample_object(5, 3, 9, SIZE)[0]
    for field in ("kind", "centre", "rotation", "half", "part", "albedo"):
        np.testing.assert_array_equal(getattr(few, field), getattr(many, field))


def describe(parts):
    return np.concatenate([parts.centre.ravel(), parts.half.ravel(), parts.albedo.ravel()])


def test_splits_hold_different_objects_of_every_category():
    src = source(scenes=40)
    refs = src.scan()
    assert {r.split for r in refs} == {"train", "val", "test"}
    assert len({r.name for r in refs}) == 40
    scenes = src.load([r for r in refs if r.split != "train"] + refs[:8])
    shapes = [describe(objects.sample_object(4, r.key, 1, SIZE)[0]) for r in refs]
    for i in range(len(refs)):
        for j in range(i):
            assert len(shapes[i]) != len(shapes[j]) or not np.allclose(shapes[i], shapes[j], atol=0.01)
    # Each held-out object differs from every train object in what the views show: its mask
    # from the test spiral is not the mask of any train object seen from the same cameras.
    held = [s for s in scenes if s.split != "train"]
    for scene in held:
        for ref in refs[:32]:
            parts, _, _ = objects.sample_object(4, ref.key, 1, SIZE)
            _, _, primitive = objects.render(parts, scene.camera_to_world, scene.intrinsics, SIZE, SIZE)
            assert ((primitive >= 0) != (scene.instance > 0)).mean() > 0.005
    categories = [s.category for s in src.load(refs)]
    assert {c: categories.count(c) for c in objects.CATEGORIES} == {c: 10 for c in objects.CATEGORIES}


def test_categories_option_and_file_attributes(tmp_path):
    out = tmp_path / "chairs.h5"
    with pytest.raises(SystemExit) as done:
        convert_cli.main(["--from", "synthetic", "--kind", "objects", str(out), "--scenes", "4", "--views", "2",
                          "--test-views", "3", "--size", "16", "--categories", "chair,car", "-q"])
    assert done.value.code == 0
    scenes = SceneFile(out)
    assert scenes.source == "synthetic:objects" and scenes.world_up == pytest.approx([0, 0, 1])
    assert scenes.semantic_classes == ["background", "chair_seat", "chair_back", "chair_leg", "chair_arm",
                                       "car_body", "car_cabin", "car_wheel"]
    assert list(scenes.categories) == ["chair", "car", "chair", "car"]
    assert scenes.view_count.tolist() == [2, 2, 3, 3]
    assert scenes.source_info["kind"] == "objects" and scenes.source_info["categories"] == ["chair", "car"]
    assert set(scenes.fields) == {"depth", "instance", "semantic"}
    car = scenes.read_views(1, fields=("camera_to_world", "intrinsics", "semantic"))
    assert set(np.unique(car["semantic"])) <= {0, 5, 6, 7} and (car["semantic"] == 7).any()  # wheels
    white = baselines(scenes)["background"](car["camera_to_world"], car["intrinsics"], 16, 16)
    assert (white == 255).all() and white.shape == (2, 16, 16, 3)


@pytest.mark.parametrize("args", [["--kind", "objects", "--categories", "chair,sofa"],
                                  ["--kind", "objects", "--generator-version", "3"],
                                  ["--test-views", "5"], ["--categories", "chair"]])
def test_bad_objects_options_are_usage_errors(tmp_path, args):
    out = tmp_path / "x.h5"
    result = run_command("convert", "--from", "synthetic", out, "--scenes", 2, *args)
    assert_bad_input(result, args[-2], out)
