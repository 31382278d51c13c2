import json
import math
import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import assert_bad_input, run_command
from fixtures.nerfstudio import CAMERA_ANGLE_X, make_nerfstudio_dataset
from scenetools import cameras
from scenetools.convert import convert
from scenetools.errors import BadInput
from scenetools.scenefile import SceneFile
from scenetools.sources.nerfstudio import NerfstudioSource

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])  # flip camera y and z


def convert_cli(path, out):
    result = run_command("convert", "--from", "nerfstudio", path, out)
    assert result.returncode == 0, result.stderr
    return SceneFile(out)


def convert_direct(path, out):
    return SceneFile(convert(NerfstudioSource(path), out, codec="raw"))


# nerfstudio's own camera maths, written out from its code (cameras.Cameras.get_image_coords
# with pixel_offset 0.5, _generate_rays_from_coords for a PERSPECTIVE camera), independently of
# scenetools: the ray of image point (u, v) is ((u - cx) / fx, -(v - cy) / fy, -1) in OpenGL
# camera axes, rotated by transform_matrix; pixel (row i, column j) is the point (j + 0.5, i + 0.5).

def nerfstudio_project(point, transform_matrix, fx, fy, cx, cy):
    """The image point (u, v) whose nerfstudio ray passes through a world point."""
    x, y, z = (np.linalg.inv(transform_matrix) @ np.append(point, 1.0))[:3]
    assert z < 0  # in front of an OpenGL camera
    return np.array([cx + fx * x / -z, cy - fy * y / -z])


def nerfstudio_rays(transform_matrix, fx, fy, cx, cy, height, width):
    """[H, W, 3] unit world direction of every pixel's ray."""
    rows, columns = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    v, u = rows + 0.5, columns + 0.5
    camera = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1)
    world = camera @ transform_matrix[:3, :3].T
    return world / np.linalg.norm(world, axis=-1, keepdims=True)


def blender_intrinsics(transforms_path, width, height):
    """The Blender parser's focal = 0.5 W / tan(0.5 camera_angle_x), cx = W / 2, cy = H / 2."""
    angle = json.loads(transforms_path.read_text())["camera_angle_x"]
    focal = 0.5 * width / math.tan(0.5 * angle)
    return focal, focal, width / 2.0, height / 2.0


def frame_intrinsics(frame):
    return frame["fl_x"], frame["fl_y"], frame["cx"], frame["cy"]


def check_views(scene, frames, pool, K=None):
    """The scene holds these frames, in order: pixels, poses and (given or per-frame) K."""
    assert scene.num_views == len(frames)
    for view, frame in enumerate(frames):
        np.testing.assert_array_equal(scene.rgb[view], pool[frame["pool"]]["rgb"])
        np.testing.assert_allclose(scene.camera_to_world[view], frame["transform_matrix"] @ OPENGL_TO_OPENCV,
                                   atol=1e-6)
        fx, fy, cx, cy = K if K is not None else frame_intrinsics(frame)
        np.testing.assert_array_equal(scene.intrinsics[view], [[fx, 0, cx], [0, fy, cy], [0, 0, 1]])


def test_transforms_json_becomes_one_scene_per_split_with_nerfstudios_default_split(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path, 12)
    scenes = convert_cli(truth["path"], tmp_path / "out.h5")

    assert scenes.source == "nerfstudio"
    assert list(scenes.names) == ["capture/train", "capture/val", "capture/test"]
    assert list(scenes.split_of) == ["train", "val", "test"]
    # 12 frames: ceil(0.9 * 12) = 11 train frames at int(linspace(0, 11, 11)) = 0..9, 11;
    # frame 10 (in path order, the json lists them shuffled) is the eval frame of val and test.
    frames = truth["frames"]
    train, evaluation = frames[:10] + frames[11:], frames[10:11]
    assert scenes.view_count.tolist() == [11, 1, 1]
    assert (scenes.height, scenes.width) == (24, 32) and scenes.fields == {}
    assert scenes.render_range is None and scenes.world_up is None
    assert np.isnan(scenes.near_far).all() and list(scenes.categories) == ["", "", ""]
    K = (30.5, 29.0, 15.25, 12.75)  # top-level fl_x, fl_y, cx, cy as given: pixel centres already
    for index, expected in enumerate([train, evaluation, evaluation]):
        check_views(scenes.scene(index), expected, truth["pool"], K)
    info = scenes.source_info
    assert info["capture"] == "capture" and info["frames"] == {"train": 11, "val": 1, "test": 1}
    assert "0.9" in info["split_rule"] and info["applied_transform"][2] == [-0.0, -0.0, -1.0, -0.0]

    # An RGBA frame: its transparent black background became white.
    stored = np.asarray(Image.open(frames[0]["image"]))
    assert truth["pool"][frames[0]["pool"]]["mode"] == "RGBA" and stored.shape == (24, 32, 4)
    assert (stored[0, 0] == 0).all() and (scenes.scene(0).rgb[0][0, 0] == 255).all()


def test_twenty_frames_leave_two_eval_frames_and_json_file_as_input(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path, 20, name="poster")
    scenes = convert_direct(truth["path"] / "transforms.json", tmp_path / "out.h5")
    assert list(scenes.names) == ["poster/train", "poster/val", "poster/test"]
    frames = truth["frames"]
    # ceil(18) = 18 train frames at int(linspace(0, 19, 18)): all but 9 and 18.
    evaluation = [frames[9], frames[18]]
    train = [f for k, f in enumerate(frames) if k not in (9, 18)]
    for index, expected in enumerate([train, evaluation, evaluation]):
        check_views(scenes.scene(index), expected, truth["pool"], (30.5, 29.0, 15.25, 12.75))


def test_split_lists_and_per_frame_intrinsics(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path, 12, per_frame_intrinsics=True, split_lists=True)
    scenes = convert_direct(truth["path"], tmp_path / "out.h5")
    assert list(scenes.names) == ["capture/train", "capture/val", "capture/test"]
    assert scenes.source_info["split_rule"] == "the json's train/val/test_filenames"
    by_split = {split: [f for f in truth["frames"] if f["split"] == split] for split in ("train", "val", "test")}
    assert [len(v) for v in by_split.values()] == [7, 2, 2]  # the 12th frame is in no list: left out
    assert scenes.view_count.tolist() == [7, 2, 2]
    for index, frames in enumerate(by_split.values()):
        check_views(scenes.scene(index), frames, truth["pool"])
    assert len(set(scenes.scene(0).intrinsics[:, 0, 0].tolist())) == 7  # each view keeps its own focal length


def test_blender_layout_one_scene_per_transforms_file(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path, 8, style="blender")
    scenes = convert_cli(truth["path"], tmp_path / "out.h5")
    assert scenes.source == "nerfstudio:blender"
    assert list(scenes.names) == ["capture/train", "capture/val", "capture/test"]
    assert list(scenes.split_of) == ["train", "val", "test"]
    assert scenes.view_count.tolist() == [8, 1, 2]
    # focal = 0.5 * 32 / tan(0.5 * 0.6911...) = 44.44 px (NeRF synthetic's 1111.11 px at 800 px),
    # principal point at the image centre
    focal = 16.0 / math.tan(0.5 * CAMERA_ANGLE_X)
    assert focal == pytest.approx(1111.111 * 32 / 800, abs=1e-4)
    for index, split in enumerate(["train", "val", "test"]):
        frames = [f for f in truth["frames"] if f["split"] == split]  # file order
        check_views(scenes.scene(index), frames, truth["pool"], np.float32([focal, focal, 16.0, 12.0]))
    assert scenes.source_info["transforms"] == ["transforms_train.json", "transforms_val.json",
                                                "transforms_test.json"]


def test_instant_ngp_intrinsics_and_one_split_file_as_input(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path, 6, style="blender", ngp_intrinsics=True)
    assert truth["frames"][0]["file_path"] == "./train/r_0.png"  # with its suffix: nothing appended
    scenes = convert_direct(truth["transforms"]["train"], tmp_path / "out.h5")
    assert list(scenes.names) == ["capture/train"] and scenes.view_count.tolist() == [6]
    # fl_x etc. win over camera_angle_x
    check_views(scenes.scene(0), truth["frames"][:6], truth["pool"], (27.5, 28.25, 16.5, 11.75))


@pytest.mark.parametrize("style,options", [("nerfstudio", {}), ("nerfstudio", {"per_frame_intrinsics": True}),
                                           ("blender", {}), ("blender", {"ngp_intrinsics": True})])
def test_cameras_match_nerfstudio_projection_and_pixel_centres_exactly(tmp_path, style, options):
    truth = make_nerfstudio_dataset(tmp_path, 12, style=style, **options)
    scenes = convert_direct(truth["path"], tmp_path / "out.h5")
    height, width = truth["size"]
    points = np.array([[0.3, -0.2, 0.1], [-0.25, 0.15, -0.1], [0.0, 0.0, 0.0], [0.1, 0.3, 0.25]])
    if style == "blender":
        expected = {split: [f for f in truth["frames"] if f["split"] == split] for split in ("train", "val", "test")}
    else:  # 12 frames in path order: frame 10 is the eval frame
        frames = truth["frames"]
        expected = {"train": frames[:10] + frames[11:], "val": frames[10:11], "test": frames[10:11]}
    assert list(scenes.split_of) == list(expected)
    checked = 0
    for index, split in enumerate(scenes.split_of):
        data = scenes.read_views(index)
        for view, frame in enumerate(expected[split]):
            T = frame["transform_matrix"]
            if style == "blender" and not options:
                intrinsics = blender_intrinsics(truth["transforms"][split], width, height)
            else:
                intrinsics = frame_intrinsics(frame)
            K, c2w = data["intrinsics"][view], data["camera_to_world"][view]
            for point in points:
                ours, z = cameras.project(point, K, c2w)
                reference = nerfstudio_project(point, T, *intrinsics)
                assert z > 0 and (0 <= ours).all() and (ours < [width, height]).all()
                np.testing.assert_allclose(ours, reference, atol=1e-4)
                # and our ray through that image point passes through the point
                direction = cameras.rays_through(K, c2w, ours[None])[0]
                offset = point - c2w[:3, 3]
                np.testing.assert_allclose(np.cross(direction, offset / np.linalg.norm(offset)), 0, atol=1e-5)
                checked += 1
            rays = nerfstudio_rays(T, *intrinsics, height, width)
            np.testing.assert_allclose(cameras.ray_directions(K, c2w, height, width), rays, atol=1e-6)
            # a point on nerfstudio's ray of pixel (row 5, column 27) projects to our centre of that pixel
            ours, _ = cameras.project(T[:3, 3] + 2.5 * rays[5, 27], K, c2w)
            np.testing.assert_allclose(ours, [27.5, 5.5], atol=1e-4)
    assert checked == len(points) * int(scenes.view_count.sum())


def test_source_pickles_small_and_loads_after_unpickling(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path, 12)
    source = NerfstudioSource(truth["path"])
    data = pickle.dumps(source)
    assert len(data) < 3000
    refs = source.scan()
    scene = pickle.loads(data).load(refs[1:2])[0]
    assert (scene.name, scene.split) == ("capture/val", "val") and scene.rgb.shape == (1, 24, 32, 3)
    assert scene.near_far is None and scene.category is None


def rewrite_json(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def frame_entry(meta, file_path):
    return next(entry for entry in meta["frames"] if entry["file_path"] == file_path)


@pytest.mark.parametrize("case", ["no transforms.json", "invalid json", "missing image", "truncated png",
                                  "nan matrix", "matrix shape", "distortion", "image size"])
def test_bad_input_names_the_file(tmp_path, case):
    truth = make_nerfstudio_dataset(tmp_path / "data", 12)
    transforms = truth["transforms"]["transforms"]
    image = truth["frames"][4]["image"]
    out = tmp_path / "out.h5"
    names = [transforms]
    if case == "no transforms.json":
        transforms.unlink()
    elif case == "invalid json":
        transforms.write_text(transforms.read_text()[:-20])
    elif case == "missing image":
        image.unlink()
        names = [image]
    elif case == "truncated png":
        image.write_bytes(image.read_bytes()[:len(image.read_bytes()) // 2])
        names = [image]
    elif case == "nan matrix":
        rewrite_json(transforms, lambda m: frame_entry(m, "images/frame_00005.png")["transform_matrix"][1].
                     __setitem__(2, float("nan")))
        names = [transforms, "images/frame_00005.png", "NaN"]
    elif case == "matrix shape":
        rewrite_json(transforms, lambda m: frame_entry(m, "images/frame_00005.png")["transform_matrix"].pop())
        names = [transforms, "images/frame_00005.png", "shape 3x4"]
    elif case == "distortion":
        rewrite_json(transforms, lambda m: m.update(k1=0.012))
        names = [transforms, "distortion", "k1=0.012"]
    else:
        Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(image)
        names = [image, "16x12, expected 32x24"]
    assert_bad_input(run_command("convert", "--from", "nerfstudio", truth["path"], out), names, out)


@pytest.mark.parametrize("change,message", [
    (lambda m: m.update(camera_model="OPENCV_FISHEYE"), "camera_model 'OPENCV_FISHEYE' is not supported"),
    (lambda m: m.update(distortion_params=[0, 0, 0, 0, 0.001, 0]), r"distortion_params\[4\]=0.001"),
    (lambda m: m.update(train_filenames=["images/frame_00001.png", "images/nope.png"]),
     "train_filenames names files that no frame has: images/nope.png"),
    (lambda m: m["frames"][3]["transform_matrix"][0].__setitem__(0, 2.0), "not a rigid"),
    (lambda m: m["frames"][3].update(transform_matrix="identity"), "not a 4x4 matrix of numbers"),
    (lambda m: m.update(w=64), "w is 64 in the json, but the images are 32x24"),
    (lambda m: [m.pop(k) for k in ("fl_x", "fl_y")], "no focal length"),
    (lambda m: m.update(fl_y="wide"), "fl_y is not a number"),
    (lambda m: m.update(frames=[]), "no frames"),
    (lambda m: m["frames"][0].pop("file_path"), "frame 0 needs a 'file_path'"),
])
def test_malformed_transforms_raise_bad_input_naming_the_json(tmp_path, change, message):
    truth = make_nerfstudio_dataset(tmp_path, 12)
    transforms = truth["transforms"]["transforms"]
    rewrite_json(transforms, change)
    with pytest.raises(BadInput, match=message) as error:
        NerfstudioSource(truth["path"])
    assert error.value.path == transforms


def test_malformed_blender_layouts(tmp_path):
    truth = make_nerfstudio_dataset(tmp_path / "data", 4, style="blender")
    folder = truth["path"]
    missing = folder / "train" / "r_1.png"  # file_path "./train/r_1" + ".png"
    missing.unlink()
    source = NerfstudioSource(folder)  # images are only opened when loaded (but the first one)
    with pytest.raises(BadInput, match="no such file") as error:
        source.load(source.scan()[:1])
    assert error.value.path == missing

    rewrite_json(truth["transforms"]["val"], lambda m: m.pop("camera_angle_x"))
    with pytest.raises(BadInput, match="'./val/r_0': no focal length") as error:
        NerfstudioSource(folder)
    assert error.value.path == truth["transforms"]["val"]

    for file in truth["transforms"].values():
        file.unlink()
    with pytest.raises(BadInput, match="nor transforms_train.json") as error:
        NerfstudioSource(folder)
    assert error.value.path == folder / "transforms.json"
    with pytest.raises(BadInput, match="no such file or folder"):
        NerfstudioSource(tmp_path / "nowhere")
