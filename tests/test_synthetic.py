import h5py
import numpy as np
import pytest

from scenetools import cameras
from scenetools.convert import convert
from scenetools.scenefile import SceneFile
from scenetools.sources import synthetic
from scenetools.sources.synthetic import SHAPES, SyntheticSource, sample_scene


def signed_distance(point, objects, k):
    """Signed distance from world points [N, 3] to the surface of object k."""
    c, s, a = objects.position[k], objects.size[k], objects.angle[k]
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    p = (point - c) @ rot  # into the object's frame
    shape = SHAPES[objects.shape[k]]
    if shape == "sphere":
        return np.linalg.norm(p, axis=-1) - s
    if shape == "cube":
        q = np.abs(p) - s
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)
    radial = np.linalg.norm(p[:, :2], axis=-1) - s
    q = np.stack([radial, np.abs(p[:, 2]) - s], -1)
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def test_depth_agrees_with_instance_masks():
    source = SyntheticSource(scenes=6, views=4, size=32, seed=11)
    scenes = source.load(source.scan())
    checked = 0
    for index, scene in enumerate(scenes):
        objects, c2w, K = sample_scene(11, index, 4, 32)
        origin, dirs = cameras.camera_rays(K, c2w, 32, 32)
        points = origin[:, None, None] + scene.depth[..., None].astype(np.float64) * dirs
        ids = scene.instance.astype(int)
        assert ids.max() <= len(objects) and (ids > 0).mean() > 0.02
        for k in range(len(objects)):
            on = ids == k + 1
            distance = signed_distance(points[on], objects, k)
            assert np.abs(distance).max() < 1e-3, f"scene {index} object {k}"
            checked += on.sum()
        ground = (ids == 0) & np.isfinite(scene.depth)
        assert np.abs(points[ground][:, 2]).max() < 1e-3  # on the ground plane z = 0
        sky = ~np.isfinite(scene.depth)
        assert (dirs[sky][:, 2] >= 0).all()  # only rays above the horizon see the sky
    assert checked > 1000


def test_same_seed_same_file_and_other_seed_differs(tmp_path):
    for name, seed in [("a", 5), ("b", 5), ("c", 6)]:
        convert(SyntheticSource(scenes=5, views=3, size=16, seed=seed), tmp_path / f"{name}.h5", codec="raw")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "c.h5") as c:
        assert not np.array_equal(a["views/rgb"][:], c["views/rgb"][:])


def test_scenes_depend_only_on_seed_and_index():
    big = SyntheticSource(scenes=20, views=3, size=16, seed=1)
    refs = big.scan()
    alone = big.load(refs[7:8])[0]
    batched = big.load(refs[4:12])[3]
    np.testing.assert_array_equal(alone.rgb, batched.rgb)
    np.testing.assert_array_equal(alone.instance, batched.instance)


def test_background_render_only_lacks_objects_and_their_shadows():
    source = SyntheticSource(scenes=4, views=3, size=32, seed=2)
    for scene in source.load(source.scan()):
        bg = synthetic.background(scene.camera_to_world, scene.intrinsics, 32, 32).astype(int)
        rgb = scene.rgb.astype(int)
        free = scene.instance == 0
        assert (rgb[free] <= bg[free]).all()  # off the objects, only shadows differ: darker
        same = (rgb == bg).all(-1) & free
        assert same.sum() > 0.7 * free.sum()
        shadowed = free & ~same
        assert shadowed.any()  # every scene casts some shadow
        objects = scene.instance > 0
        assert np.abs(rgb[objects] - bg[objects]).sum(-1).mean() > 30


def test_cameras_ring_and_splits(synthetic_file):
    scenes = SceneFile(synthetic_file)
    assert {k: len(v) for k, v in scenes.splits().items()} == {"train": 10, "val": 1, "test": 1}
    data = scenes.read_views(0)
    centres = data["camera_to_world"][:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres[:, :2], axis=1), synthetic.RING_RADIUS, rtol=1e-5)
    assert np.ptp(centres[:, 2]) < 1e-5  # one ring height per scene
    forward = data["camera_to_world"][:, :3, 2]
    np.testing.assert_allclose(forward, -centres / np.linalg.norm(centres, axis=1, keepdims=True), atol=1e-5)
    assert scenes.source_info["seed"] == 3 and scenes.world_up == pytest.approx([0, 0, 1])


def test_generation_rejects_bad_settings():
    with pytest.raises(ValueError):
        SyntheticSource(scenes=0)
