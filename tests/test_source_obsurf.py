import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import assert_bad_input, run_command
from fixtures.obsurf import DEPTH_SCALE, FOCAL_LENGTH, SENSOR_WIDTH, make_obsurf_dataset, reference_rays
from scenetools import cameras
from scenetools.errors import BadInput
from scenetools.scenefile import SceneFile
from scenetools.sources.obsurf import ObsurfSource

H, W = 240, 320


def convert_cli(root, out, *args):
    result = run_command("convert", "--from", "obsurf", root, out, *args)
    assert result.returncode == 0, result.stderr
    return SceneFile(out)


def reference_pixel(camera_pos, point):
    """Continuous (u, v) of a world point in ObSuRF's camera, from its own maths
    (get_world_to_camera_matrix + project_to_image_plane): the camera looks at the origin,
    x = view x z-up, y = view x x; image coordinates x/z * focal / sensor size lie in
    [-0.5, 0.5] across the sensor, which is 0.032 x 0.024."""
    camera_pos, point = np.asarray(camera_pos, np.float64), np.asarray(point, np.float64)
    z_axis = -camera_pos / np.linalg.norm(camera_pos)
    x_axis = np.cross(z_axis, [0.0, 0.0, 1.0])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(z_axis, x_axis)
    relative = point - camera_pos
    x, y, z = relative @ x_axis, relative @ y_axis, relative @ z_axis
    image_x = x / z * FOCAL_LENGTH / SENSOR_WIDTH
    image_y = y / z * FOCAL_LENGTH / (SENSOR_WIDTH * H / W)
    return np.array([(image_x + 0.5) * W, (image_y + 0.5) * H])


def test_clevr3d_pixels_masks_depth_cameras_and_splits(tmp_path):
    truth = make_obsurf_dataset(tmp_path / "clevr3d", 6)
    scenes = convert_cli(truth["root"], tmp_path / "out.h5")

    assert scenes.source == "obsurf:clevr3d"
    assert list(scenes.names) == ["0", "1", "70000", "70001", "85000", "85001"]
    assert list(scenes.split_of) == ["train", "train", "val", "val", "test", "test"]
    assert scenes.view_count.tolist() == [3] * 6 and (scenes.height, scenes.width) == (H, W)
    assert scenes.world_up == pytest.approx([0, 0, 1]) and scenes.render_range == pytest.approx([0.035, 35])
    assert scenes.fields == {"depth": "float32", "instance": "uint8"}
    assert scenes.source_info["split_ranges"]["val"] == [70000, 75000]

    K = np.array([[350.0, 0, 160], [0, 350, 120], [0, 0, 1]])
    for s, expected in enumerate(truth["scenes"]):
        scene = scenes.scene(s)
        assert scene.near_far == pytest.approx((0.035, 35.0))
        for view, p in enumerate(expected["pool"]):
            render = truth["pool"][p]
            np.testing.assert_array_equal(scene.rgb[view], render["rgba"][..., :3])  # alpha dropped, not composited
            np.testing.assert_array_equal(scene.instance[view], render["mask"])
            clipped = render["depth_png"] == 65535
            np.testing.assert_array_equal(np.isinf(scene.depth[view]), clipped)
            np.testing.assert_array_equal(scene.depth[view][~clipped],
                                          (render["depth_png"][~clipped] / DEPTH_SCALE).astype(np.float32))
        np.testing.assert_array_equal(scene.intrinsics, np.broadcast_to(K, (3, 3, 3)))
        np.testing.assert_allclose(scene.camera_to_world[:, :3, 3], expected["camera_pos"], atol=1e-6)
    assert {0, 1, 2} <= set(np.unique(scenes.scene(0).instance).tolist())
    assert np.isinf(scenes.read_views(0, fields=("depth",))["depth"]).any()  # the low camera sees the sky


def test_cameras_match_obsurf_camera_model_exactly(tmp_path):
    truth = make_obsurf_dataset(tmp_path / "clevr3d", 3)
    scenes = convert_cli(truth["root"], tmp_path / "out.h5")
    points = np.array([[0.7, -1.2, 0.4], [-2.5, 1.5, 0.0], [3.0, 2.0, 1.0]])
    checked = 0
    for s in range(scenes.num_scenes):
        data = scenes.read_views(s)
        for view in range(3):
            K, c2w = data["intrinsics"][view], data["camera_to_world"][view]
            camera_pos = truth["scenes"][s]["camera_pos"][view]
            for point in points:
                ours, z = cameras.project(point, K, c2w)
                assert z > 0
                np.testing.assert_allclose(ours, reference_pixel(camera_pos, point), atol=1e-4)
                checked += 1
            # A point on the reference ray through pixel (row 37, column 251) projects to that
            # pixel's centre, and our ray through that centre is the reference ray.
            ray = reference_rays(camera_pos)[37, 251]
            ours, _ = cameras.project(camera_pos + 9.3 * ray, K, c2w)
            np.testing.assert_allclose(ours, [251.5, 37.5], atol=1e-4)
            np.testing.assert_allclose(cameras.ray_directions(K, c2w, H, W), reference_rays(camera_pos), atol=1e-6)
    assert checked == 27


@pytest.mark.parametrize("variant, limit", [("clevr3d", None), ("msn", 1)])
def test_depth_is_distance_along_the_ray_to_the_ground(tmp_path, variant, limit):
    truth = make_obsurf_dataset(tmp_path / variant, 3, variant)
    scenes = convert_cli(truth["root"], tmp_path / "out.h5", *(["--limit", limit] if limit else []))
    assert scenes.source == f"obsurf:{variant}"
    for s, expected in enumerate(truth["scenes"]):
        scene = scenes.scene(s)
        assert scene.name == expected["name"] and scene.split == expected["split"]
        origins, dirs = cameras.camera_rays(scene.intrinsics, scene.camera_to_world, H, W)
        hit = np.isfinite(scene.depth)
        points = origins[:, None, None] + scene.depth[..., None] * dirs
        assert np.abs(points[hit][:, 2]).max() < 1e-3  # the fixture's scenes are the plane z = 0
        for view, p in enumerate(expected["pool"]):
            exact = truth["pool"][p]["ray_distance"]
            np.testing.assert_allclose(scene.depth[view][hit[view]], exact[hit[view]], atol=1e-3 / 0.8)


def test_msn_names_splits_and_ray_distance_from_camera_z(tmp_path):
    truth = make_obsurf_dataset(tmp_path / "msn", 6, "msn")
    assert truth["limit"] == 2
    scenes = convert_cli(truth["root"], tmp_path / "out.h5", "--limit", 2)
    assert list(scenes.names) == ["0", "1", "80000", "80001", "90000", "90001"]
    assert scenes.source_info["stored_depth"] == "camera z"
    render = truth["pool"][truth["scenes"][3]["pool"][1]]
    camera_pos = render["camera_pos"].astype(np.float64)
    cosine = reference_rays(camera_pos) @ (-camera_pos / np.linalg.norm(camera_pos))  # ObSuRF's zs_to_depths
    expected = render["depth_png"] / DEPTH_SCALE / cosine
    depth = scenes.scene(3).depth[1]
    finite = render["depth_png"] < 65535
    np.testing.assert_allclose(depth[finite], expected[finite], rtol=1e-6)
    assert cosine.min() < 0.87 and np.isinf(depth[~finite]).all()


def test_scan_applies_split_ranges_and_object_filter_from_metadata_only(tmp_path):
    def scan(rows, eligible, msn=False):
        root = tmp_path / f"scan{len(list(tmp_path.iterdir()))}"
        for folder in ("images", "depths", "masks"):
            (root / folder).mkdir(parents=True)
        shape = np.zeros((rows, 10), np.int64)
        shape[:, :7] = 1  # 7 objects: skipped
        shape[[i for i in eligible if i < rows], 6] = 0  # 6 objects: kept
        camera_pos = np.tile(np.array([10.0, 2.0, 5.0], np.float32), (rows, 3, 1))
        extra = {"shape_file": np.full((rows, 10), "m")} if msn else {}
        np.savez(root / "metadata.npz", shape=shape, camera_pos=camera_pos, **extra)
        return [(r.name, r.split) for r in ObsurfSource(root).scan()]

    edges = [0, 69999, 70000, 70499, 70500, 74999, 75000, 84999, 85000, 99999]
    assert scan(100_000, edges) == [("0", "train"), ("69999", "train"), ("70000", "val"), ("70499", "val"),
                                    ("70500", "val"), ("74999", "val"), ("85000", "test"), ("99999", "test")]
    msn_edges = [79999, 80000, 80499, 80500, 89999, 90000, 99999]
    assert scan(100_000, msn_edges, msn=True) == [("79999", "train"), ("80000", "val"), ("80499", "val"),
                                                  ("90000", "test"), ("99999", "test")]
    assert scan(72_000, edges) == [("0", "train"), ("69999", "train"), ("70000", "val"), ("70499", "val"),
                                   ("70500", "val")]


def test_source_pickles_small_and_loads_after_unpickling(tmp_path):
    truth = make_obsurf_dataset(tmp_path / "clevr3d", 3)
    source = ObsurfSource(truth["root"])
    data = pickle.dumps(source)
    assert len(data) < 2000  # no metadata travels to the workers
    refs = source.scan()
    scene = pickle.loads(data).load(refs[1:2])[0]
    assert scene.name == "70000" and scene.rgb.shape == (3, H, W, 3) and scene.depth.dtype == np.float32


@pytest.mark.parametrize("case", ["no metadata", "wrong keys", "truncated image", "no mask", "no depth"])
def test_bad_input_names_the_file(tmp_path, case):
    root = make_obsurf_dataset(tmp_path / "clevr3d", 3)["root"]
    out = tmp_path / "out.h5"
    if case == "no metadata":
        bad = root / "metadata.npz"
        bad.unlink()
    elif case == "wrong keys":
        bad = root / "metadata.npz"
        with np.load(bad) as data:
            np.savez(bad, shape=data["shape"], camera_positions=data["camera_pos"])
    elif case == "truncated image":
        bad = root / "images" / "img_70000_1.png"
        bad.write_bytes(bad.read_bytes()[:2000])
    else:
        bad = root / ("masks/masks_85000_2.png" if case == "no mask" else "depths/depths_0_0.png")
        bad.unlink()
    result = run_command("convert", "--from", "obsurf", root, out)
    assert_bad_input(result, [bad] + (["camera_pos"] if case == "wrong keys" else []), out)


def test_malformed_views_and_cameras_raise_bad_input(tmp_path):
    root = make_obsurf_dataset(tmp_path / "clevr3d", 3)["root"]
    source = ObsurfSource(root)
    refs = source.scan()
    small = root / "images" / "img_0_2.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small)
    with pytest.raises(BadInput, match="320x240") as error:
        source.load(refs[:1])
    assert error.value.path == small
    eight_bit = root / "depths" / "depths_70000_0.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(eight_bit)
    with pytest.raises(BadInput, match="16-bit") as error:
        source.load(refs[1:2])
    assert error.value.path == eight_bit

    with np.load(root / "metadata.npz") as data:
        metadata = dict(data)
    metadata["camera_pos"][5, 1] = [0.0, 0.0, 12.0]  # straight above the origin: no z-up camera
    np.savez(root / "metadata.npz", **metadata)
    with pytest.raises(BadInput, match="scene 5 view 1"):
        ObsurfSource(root)
    (root / "masks").rename(root / "no_masks")
    with pytest.raises(BadInput, match="no such folder"):
        ObsurfSource(root)
