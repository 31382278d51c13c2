import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import assert_bad_input, run_command
from fixtures.srn import make_srn_dataset
from scenetools import cameras
from scenetools.convert import convert
from scenetools.errors import BadInput
from scenetools.scenefile import SceneFile
from scenetools.sources.srn import Intrinsics, SRNSource, read_intrinsics, read_pose


def convert_cli(root, out, *args):
    result = run_command("convert", "--from", "srn", root, out, *args)
    assert result.returncode == 0, result.stderr
    return SceneFile(out)


# SRN's own camera maths, written out from its code (util.parse_intrinsics, data_util.load_pose,
# geometry.project / lift / get_ray_directions, dataio's integer uv grid), independently of
# scenetools.

def srn_intrinsics(path, sidelength):
    """parse_intrinsics(path, trgt_sidelength): f, cx, cy rescaled from the file's H x W."""
    lines = Path(path).read_text().splitlines()
    f, cx, cy, _ = map(float, lines[0].split())
    height, width = map(float, lines[3].split())
    return sidelength / height * f, cx / width * sidelength, cy / height * sidelength


def srn_pose(path):
    lines = Path(path).read_text().splitlines()
    if len(lines) == 1:
        return np.array(lines[0].split(" ")[:16], np.float64).reshape(4, 4)
    return np.array([line.split(" ")[:4] for line in lines[:4]], np.float64)


def srn_project(point, pose, f, cx, cy):
    """Image point (x, y) of a world point; pixel (row i, column j) is the point (j, i)."""
    x, y, z, _ = np.linalg.inv(pose) @ np.append(point, 1.0)
    assert z > 0
    return np.array([f * x / z + cx, f * y / z + cy])


def srn_rays(pose, f, cx, cy, size):
    """[H, W, 3] unit ray of every pixel: uv = (column, row), lifted at z = 1, to the world."""
    row, col = np.mgrid[0:size, 0:size].astype(np.float64)
    cam = np.stack([(col - cx) / f, (row - cy) / f, np.ones_like(col), np.ones_like(col)], -1)
    world = cam @ pose.T
    dirs = world[..., :3] - pose[:3, 3]
    return dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def test_cars_root_converts_pixels_cameras_names_and_splits(tmp_path):
    truth = make_srn_dataset(tmp_path / "srn", 6)
    scenes = convert_cli(truth["root"], tmp_path / "out.h5")

    assert scenes.source == "srn:cars"
    assert list(scenes.names) == [s["name"] for s in truth["scenes"]]
    assert list(scenes.split_of) == ["train", "train", "val", "val", "test", "test"]
    assert list(scenes.categories) == ["cars"] * 6
    assert scenes.view_count.tolist() == [len(s["pool"]) for s in truth["scenes"]]
    assert set(scenes.view_count.tolist()) == {3, 4}
    assert (scenes.height, scenes.width) == (32, 32) and scenes.fields == {}
    assert scenes.render_range == pytest.approx([0.8, 1.8])
    np.testing.assert_allclose(scenes.near_far, np.tile([0.8, 1.8], (6, 1)), rtol=1e-6)
    assert scenes.world_up is None and scenes.semantic_classes is None
    assert scenes.source_info["split_folders"] == ["cars_train", "cars_val", "cars_test"]
    assert {s["one_line"] for s in truth["scenes"]} == {True, False}  # both pose file styles

    # f = 525/512 * 32 px, principal point 16 px, plus half a pixel to our pixel centres.
    K = np.array([[32.8125, 0, 16.5], [0, 32.8125, 16.5], [0, 0, 1]])
    for s, expected in enumerate(truth["scenes"]):
        scene = scenes.scene(s)
        for view, p in enumerate(expected["pool"]):
            np.testing.assert_array_equal(scene.rgb[view], truth["pool"][p]["rgb"])
        np.testing.assert_allclose(scene.camera_to_world, expected["camera_to_world"], atol=1e-6)
        np.testing.assert_array_equal(scene.intrinsics, np.broadcast_to(K, (len(expected["pool"]), 3, 3)))
    # An RGBA view: its transparent black background became white.
    first = truth["scenes"][0]
    view = next(v for v, p in enumerate(first["pool"]) if truth["pool"][p]["mode"] == "RGBA")
    stored = np.asarray(Image.open(first["folder"] / "rgb" / f"{view:06d}.png"))
    assert stored.shape[-1] == 4 and (stored[0, 0] == 0).all()
    assert (scenes.scene(0).rgb[view][0, 0] == 255).all()


def test_nested_chairs_single_split_folders_and_both_categories(tmp_path):
    root = tmp_path / "srn"
    cars = make_srn_dataset(root, 3)["scenes"]
    chairs = make_srn_dataset(root, 3, "chairs")["scenes"]
    assert chairs[0]["folder"].parent == root / "chairs_train" / "chairs_2.0_train"

    scenes = SceneFile(convert(SRNSource(root / "chairs_train"), tmp_path / "chairs_train.h5", codec="raw"))
    assert list(scenes.names) == [chairs[0]["name"]] and list(scenes.split_of) == ["train"]
    assert scenes.source == "srn:chairs" and scenes.render_range == pytest.approx([1.25, 2.75])
    assert list(scenes.categories) == ["chairs"] and scenes.near_far[0] == pytest.approx([1.25, 2.75])
    np.testing.assert_allclose(scenes.scene(0).camera_to_world, chairs[0]["camera_to_world"], atol=1e-6)

    nested = SRNSource(root / "chairs_train" / "chairs_2.0_train").scan()
    assert [(r.name, r.split) for r in nested] == [(chairs[0]["name"], "train")]
    assert [(r.name, r.split) for r in SRNSource(root / "cars_test").scan()] == [(cars[2]["name"], "test")]

    both = SceneFile(convert(SRNSource(root), tmp_path / "both.h5", codec="raw"))
    assert both.source == "srn" and both.render_range == pytest.approx([0.8, 2.75])
    assert list(both.names) == [s["name"] for s in cars + chairs]
    assert list(both.split_of) == ["train", "val", "test"] * 2
    assert list(both.categories) == ["cars"] * 3 + ["chairs"] * 3
    np.testing.assert_allclose(both.near_far, [[0.8, 1.8]] * 3 + [[1.25, 2.75]] * 3, rtol=1e-6)
    assert both.source_info["split_folders"] == ["cars_train", "cars_val", "cars_test", "chairs_2.0_train",
                                                 "chairs_val", "chairs_test"]


def test_cameras_match_srn_projection_and_integer_pixel_convention_exactly(tmp_path):
    # intrinsics.txt written for 128 x 128 images while the images are 32 x 32: rescaled.
    truth = make_srn_dataset(tmp_path / "srn", 3, size=32, intrinsics_size=128)
    scenes = SceneFile(convert(SRNSource(truth["root"]), tmp_path / "out.h5", codec="raw"))
    points = np.array([[0.05, -0.1, 0.08], [-0.2, 0.15, -0.05], [0.0, 0.0, 0.0], [0.12, 0.2, 0.1]])
    checked = 0
    for s, expected in enumerate(truth["scenes"]):
        data = scenes.read_views(s)
        f, cx, cy = srn_intrinsics(expected["folder"] / "intrinsics.txt", 32)
        assert (f, cx, cy) == (32.8125, 16.0, 16.0)
        for view in range(len(expected["pool"])):
            K, c2w = data["intrinsics"][view], data["camera_to_world"][view]
            pose = srn_pose(expected["folder"] / "pose" / f"{view:06d}.txt")
            for point in points:
                ours, z = cameras.project(point, K, c2w)
                reference = srn_project(point, pose, f, cx, cy)
                assert z > 0 and (0 <= ours).all() and (ours < 32).all()
                np.testing.assert_allclose(ours, reference + 0.5, atol=1e-4)
                # the same pixel: SRN's pixel (i, j) sits at the integer point (j, i), ours
                # covers [j, j + 1) x [i, i + 1)
                assert tuple(np.floor(ours).astype(int)) == tuple(np.round(reference).astype(int))
                checked += 1
            rays = srn_rays(pose, f, cx, cy, 32)
            np.testing.assert_allclose(cameras.ray_directions(K, c2w, 32, 32), rays, atol=1e-6)
            # A point on SRN's ray of pixel (row 5, column 27) projects to our centre of that pixel.
            ours, _ = cameras.project(pose[:3, 3] + 1.1 * rays[5, 27], K, c2w)
            np.testing.assert_allclose(ours, [27.5, 5.5], atol=1e-4)
    assert checked == 4 * (3 + 4 + 3)


def test_pose_and_intrinsics_files_are_read_strictly(tmp_path):
    rotation = cameras.look_at([1.0, 2.0, 0.5], np.zeros(3))
    one_line, four_lines = tmp_path / "a.txt", tmp_path / "b.txt"
    one_line.write_text(" ".join(map(str, rotation.ravel())) + "\n")
    four_lines.write_text("\n".join(" ".join(map(str, row)) for row in rotation) + "\n")
    np.testing.assert_array_equal(read_pose(one_line), rotation)
    np.testing.assert_array_equal(read_pose(four_lines), rotation)

    bad = tmp_path / "bad.txt"
    for text, message in [("1 0 0 0 0 1 0 0 0 0 1 0\n", "found 12 numbers on 1 line$"),
                          ("1 0 0 0 0 1 0 0\n0 0 1 0 0 0 0 1\n", "16 numbers on 2 lines"),
                          ("1 0 0 0\n0 1 0 0\n0 0 1 one\n0 0 0 1\n", "malformed numbers"),
                          ("1 0 0 0\n0 nan 0 0\n0 0 1 0\n0 0 0 1\n", "NaN"),
                          ("2 0 0 0\n0 2 0 0\n0 0 2 0\n0 0 0 1\n", "not a rigid"),
                          ("", "found 0 numbers")]:
        bad.write_text(text)
        with pytest.raises(BadInput, match=message) as error:
            read_pose(bad)
        assert error.value.path == bad

    intrinsics = tmp_path / "intrinsics.txt"
    intrinsics.write_text("131.25 64. 64. 0.\n0. 0. 0.\n1.\n128 128\n0\n")  # with the world2cam flag
    assert read_intrinsics(intrinsics) == Intrinsics(focal=131.25, cx=64.0, cy=64.0, height=128, width=128)
    for text in ["131.25 64. 64.\n0. 0. 0.\n1.\n128 128\n", "131.25 64. 64. 0.\n0. 0. 0.\n1.\n",
                 "131.25 64. 64. 0.\n0. 0. 0.\n1.\n128.5 128\n", "-1 64. 64. 0.\n0. 0. 0.\n1.\n128 128\n",
                 "131.25 64. 64. 0.\n0. 0. 0.\n1.\n128 128\n0 0\n"]:
        intrinsics.write_text(text)
        with pytest.raises(BadInput) as error:
            read_intrinsics(intrinsics)
        assert error.value.path == intrinsics


def test_source_pickles_small_and_loads_after_unpickling(tmp_path):
    truth = make_srn_dataset(tmp_path / "srn", 3)
    source = SRNSource(truth["root"])
    data = pickle.dumps(source)
    assert len(data) < 2000
    refs = source.scan()
    scene = pickle.loads(data).load(refs[2:3])[0]
    assert scene.name == truth["scenes"][2]["name"] and scene.split == "test" and scene.category == "cars"
    assert scene.rgb.shape == (3, 32, 32, 3) and scene.near_far == (0.8, 1.8)


@pytest.mark.parametrize("case", ["no intrinsics", "bad intrinsics", "pose count", "pose not numeric",
                                  "truncated image"])
def test_bad_input_names_the_file(tmp_path, case):
    truth = make_srn_dataset(tmp_path / "srn", 6)
    folder = truth["scenes"][3]["folder"]
    out = tmp_path / "out.h5"
    if case == "no intrinsics":
        bad = folder / "intrinsics.txt"
        bad.unlink()
    elif case == "bad intrinsics":
        bad = folder / "intrinsics.txt"
        bad.write_text("131.25 64 64 0.\n128 128\n")
    elif case == "pose count":
        bad = folder / "pose" / "000001.txt"
        bad.write_text("1 0 0 0 0 1 0 0 0 0 1 0 0 0 0\n")
    elif case == "pose not numeric":
        bad = folder / "pose" / "000002.txt"
        bad.write_text("1 0 0 0\n0 1 0 0\n0 0 1 x\n0 0 0 1\n")
    else:
        bad = folder / "rgb" / "000000.png"
        bad.write_bytes(bad.read_bytes()[:len(bad.read_bytes()) // 2])
    assert_bad_input(run_command("convert", "--from", "srn", truth["root"], out), bad, out)


def test_malformed_layouts_raise_bad_input_naming_the_path(tmp_path):
    truth = make_srn_dataset(tmp_path / "srn", 3)
    root, folder = truth["root"], truth["scenes"][0]["folder"]
    with pytest.raises(BadInput, match="an SRN instance folder") as error:
        SRNSource(folder)
    assert error.value.path == folder
    (tmp_path / "nothing" / "some_folder").mkdir(parents=True)
    with pytest.raises(BadInput, match="neither a folder of SRN instance folders") as error:
        SRNSource(tmp_path / "nothing")
    assert error.value.path == tmp_path / "nothing"
    (tmp_path / "empty" / "cars_val").mkdir(parents=True)
    with pytest.raises(BadInput, match="no instance folders"):
        SRNSource(tmp_path / "empty")

    source = SRNSource(root)
    refs = source.scan()
    small = folder / "rgb" / "000001.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(small)
    with pytest.raises(BadInput, match="16x16, expected 32x32") as error:
        source.load(refs[:1])
    assert error.value.path == small

    (folder / "pose" / "000001.txt").rename(folder / "pose" / "000009.txt")
    with pytest.raises(BadInput, match="the pose of rgb/000001.png") as error:
        source.load(refs[:1])
    assert error.value.path == folder / "pose" / "000001.txt"
    (folder / "pose" / "000009.txt").rename(folder / "pose" / "000001.txt")
    (folder / "pose" / "000007.txt").write_text((folder / "pose" / "000000.txt").read_text())
    with pytest.raises(BadInput, match="pose without an image") as error:
        source.load(refs[:1])
    assert error.value.path == folder / "pose" / "000007.txt"


def test_any_folder_of_instance_folders_converts_with_its_split_from_the_name_or_the_option(tmp_path):
    truth = make_srn_dataset(tmp_path / "srn", 3, splits=("train",))
    mine = (tmp_path / "srn" / "cars_train").rename(tmp_path / "my_objects")
    scenes = convert_cli(mine, tmp_path / "mine.h5")
    assert list(scenes.names) == [s["name"] for s in truth["scenes"]]
    assert list(scenes.split_of) == ["train"] * 3 and list(scenes.categories) == [""] * 3
    assert scenes.source == "srn" and scenes.render_range is None and np.isnan(scenes.near_far).all()
    assert scenes.source_info["split_folders"] == ["my_objects"]
    for s, expected in enumerate(truth["scenes"]):
        scene = scenes.scene(s)
        np.testing.assert_allclose(scene.camera_to_world, expected["camera_to_world"], atol=1e-6)
        for view, p in enumerate(expected["pool"]):
            np.testing.assert_array_equal(scene.rgb[view], truth["pool"][p]["rgb"])
    test = convert_cli(mine, tmp_path / "test.h5", "--as-split", "test")
    assert list(test.split_of) == ["test"] * 3

    # <category>_<split> names give both, for any category; cars and chairs keep their near/far.
    lamps = (tmp_path / "data" / "lamps_val")
    lamps.parent.mkdir()
    mine.rename(lamps)
    scenes = convert_cli(lamps, tmp_path / "lamps.h5")
    assert list(scenes.split_of) == ["val"] * 3 and list(scenes.categories) == ["lamps"] * 3
    assert scenes.source == "srn:lamps" and scenes.render_range is None
    assert [(r.split, r.key[1]) for r in SRNSource(lamps.parent).scan()] == [("val", "lamps")] * 3
    cars = SRNSource(lamps.rename(tmp_path / "data" / "cars_val"), split="val")
    assert cars.info.render_range == (0.8, 1.8) and cars.load(cars.scan()[:1])[0].near_far == (0.8, 1.8)


def test_a_bad_folder_of_instance_folders_is_one_line_of_bad_input(tmp_path):
    truth = make_srn_dataset(tmp_path / "srn", 3, splits=("train",))
    mine = (tmp_path / "srn" / "cars_train").rename(tmp_path / "my_objects")
    out = tmp_path / "out.h5"
    missing = truth["scenes"][1]["name"]
    (mine / missing / "pose").rename(mine / missing / "poses")
    assert_bad_input(run_command("convert", "--from", "srn", mine, out), mine / missing / "pose", out)
    (mine / missing / "poses").rename(mine / missing / "pose")
    # A split the name contradicts, a split option for a folder of split folders, a bad name,
    # and an option of another source.
    named = mine.rename(tmp_path / "srn" / "cars_test")
    for folder, split in [(named, "val"), (tmp_path / "srn", "train"), (named, "a b")]:
        assert_bad_input(run_command("convert", "--from", "srn", folder, out, "--as-split", split), "--as-split", out)
    result = run_command("convert", "--from", "synthetic", out, "--as-split", "test")
    assert_bad_input(result, "--as-split only apply to --from srn", out)
