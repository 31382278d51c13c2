"""scene-render --outputs semantic and pointcloud, with a model whose depth, colours and
classes are known in closed form (tiny_model.PlaneClassesModel: the plane z = 0, class 1
where x > 0, class 2 where x <= 0). The PLY files are parsed here, independently of the writer."""
import os
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import processes
import tiny_model
from scenetools import camera_paths, cameras
from scenetools import checkpoint as ckpt
from scenetools import config as configs
from scenetools.framestream import read_folder, read_stream
from scenetools.render import legend_names
from scenetools.scenefile import Scene, SceneFile, SceneWriter
from scenetools.visualize import WHITE, label_palette, legend

TESTS = Path(__file__).parent
CLASSES = ["background", "east", "west"]
NEAR, FAR = 0.5, 12.0
H, W = 40, 48
K = cameras.intrinsics(30.0, 30.0, W / 2, H / 2)
# Cameras above the plane looking down at it: their top rows miss it (background), some of
# their hits lie beyond FAR, and the line x = 0 crosses both images.
EYES_AND_TARGETS = [((1.0, -6.0, 3.0), (0.0, 0.0, 0.0)), ((-2.0, 5.0, 2.5), (0.5, 0.0, 0.0))]


def plane_truth(c2w, K):
    """What PlaneClassesModel sees through each pixel centre, computed here from K and c2w:
    (depth [H, W], points [H, W, 3], labels [H, W], rgb uint8 [H, W, 3])."""
    v, u = np.meshgrid(np.arange(H) + 0.5, np.arange(W) + 0.5, indexing="ij")
    camera = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    rays = camera @ c2w[:3, :3].T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    eye = c2w[:3, 3]
    with np.errstate(divide="ignore"):
        depth = np.where(rays[..., 2] < 0, -eye[2] / rays[..., 2], np.inf)
    points = eye + np.where(np.isfinite(depth), depth, 0)[..., None] * rays
    labels = np.where(np.isfinite(depth), np.where(points[..., 0] > 0, 1, 2), 0)
    rgb = np.stack([0.5 + points[..., 0] / 8, 0.5 + points[..., 1] / 8, np.full_like(depth, 0.25)], -1)
    rgb = np.where(np.isfinite(depth)[..., None], np.clip(rgb, 0, 1), 1.0)
    return depth, points, labels, (rgb * 255 + 0.5).astype(np.uint8)


def read_ply(path):
    """(header lines, structured vertex array) of a binary little-endian PLY."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"], header
    count = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    types = {"float": "<f4", "uchar": "u1", "ushort": "<u2"}
    dtype = np.dtype([(line.split()[2], types[line.split()[1]]) for line in header if line.startswith("property")])
    assert len(data) - end == count * dtype.itemsize
    return header, np.frombuffer(data[end:], dtype)


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    """A folder with a scene file naming the classes, checkpoints of PlaneClassesModel and of
    TinyModel (depth, no classes), and a camera path of the two known cameras."""
    folder = tmp_path_factory.mktemp("plane")
    c2w = np.stack([cameras.look_at(eye, target) for eye, target in EYES_AND_TARGETS])
    rgb = np.random.default_rng(0).integers(0, 255, (2, H, W, 3), dtype=np.uint8)
    with SceneWriter(folder / "plane.h5", height=H, width=W, source="test", render_range=(NEAR, FAR),
                     attrs={"semantic_classes": CLASSES}) as writer:
        writer.add(Scene(name="plane", split="val", rgb=rgb, camera_to_world=c2w.astype(np.float32),
                         intrinsics=np.stack([K, K]).astype(np.float32)))
    config = {"model": {}, "data": configs.merge(configs.DEFAULTS["data"], {"num_inputs": 1})}
    preview = ckpt.preview(SceneFile(folder / "plane.h5"), 0)
    ckpt.save(folder / "plane.pt", model_name="tiny-plane", config=config, model=tiny_model.PlaneClassesModel(),
              step=0, preview=preview)
    ckpt.save(folder / "tiny.pt", model_name="tiny", config={**config, "model": {"hidden": 4}},
              model=tiny_model.TinyModel(hidden=4), step=0, preview=preview)
    camera_paths.save_camera_path([(c, K) for c in c2w], H, W, 30, folder / "path.json")
    return folder, c2w


def render(folder, *args):
    env = dict(os.environ, SCENETOOLS_PLUGINS="tiny_model",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return processes.run([sys.executable, "-m", "scenetools.cli.render", *args, "--motion", "path", "--path",
                          folder / "path.json"], env=env, cwd=folder)


def expected_cloud(c2w):
    """The points, colours and labels a camera's PLY holds, in pixel order."""
    depth, points, labels, rgb = plane_truth(c2w, K)
    keep = np.isfinite(depth) & (depth >= NEAR) & (depth <= FAR)
    assert keep.sum() > 100 and (~keep & np.isfinite(depth)).sum() > 10 and (~np.isfinite(depth)).sum() > 10
    assert np.all(np.abs(depth[np.isfinite(depth)] - FAR) > 1e-3)  # no ray on the edge of the range
    return points[keep], rgb[keep], labels[keep]


def check_cloud(vertices, clouds):
    points, rgb, labels = (np.concatenate(parts) for parts in zip(*clouds))
    assert len(vertices) == len(points)
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], -1).astype(np.float64)
    np.testing.assert_allclose(xyz, points, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(xyz[:, 2], 0, atol=1e-4)  # on the plane
    colours = np.stack([vertices["red"], vertices["green"], vertices["blue"]], -1).astype(int)
    assert np.abs(colours - rgb).max() <= 1
    clear = np.abs(points[:, 0]) > 1e-3  # off the class boundary x = 0
    assert set(labels[clear]) == {1, 2}
    np.testing.assert_array_equal(vertices["label"][clear], labels[clear])


def test_merged_point_cloud_holds_camera_plus_depth_times_ray_with_colours_and_labels(plane, tmp_path):
    folder, c2w = plane
    result = render(folder, "plane.pt", "--outputs", "rgb,semantic,pointcloud", "-o", tmp_path / "frames")
    assert result.returncode == 0, result.stderr
    header, vertices = read_ply(tmp_path / "frames" / "pointcloud.ply")
    assert [line for line in header if line.startswith("property")] == [
        "property float x", "property float y", "property float z", "property uchar red",
        "property uchar green", "property uchar blue", "property uchar label"]
    assert "comment label 1 east" in header and "comment label 2 west" in header
    check_cloud(vertices, [expected_cloud(c) for c in c2w])
    assert not list(tmp_path.rglob(".*partial*"))


def test_per_frame_point_clouds_beside_a_frame_stream(plane, tmp_path):
    folder, c2w = plane
    result = processes.run(["sh", "-c", f"{sys.executable} -m scenetools.cli.render plane.pt --motion path --path "
                            f"path.json --outputs semantic,pointcloud --pointcloud per-frame --pointcloud-out "
                            f"{tmp_path / 'clouds'} -o - > {tmp_path / 'stream'}"], cwd=folder,
                           env=dict(os.environ, SCENETOOLS_PLUGINS="tiny_model",
                                    PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "stream", "rb") as stream:
        frames = list(read_stream(stream))
    assert [(meta["output"], meta["frame"]) for meta, _ in frames] == [("semantic", 0), ("semantic", 1)]
    assert sorted(p.name for p in (tmp_path / "clouds").iterdir()) == ["00000.ply", "00001.ply"]
    for k, camera in enumerate(c2w):
        header, vertices = read_ply(tmp_path / "clouds" / f"{k:05d}.ply")
        assert f"comment frame {k}" in header
        check_cloud(vertices, [expected_cloud(camera)])


def test_semantic_frames_show_each_class_in_its_colour_with_a_legend_of_the_file_s_names(plane, tmp_path):
    folder, c2w = plane
    result = render(folder, "plane.pt", "--data", "plane.h5", "--outputs", "semantic", "-o", tmp_path / "frames")
    assert result.returncode == 0, result.stderr
    palette = label_palette(3, WHITE)
    assert palette[0].tolist() == [255, 255, 255] and len({tuple(c) for c in palette}) == 3
    np.testing.assert_array_equal(palette[1:], label_palette(8)[1:3])  # one colour per class id
    for k, camera in enumerate(c2w):
        frame = iio.imread(tmp_path / "frames" / "semantic" / f"{k:05d}.png")
        depth, points, labels, _ = plane_truth(camera, K)
        clear = ~np.isfinite(depth) | (np.abs(points[..., 0]) > 1e-3)
        assert set(np.unique(labels[clear])) == {0, 1, 2}
        np.testing.assert_array_equal(frame[:H, :W][clear], palette[labels[clear]])
        np.testing.assert_array_equal(frame[:, W:], legend(CLASSES, palette, H))
    assert not np.array_equal(legend(CLASSES, palette, H), legend(["background", "west", "east"], palette, H))
    assert read_folder(tmp_path / "frames") == ({"semantic": sorted((tmp_path / "frames" / "semantic").iterdir())}, 2)


def test_classes_without_names_are_called_class_k():
    assert legend_names(None, 3) == ["class 0", "class 1", "class 2"]
    assert legend_names(["background", "seat"], 3) == ["background", "seat", "class 2"]


def test_the_legend_has_a_swatch_and_a_name_per_class():
    palette = label_palette(5, WHITE)
    tall = legend([f"class {k}" for k in range(5)], palette, 64)
    wide = legend([f"class {k}" for k in range(5)], palette, 30)  # two rows per column
    assert tall.shape[0] == 64 and wide.shape[0] == 30 and wide.shape[1] > 2 * tall.shape[1] > 0
    for k, colour in enumerate(palette):  # swatch k's centre, then its name to the right
        y = 3 + 12 * k + 4
        assert tall[y, 3 + 4].tolist() == colour.tolist() and tall[y, 3].tolist() == [128, 128, 128]
        assert (tall[3 + 12 * k:3 + 12 * k + 10, 16:].max(-1) < 100).any()  # dark text pixels
        assert (tall[3 + 12 * k:3 + 12 * k + 10, 16:] != 255).sum() > 10


def test_a_point_cloud_without_classes_has_no_label(plane, tmp_path):
    """TinyModel puts every surface at depth far: its points lie FAR from the camera."""
    folder, c2w = plane
    out = tmp_path / "cloud.ply"
    result = render(folder, "tiny.pt", "--outputs", "pointcloud", "-o", tmp_path / "frames", "--pointcloud-out", out)
    assert result.returncode == 0, result.stderr
    header, vertices = read_ply(out)
    assert "label" not in vertices.dtype.names and len(vertices) == 2 * H * W
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], -1).reshape(2, H * W, 3)
    np.testing.assert_allclose(np.linalg.norm(xyz - c2w[:, None, :3, 3], axis=-1), FAR, rtol=1e-5)
    assert not (tmp_path / "frames" / "pointcloud.ply").exists()


def test_point_cloud_options_are_checked_before_rendering(plane, tmp_path):
    folder, _ = plane
    stream = render(folder, "plane.pt", "--outputs", "pointcloud", "-o", "-")
    assert stream.returncode == 2 and len(stream.stderr.strip().splitlines()) == 1
    assert "--pointcloud-out" in stream.stderr
    (tmp_path / "taken.ply").write_bytes(b"x")
    taken = render(folder, "plane.pt", "--outputs", "pointcloud", "--pointcloud-out", tmp_path / "taken.ply",
                   "-o", tmp_path / "f")
    assert taken.returncode == 2 and "--overwrite" in taken.stderr and (tmp_path / "taken.ply").read_bytes() == b"x"
    lone = render(folder, "plane.pt", "--pointcloud-out", tmp_path / "x.ply", "-o", tmp_path / "f")
    assert lone.returncode == 2 and "--outputs pointcloud" in lone.stderr
    semantic = render(folder, "tiny.pt", "--outputs", "rgb,semantic", "-o", tmp_path / "f")
    assert semantic.returncode == 2 and "does not predict semantic" in semantic.stderr
    assert not (tmp_path / "f").exists()
