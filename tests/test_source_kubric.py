import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")

from conftest import assert_bad_input, run_command  # noqa: E402
from fixtures.kubric import (DOME_RADIUS, LABELS, VERSIONS, as_json_feature_style, features_json,  # noqa: E402
                             make_kubric_dataset)
from scenetools import cameras  # noqa: E402
from scenetools.convert import convert  # noqa: E402
from scenetools.errors import BadInput  # noqa: E402
from scenetools.scenefile import SceneFile  # noqa: E402
from scenetools.sources import kubric  # noqa: E402
from scenetools.sources.kubric import KubricSource  # noqa: E402

SIZE = 16


@pytest.fixture(scope="module")
def msn_hard(tmp_path_factory):
    """MSN-hard (2.8.0) layout: 7 scenes over train/val/test, 2 shards per split."""
    return make_kubric_dataset(tmp_path_factory.mktemp("kubric"), 7, version="2.8.0", size=SIZE)


def expected_instance(raw):
    """OSRT's reading: raw 0 and 1 are background, raw k >= 2 is object k - 1."""
    return np.where(raw <= 1, 0, raw.astype(np.int64) - 1)


# sunds' own camera maths, written out from sunds/core/tf_geometry/{cameras,isometry,rays}.py
# and sunds/tasks/nerf.py, independently of scenetools: scene_from_camera = pose *
# extrinsics^-1; PinholeCamera.project is K x / z in continuous image coordinates whose
# top-left corner is (0, 0); rays go through the pixel centres (j + 0.5, i + 0.5).

def sunds_project(point, pose, extrinsics, K):
    frame_point = pose[:3, :3].T @ (point - pose[:3, 3])  # scene -> frame
    x = extrinsics[:3, :3] @ frame_point + extrinsics[:3, 3]  # frame -> camera
    image = K @ x
    return image[:2] / image[2], x[2]


def sunds_rays(pose, extrinsics, K, height, width):
    """(origin [3], unit directions [H, W, 3]) as sunds' rays_from_image_grid."""
    R_cf, t_cf = extrinsics[:3, :3], extrinsics[:3, 3]
    R_sc = pose[:3, :3] @ R_cf.T  # scene_from_frame * camera_from_frame.inverse()
    t_sc = pose[:3, :3] @ (-R_cf.T @ t_cf) + pose[:3, 3]
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5, indexing="xy")
    cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    cam /= np.linalg.norm(cam, axis=-1, keepdims=True)
    points = cam @ R_sc.T + t_sc
    dirs = points - t_sc
    return t_sc, dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def test_msn_hard_converts_pixels_depth_masks_labels_names_and_splits(msn_hard, tmp_path):
    out = tmp_path / "msn_hard.h5"
    result = run_command("convert", "--from", "kubric", msn_hard["path"], out, "--workers", "2")
    assert result.returncode == 0, result.stderr
    scenes = SceneFile(out)
    truth = msn_hard["scenes"]

    assert scenes.source == "kubric:kubric_frames/multi_shapenet_conditional/2.8.0"
    assert list(scenes.names) == [s["name"] for s in truth]
    assert list(scenes.names)[:3] == ["train/scene_1", "train/scene_2", "train/scene_0"]  # shard order
    assert list(scenes.split_of) == ["train"] * 3 + ["val"] * 2 + ["test"] * 2
    assert scenes.view_count.tolist() == [10] * 7 and (scenes.height, scenes.width) == (SIZE, SIZE)
    assert scenes.fields == {"depth": "float32", "instance": "uint8", "semantic": "uint8"}
    assert list(scenes.semantic_classes) == ["background"] + LABELS
    assert list(scenes.world_up) == [0.0, 0.0, 1.0]
    assert scenes.render_range == pytest.approx([0.0, 20.0])
    np.testing.assert_array_equal(scenes.near_far, np.tile([0.0, 20.0], (7, 1)))
    assert list(scenes.categories) == [""] * 7
    info = scenes.source_info
    assert (info["dataset"], info["config"]) == ("kubric_frames", "multi_shapenet_conditional")
    assert info["version"] == "2.8.0" and info["images"] == ["color_image", "depth_image", "instance_image",
                                                             "category_image"]
    assert info["scenes"] == {"train": 3, "val": 2, "test": 2}

    pool, K = msn_hard["pool"], msn_hard["K"]
    assert K[0, 0] == pytest.approx(SIZE * 35 / 32) and K[0, 2] == SIZE / 2
    for s, expected in enumerate(truth):
        scene = scenes.scene(s)
        for v in range(10):
            np.testing.assert_array_equal(scene.rgb[v], pool["color"][expected["color"][v]]["array"])
            np.testing.assert_array_equal(scene.semantic[v], pool["category"][expected["category"][v]]["array"])
            raw = pool["instance"][expected["instance"][v]]["array"]
            np.testing.assert_array_equal(scene.instance[v], expected_instance(raw))
        # depth is already a distance along the ray: stored bit for bit
        np.testing.assert_array_equal(scene.depth, msn_hard["depth"][expected["rig"]])
        np.testing.assert_allclose(scene.camera_to_world, expected["camera_to_world"], atol=2e-6)
        np.testing.assert_array_equal(scene.intrinsics, np.broadcast_to(K.astype(np.float32), (10, 3, 3)))
    raw = pool["instance"][0]["array"]
    assert raw[0, 0] == 0 and (raw == 1).any() and raw.max() >= 6  # every kind of raw id is exercised
    instance = scenes.scene(0).instance[truth[0]["instance"].index(0)]
    assert instance[0, 0] == 0 and instance[raw == 1].max() == 0 and instance.max() == raw.max() - 1


def test_msn_2_3_3_legacy_features_parent_folder_and_validation_split(tmp_path):
    truth = make_kubric_dataset(tmp_path / "msn", 5, version="2.3.3", size=SIZE,
                                splits=("train", "validation", "test"), shards_per_split=1)
    (truth["parent"] / "1.0.0").mkdir()  # an older, incomplete version next to it
    test_shard = truth["path"] / "multi_shapenet_frames-test.tfrecord-00000-of-00001"
    test_shard.rename(truth["path"] / "msn-test.tfrecord-00000-of-00001")  # copied under another name
    source = KubricSource(truth["parent"])
    assert source.folder == truth["path"]
    assert json.loads((truth["path"] / "features.json").read_text())["type"].endswith("FeaturesDict")

    scenes = SceneFile(convert(source, tmp_path / "msn.h5", codec="png"))
    assert scenes.source == "kubric:multi_shapenet_frames/2.3.3"
    assert scenes.fields == {"semantic": "uint8"} and scenes.semantic_classes is None
    assert list(scenes.names) == [s["name"] for s in truth["scenes"]]
    assert list(scenes.split_of) == ["train", "train", "val", "val", "test"]
    assert list(scenes.names)[2:4] == ["val/scene_1", "val/scene_0"]
    scene = scenes.scene(3)
    expected = truth["scenes"][3]
    np.testing.assert_array_equal(scene.rgb, [truth["pool"]["color"][k]["array"] for k in expected["color"]])
    np.testing.assert_array_equal(scene.semantic, [truth["pool"]["category"][k]["array"]
                                                   for k in expected["category"]])
    assert scene.depth is None and scene.instance is None
    np.testing.assert_allclose(scene.camera_to_world, expected["camera_to_world"], atol=2e-6)


def test_cameras_match_sunds_projection_rays_and_depth_exactly(msn_hard, tmp_path):
    scenes = SceneFile(convert(KubricSource(msn_hard["path"]), tmp_path / "out.h5", codec="raw"))
    points = np.array([[0.0, 0.0, 0.0], [1.2, -0.8, 0.5], [-1.5, 1.0, 1.0], [0.5, 1.5, 0.2]])
    checked = 0
    for s, expected in enumerate(msn_hard["scenes"]):
        data = scenes.read_views(s, fields=("camera_to_world", "intrinsics", "depth"))
        pose = expected["pose"]
        assert np.allclose(pose, np.eye(4)) == (s % 2 == 0)  # odd scenes have a non-identity frame pose
        for v in range(10):
            K, c2w, extrinsics = data["intrinsics"][v], data["camera_to_world"][v], expected["extrinsics"][v]
            for point in points:
                ours, z = cameras.project(point, K, c2w)
                reference, z_ref = sunds_project(point, pose, extrinsics, msn_hard["K"])
                assert z > 0 and (0 < ours).all() and (ours < SIZE).all()
                np.testing.assert_allclose(ours, reference, atol=1e-4)
                assert z == pytest.approx(z_ref, abs=1e-4)
                # the ray through that image point passes through the point
                direction = cameras.rays_through(K, c2w, ours[None])[0]
                offset = point - c2w[:3, 3]
                np.testing.assert_allclose(np.cross(direction, offset / np.linalg.norm(offset)), 0, atol=1e-5)
                checked += 1
            origin, rays = sunds_rays(pose, extrinsics, msn_hard["K"], SIZE, SIZE)
            np.testing.assert_allclose(c2w[:3, 3], origin, atol=1e-4)
            np.testing.assert_allclose(cameras.ray_directions(K, c2w, SIZE, SIZE), rays, atol=1e-5)
            # depth along our rays lands on the floor z = 0 wherever a pixel sees the floor
            hits = c2w[:3, 3] + data["depth"][v][..., None] * cameras.ray_directions(K, c2w, SIZE, SIZE)
            floor = data["depth"][v] < DOME_RADIUS - np.linalg.norm(c2w[:3, 3])  # nearer than any dome point
            assert floor.mean() > 0.3
            np.testing.assert_allclose(hits[floor][:, 2], 0, atol=2e-4)
    assert checked == 7 * 10 * len(points)


def test_scan_finds_every_record_and_its_scene_name_by_seeking(msn_hard):
    source = KubricSource(msn_hard["path"])
    refs = source.scan()
    assert [r.name for r in refs] == [s["name"] for s in msn_hard["scenes"]]
    for ref, expected in zip(refs, msn_hard["scenes"]):
        shard, index, offset, length = ref.key
        assert msn_hard["path"] / shard == expected["shard"]
        with open(expected["shard"], "rb") as f:
            f.seek(offset)
            example = tf.train.Example.FromString(f.read(length))
        assert example.features.feature["scene_name"].bytes_list.value[0].decode() == expected["scene_name"]
    # a record whose scene_name comes after large features is found all the same
    example = tf.train.Example()
    example.features.feature["cameras/camera_0/color_image"].bytes_list.value.append(b"x" * 10000)
    example.features.feature["pose/R"].float_list.value.extend([1.0] * 9)
    example.features.feature["scene_name"].bytes_list.value.append(b"scene_42")
    data = example.SerializeToString()

    class Bytes:
        def seek(self, pos):
            self.pos = pos

        def read(self, n):
            return data[self.pos:self.pos + n]

    assert kubric._bytes_feature(kubric._Window(Bytes()), 0, len(data), b"scene_name") == b"scene_42"
    assert kubric._bytes_feature(kubric._Window(Bytes()), 0, len(data), b"frame_name") is None
    # the source pickles (it goes to worker processes) and loads the same from a copy
    copy = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(copy.load(refs[4:5])[0].rgb, source.load(refs[4:5])[0].rgb)


def test_three_features_json_styles_read_the_same_and_open_image_size(tmp_path):
    spec = VERSIONS["2.8.0"]
    styles = {}
    for style in ("legacy", "proto", "json"):
        path = tmp_path / f"{style}.json"
        data = features_json(spec, 10, SIZE, "legacy" if style == "json" else style)
        path.write_text(json.dumps(as_json_feature_style(data) if style == "json" else data))
        styles[style] = kubric.read_features(path)
    assert styles["legacy"] == styles["proto"] == styles["json"]
    assert styles["proto"]["cameras/camera_9/depth_image"] == kubric.Feature("image", (SIZE, SIZE, 1), "float32")
    assert styles["proto"]["cameras/camera_0/category_image"].num_classes == len(LABELS)
    layout = kubric.camera_layout(styles["json"], tmp_path / "json.json")
    assert layout["cameras"] == [f"camera_{i}" for i in range(10)] and layout["size"] == (SIZE, SIZE)
    assert set(layout["optional"]) >= {"depth_image", "instance_image", "category_image"}

    # features.json with unknown image dimensions: the size comes from the first record
    truth = make_kubric_dataset(tmp_path / "open", 3, version="2.8.0", size=24, known_shape=False,
                                features_style="json")
    source = KubricSource(truth["path"])
    assert (source.info.height, source.info.width) == (24, 24)
    np.testing.assert_array_equal(source.load(source.scan()[:1])[0].depth, truth["depth"][0])


def test_version_folder_is_the_highest_and_tensorflow_is_imported_only_when_needed(tmp_path, monkeypatch):
    for version in ("2.9.0", "2.10.0", "2.10.0.incomplete"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "dataset_info.json").write_text("{}")
    assert kubric.find_version_folder(tmp_path) == tmp_path / "2.10.0"
    # without tensorflow, loading names the extra to install
    kubric._tensorflow.cache_clear()
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(BadInput, match=r"pip install scenetools\[kubric\]"):
        kubric._tensorflow()
    with pytest.raises(BadInput, match=r"pip install scenetools\[kubric\]"):
        kubric._require_tensorflow()
    monkeypatch.undo()
    kubric._tensorflow.cache_clear()


# ----------------------------------------------------------------------------- bad input

def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _shard(truth, split="train", index=0):
    return next(s["shard"] for s in truth["scenes"] if s["split"] == split and s["shard"].name.endswith(
        f"-{index:05d}-of-00002"))


def _truncate(path, cut):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut])


def _drop_color(data):
    del data["featuresDict"]["features"]["cameras"]["featuresDict"]["features"]["camera_3"]["featuresDict"][
        "features"]["color_image"]


def _flip_length(path):
    data = bytearray(path.read_bytes())
    data[1] ^= 0x01
    path.write_bytes(bytes(data))


BREAKERS = {
    # name: (break the dataset, the names the error must contain)
    "missing dataset_info.json": (lambda t: (t["path"] / "dataset_info.json").unlink(), ["dataset_info.json"]),
    "missing features.json": (lambda t: (t["path"] / "features.json").unlink(), ["features.json"]),
    "malformed dataset_info.json": (lambda t: (t["path"] / "dataset_info.json").write_text("{\"splits\": ["),
                                    ["dataset_info.json", "malformed JSON"]),
    "unknown feature layout": (lambda t: _edit_json(t["path"] / "features.json", _drop_color),
                               ["features.json", "unknown feature layout", "camera_3"]),
    "missing shard": (lambda t: _shard(t, "test", 1).unlink(), ["kubric_frames-test.tfrecord-00001-of-00002"]),
    "truncated TFRecord": (lambda t: _truncate(_shard(t, "val", 1), 100),
                           ["kubric_frames-val.tfrecord-00001-of-00002", "truncated TFRecord"]),
    "record count": (lambda t: _edit_json(t["path"] / "dataset_info.json",
                                          lambda d: d["splits"][0]["shardLengths"].__setitem__(0, "5")),
                     ["kubric_frames-train.tfrecord-00000-of-00002", "dataset_info.json says 5"]),
    "bad length checksum": (lambda t: _flip_length(_shard(t, "train", 1)),
                            ["kubric_frames-train.tfrecord-00001-of-00002", "corrupt TFRecord"]),
}


@pytest.mark.parametrize("breaker", list(BREAKERS))
def test_bad_input_is_one_line_naming_the_file(tmp_path, breaker):
    truth = make_kubric_dataset(tmp_path / "d", 7, version="2.8.0", size=SIZE)
    damage, names = BREAKERS[breaker]
    damage(truth)
    out = tmp_path / "out.h5"
    assert_bad_input(run_command("convert", "--from", "kubric", truth["path"], out), names, out)


def test_corrupt_png_inside_a_record_names_the_shard_record_and_feature(tmp_path):
    truth = make_kubric_dataset(tmp_path / "d", 5, version="2.8.0", size=SIZE, broken_png_scene=1)
    broken = truth["scenes"][1]
    out = tmp_path / "out.h5"
    result = run_command("convert", "--from", "kubric", truth["path"], out)
    assert_bad_input(result, [broken["shard"].name, broken["name"], "cameras/camera_0/color_image", "PNG"], out)


def test_without_tensorflow_the_command_names_the_extra_to_install(msn_hard, tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['tensorflow'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / "out.h5"
    result = subprocess.run([sys.executable, "-m", "scenetools.cli.convert", "--from", "kubric",
                             str(msn_hard["path"]), str(out)], capture_output=True, text=True, env=env)
    assert_bad_input(result, ["pip install scenetools[kubric]", "tensorflow"], out)
