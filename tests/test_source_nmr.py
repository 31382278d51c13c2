import io
import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import assert_bad_input, run_command
from fixtures.nmr import FOCAL, MARKER, NUM_VIEWS, make_nmr_dataset, make_variant
from scenetools import cameras
from scenetools.convert import convert
from scenetools.errors import BadInput
from scenetools.scenefile import SceneFile
from scenetools.sources.nmr import NMRSource

SIZE = 64
#: SRT's rot_mat: the y-up NMR world to a z-up one.
Y_UP_TO_Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
#: world_mat_0 and camera_mat_0 as stored in the real NMR_Dataset (every object has these).
REAL_WORLD_MAT_0 = np.array([[0.0, 0.0, -1.0, 0.0], [0.5, -0.86602539, 0.0, 0.0],
                             [-0.86602539, -0.49999997, 0.0, 2.73199987], [0.0, 0.0, 0.0, 1.0]])
REAL_CAMERA_MAT_0 = np.diag([3.7320509, 3.7320509, 1.0, 1.0])


def convert_cli(root, out, *args):
    result = run_command("convert", "--from", "nmr", root, out, *args)
    assert result.returncode == 0, result.stderr
    return SceneFile(out)


# DVR's camera maths, written out from its FAQ and im2mesh/common.py independently of
# scenetools: p_cam = camera_mat @ world_mat @ p_world; image points in [-1, 1]; images read
# with grid_sample (PyTorch 1.4: align_corners=False), so [-1, 1] spans the image edge to edge.

def dvr_normalised(point, world_mat, camera_mat):
    p = camera_mat @ world_mat @ np.append(point, 1.0)
    assert p[2] > 0
    return p[:2] / p[2]


def dvr_to_pixels(normalised, height=SIZE, width=SIZE):
    """grid_sample's align_corners=False: x = -1 is the left edge of column 0, +1 the right
    edge of the last column; y = -1 the top edge of row 0."""
    return (normalised + 1.0) * np.array([width, height]) / 2.0


def dvr_transform_to_world(normalised, depth, world_mat, camera_mat):
    """transform_to_world: (x, y, 1) * depth, 1 through inv(camera_mat), then inv(world_mat)."""
    pixel = np.append(np.append(normalised, 1.0) * depth, 1.0)
    return (np.linalg.inv(world_mat) @ np.linalg.inv(camera_mat) @ pixel)[:3]


def test_converts_pixels_cameras_names_and_splits(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 8)
    scenes = convert_cli(truth["root"], tmp_path / "out.h5")

    assert scenes.source == "nmr"
    assert list(scenes.names) == [s["name"] for s in truth["scenes"]]
    # softras lists, not DVR's own train/val/test.lst (which assign other splits)
    assert list(scenes.split_of) == ["train"] * 3 + ["val"] * 3 + ["test"] * 2
    assert list(scenes.categories) == ["airplane", "chair", "car"] * 2 + ["airplane", "chair"]
    assert [n.split("/")[0] for n in scenes.names] == ["02691156", "03001627", "02958343"] * 2 + ["02691156", "03001627"]
    assert scenes.view_count.tolist() == [24] * 8
    assert (scenes.height, scenes.width) == (64, 64) and scenes.fields == {}
    assert scenes.render_range == pytest.approx([2.0, 4.0])
    np.testing.assert_array_equal(scenes.near_far, np.tile([2.0, 4.0], (8, 1)))
    assert scenes.world_up == pytest.approx([0.0, 0.0, 1.0])
    assert scenes.source_info["classes"] == {"02691156": "airplane", "03001627": "chair", "02958343": "car"}

    f = FOCAL * 32
    expected_K = [np.array([[f, 0, 32], [0, f, 32], [0, 0, 1]])] * 2 + [
        np.array([[1.04 * f, 0, 1.06 * 32], [0, 0.97 * f, 0.91 * 32], [0, 0, 1]])]
    for s, expected in enumerate(truth["scenes"]):
        scene, variant = scenes.scene(s), truth["variants"][expected["variant"]]
        np.testing.assert_array_equal(scene.rgb, variant["rgb"])
        np.testing.assert_allclose(scene.intrinsics, np.broadcast_to(expected_K[expected["variant"]], (24, 3, 3)),
                                   atol=1e-4)
        # The marker pixel of every view is where our cameras project the marker point.
        uv, z = cameras.project(Y_UP_TO_Z_UP @ variant["point"], scene.intrinsics, scene.camera_to_world)
        assert (z > 0).all()
        for v in range(NUM_VIEWS):
            row, col = np.floor(uv[v, ::-1]).astype(int)
            assert (row, col) == tuple(variant["marker"][v])
            assert (scene.rgb[v, row, col] == MARKER).all()
            assert (scene.rgb[v] == MARKER).all(-1).sum() == 1

    # Real viewpoints: 2.732 from the origin, 30 degrees above the ground plane z = 0, looking
    # at the origin with the image's up pointing up the world.
    c2w = scenes.scene(0).camera_to_world
    azimuth = np.radians(15.0 * np.arange(24))
    centres = 2.732 * np.stack([np.cos(np.radians(30)) * np.cos(azimuth), -np.cos(np.radians(30)) * np.sin(azimuth),
                                np.full(24, np.sin(np.radians(30)))], -1)
    np.testing.assert_allclose(c2w[:, :3, 3], centres, atol=1e-5)
    np.testing.assert_allclose(c2w[:, :3, 2], -centres / 2.732, atol=1e-5)
    assert (c2w[:, 2, 1] < -0.8).all()  # image down is world down
    np.testing.assert_allclose(c2w[:, 2, 0], 0, atol=1e-6)  # no roll


def test_fixture_cameras_are_the_real_ones():
    variant = make_variant(0)
    np.testing.assert_allclose(variant["world_mat"][0], REAL_WORLD_MAT_0, atol=1e-6)
    np.testing.assert_allclose(variant["camera_mat"][0], REAL_CAMERA_MAT_0, atol=1e-6)


def test_exact_cameras_agree_with_dvr_projection(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 3)
    scenes = convert_cli(truth["root"], tmp_path / "out.h5")
    rng = np.random.default_rng(0)
    points = rng.uniform(-0.5, 0.5, (20, 3))  # DVR's objects fill the unit cube
    for s, expected in enumerate(truth["scenes"]):
        scene, variant = scenes.scene(s), truth["variants"][expected["variant"]]
        for v in range(NUM_VIEWS):
            world_mat, camera_mat = variant["world_mat"][v], variant["camera_mat"][v]
            ours, _ = cameras.project(points @ Y_UP_TO_Z_UP.T, scene.intrinsics[v], scene.camera_to_world[v])
            theirs = np.stack([dvr_to_pixels(dvr_normalised(p, world_mat, camera_mat)) for p in points])
            np.testing.assert_allclose(ours, theirs, atol=1e-4)

            # The ray through our pixel centre (j + 0.5, i + 0.5) is DVR's ray through the
            # normalised point ((2j + 1) / W - 1, (2i + 1) / H - 1).
            i, j = 9, 50
            normalised = np.array([(2 * j + 1) / SIZE - 1, (2 * i + 1) / SIZE - 1])
            on_ray = Y_UP_TO_Z_UP @ dvr_transform_to_world(normalised, 2.5, world_mat, camera_mat)
            centre = scene.camera_to_world[v, :3, 3]
            direction = cameras.rays_through(scene.intrinsics[v], scene.camera_to_world[v], np.array([[j + 0.5, i + 0.5]]))[0]
            distance = np.linalg.norm(on_ray - centre)
            np.testing.assert_allclose(centre + distance * direction, on_ray, atol=1e-5)


def rewrite_npz(path, change):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


def test_uniform_scale_in_world_mat_is_divided_out(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 1)
    source = NMRSource(truth["root"])
    before = source.load(source.scan())[0]

    def scale(arrays):
        for v in range(NUM_VIEWS):
            arrays[f"world_mat_{v}"][:3] *= 1.7  # x_cam scaled: the same image point
    rewrite_npz(truth["root"] / truth["scenes"][0]["name"] / "cameras.npz", scale)
    after = source.load(source.scan())[0]
    np.testing.assert_allclose(after.camera_to_world, before.camera_to_world, atol=1e-12)
    np.testing.assert_array_equal(after.intrinsics, before.intrinsics)


def test_rgba_images_are_composited_onto_white(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 2, rgba=True)
    source = NMRSource(truth["root"])
    for scene, expected in zip(source.load(source.scan()), truth["scenes"]):
        np.testing.assert_array_equal(scene.rgb, truth["variants"][expected["variant"]]["rgb"])
        assert (scene.rgb[:, 0, 0] == 255).all()


def test_split_limit_and_pickling(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 9)
    source = pickle.loads(pickle.dumps(NMRSource(truth["root"])))
    out = convert(source, tmp_path / "out.h5", splits=["val", "test"], limit=2)
    scenes = SceneFile(out)
    expected = [s["name"] for s in truth["scenes"] if s["split"] == "val"][:2] + \
        [s["name"] for s in truth["scenes"] if s["split"] == "test"][:2]
    assert list(scenes.names) == expected
    assert list(scenes.split_of) == ["val", "val", "test", "test"]


# ----------------------------------------------------------------------------- bad input

def break_metadata(root, scene):
    (root / "metadata.yaml").unlink()
    return root / "metadata.yaml"


def break_image(root, scene):
    image = root / scene / "image" / "0005.png"
    image.unlink()
    return image


def truncate_png(root, scene):
    image = root / scene / "image" / "0017.png"
    image.write_bytes(image.read_bytes()[:150])
    return image


def drop_camera_key(root, scene):
    path = root / scene / "cameras.npz"
    rewrite_npz(path, lambda arrays: arrays.pop("camera_mat_3"))
    return [path, "camera_mat_3"]


def list_missing_object(root, scene):
    synset = scene.split("/")[0]
    with open(root / synset / "softras_val.lst", "a") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    return [root / synset / "0123456789abcdef0123456789abcdef", "softras_val.lst"]


@pytest.mark.parametrize("damage", [break_metadata, break_image, truncate_png, drop_camera_key, list_missing_object])
def test_bad_input_through_the_cli(tmp_path, damage):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 3)
    names = damage(truth["root"], truth["scenes"][-1]["name"])
    out = tmp_path / "out.h5"
    assert_bad_input(run_command("convert", "--from", "nmr", truth["root"], out), names, out)


def shear_world_mat(arrays):
    arrays["world_mat_7"][0, 1] += 0.2


def skew_camera_mat(arrays):
    arrays["camera_mat_2"][0, 1] = 0.1


def mirror_world_mat(arrays):
    arrays["world_mat_0"][0] *= -1


def nan_camera_mat(arrays):
    arrays["camera_mat_5"][0, 0] = np.nan


@pytest.mark.parametrize("change, message", [
    (shear_world_mat, "world_mat_7 is not a world-to-camera transform"),
    (mirror_world_mat, "world_mat_0 is not a world-to-camera transform"),
    (skew_camera_mat, "camera_mat_2 is not a pinhole"),
    (nan_camera_mat, "camera_mat_5 has NaN"),
])
def test_bad_camera_matrices(tmp_path, change, message):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 1)
    path = truth["root"] / truth["scenes"][0]["name"] / "cameras.npz"
    rewrite_npz(path, change)
    source = NMRSource(truth["root"])
    with pytest.raises(BadInput, match=message) as error:
        source.load(source.scan())
    assert error.value.path == path


def test_bad_layouts(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 3)
    root = truth["root"]
    metadata = (root / "metadata.yaml").read_text()

    (root / "metadata.yaml").write_text("02691156: {name: airplane\n")
    with pytest.raises(BadInput, match="malformed YAML") as error:
        NMRSource(root)
    assert error.value.path == root / "metadata.yaml"
    (root / "metadata.yaml").write_text("02691156: {name: airplane}\n")
    with pytest.raises(BadInput, match="has no 'id'"):
        NMRSource(root)
    (root / "metadata.yaml").write_text(metadata)

    (root / "02958343" / "softras_test.lst").unlink()
    with pytest.raises(BadInput, match="no such file") as error:
        NMRSource(root)
    assert error.value.path == root / "02958343" / "softras_test.lst"

    with pytest.raises(BadInput, match="no such folder"):
        NMRSource(tmp_path / "elsewhere")


def test_wrong_image_size(tmp_path):
    truth = make_nmr_dataset(tmp_path / "NMR_Dataset", 1)
    image = truth["root"] / truth["scenes"][0]["name"] / "image" / "0011.png"
    Image.new("RGB", (32, 32)).save(image)
    source = NMRSource(truth["root"])
    with pytest.raises(BadInput, match="image is 32x32, expected 64x64") as error:
        source.load(source.scan())
    assert error.value.path == image
