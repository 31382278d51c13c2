import h5py
import numpy as np
import pytest

from scenetools import cameras
from scenetools.errors import BadInput
from scenetools.scenefile import Scene, SceneFile, SceneWriter, validate_file, write_index
from conftest import run_command

H, W = 6, 8
FIELDS = {"depth": "float32", "instance": "uint8", "semantic": "uint16"}


def make_scene(rng, name, views, split="train"):
    eyes = rng.normal(size=(views, 3)) * 3 + [0, 0, 5]
    c2w = cameras.look_at(eyes, np.zeros(3))
    K = np.broadcast_to(cameras.intrinsics(7.0, 7.5, W / 2, H / 2), (views, 3, 3)).copy()
    depth = rng.uniform(0.5, 9.0, (views, H, W)).astype(np.float32)
    depth[:, 0, 0] = np.inf  # no surface
    depth[:, 0, 1] = 0.0  # unknown
    return Scene(name=name, split=split, rgb=rng.integers(0, 256, (views, H, W, 3), dtype=np.uint8),
                 camera_to_world=c2w, intrinsics=K, depth=depth,
                 instance=rng.integers(0, 5, (views, H, W), dtype=np.uint8),
                 semantic=rng.integers(0, 1000, (views, H, W)).astype(np.uint16),
                 near_far=(0.5, 9.0), category="chair")


def write(path, scenes, codec):
    with SceneWriter(path, height=H, width=W, source="test", render_range=(0.1, 10.0), codec=codec,
                     fields=FIELDS, attrs={"semantic_classes": ["a", "b"], "world_up": [0, 0, 1]}) as writer:
        for scene in scenes:
            writer.add(scene)


def assert_same(scene, read):
    assert read.name == scene.name and read.split == scene.split and read.category == scene.category
    np.testing.assert_array_equal(read.rgb, scene.rgb)
    np.testing.assert_allclose(read.camera_to_world, scene.camera_to_world, atol=1e-6)
    np.testing.assert_allclose(read.intrinsics, scene.intrinsics, atol=1e-6)
    np.testing.assert_array_equal(read.depth, scene.depth)  # bit-exact, inf and 0 included
    np.testing.assert_array_equal(read.instance, scene.instance)
    np.testing.assert_array_equal(read.semantic, scene.semantic)
    assert read.near_far == pytest.approx(scene.near_far)


@pytest.mark.parametrize("codec", ["raw", "png"])
def test_round_trip(tmp_path, codec):
    rng = np.random.default_rng(0)
    scenes = [make_scene(rng, f"s{i}", views, split) for i, (views, split) in
              enumerate([(3, "train"), (24, "train"), (5, "val"), (2, "test")])]
    path = tmp_path / "scenes.h5"
    write(path, scenes, codec)
    read = SceneFile(path)
    assert (read.num_scenes, read.num_views, read.height, read.width) == (4, 34, H, W)
    assert read.codecs == {name: codec for name in ["rgb", *FIELDS]}
    assert read.fields == FIELDS
    assert {k: v.tolist() for k, v in read.splits().items()} == {"train": [0, 1], "val": [2], "test": [3]}
    assert read.semantic_classes == ["a", "b"] and list(read.render_range) == [0.1, 10.0]
    for i, scene in enumerate(scenes):
        assert_same(scene, read.scene(i))
    some = read.read_views(1, [7, 2], ("rgb", "depth"))  # any order of views
    np.testing.assert_array_equal(some["rgb"], scenes[1].rgb[[7, 2]])
    assert not list(tmp_path.glob(".*partial*"))


def test_sharded_index_reads_like_one_file(tmp_path):
    rng = np.random.default_rng(1)
    scenes = [make_scene(rng, f"s{i}", 2 + i % 3) for i in range(5)]
    write(tmp_path / "out-00000.h5", scenes[:3], "png")
    write(tmp_path / "out-00001.h5", scenes[3:], "png")
    write_index(tmp_path / "out.h5", [tmp_path / "out-00000.h5", tmp_path / "out-00001.h5"])
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in tmp_path.glob("out*.h5"):  # shard paths are relative: the set can move
        f.rename(moved / f.name)
    read = SceneFile(moved / "out.h5")
    assert read.num_scenes == 5 and read.attrs["shards"] == ["out-00000.h5", "out-00001.h5"]
    for i, scene in enumerate(scenes):
        assert_same(scene, read.scene(i))
    (moved / "out-00001.h5").unlink()
    with pytest.raises(BadInput, match="missing shard out-00001.h5"):
        SceneFile(moved / "out.h5")


@pytest.mark.parametrize("breakage, message", [
    (lambda s: setattr(s, "rgb", s.rgb.astype(np.float32)), "rgb has dtype float32"),
    (lambda s: setattr(s, "rgb", s.rgb[:, :, :-1]), "rgb has shape"),
    (lambda s: s.camera_to_world.__setitem__((1, 0, 3), np.nan), "non-finite camera"),
    (lambda s: s.camera_to_world.__setitem__((0, slice(0, 3), 0), 1.2 * s.camera_to_world[0, :3, 0]),
     "not a rigid transform"),
    (lambda s: s.intrinsics.__setitem__((0, 0, 0), -1.0), "positive focal"),
    (lambda s: setattr(s, "depth", np.full_like(s.depth, np.nan)), "depth has NaN"),
    (lambda s: setattr(s, "semantic", None), "scene has fields"),
])
def test_writer_rejects_invalid_scenes_and_leaves_nothing(tmp_path, breakage, message):
    rng = np.random.default_rng(2)
    good, bad = make_scene(rng, "good", 3), make_scene(rng, "bad", 3)
    breakage(bad)
    path = tmp_path / "out.h5"
    with pytest.raises(BadInput, match=message) as error:
        write(path, [good, bad], "raw")
    assert "'bad'" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_writer_resumes_after_last_complete_scene(tmp_path):
    rng = np.random.default_rng(3)
    scenes = [make_scene(rng, f"s{i}", 3) for i in range(4)]
    path = tmp_path / "out.h5"
    kwargs = dict(height=H, width=W, source="test", codec="raw", fields=FIELDS)
    with pytest.raises(KeyboardInterrupt):
        with SceneWriter(path, resume_key="k1", **kwargs) as writer:
            writer.add(scenes[0])
            writer.add(scenes[1])
            writer.flush()  # a block boundary
            writer.add(scenes[2])  # still buffered: lost, and redone on resume
            raise KeyboardInterrupt
    assert not path.exists() and (tmp_path / ".out.partial.h5").exists()
    with SceneWriter(path, resume_key="k1", **kwargs) as writer:
        assert writer.num_written == 2
        writer.abort(keep_partial=True)
    with SceneWriter(path, resume_key="other", **kwargs) as writer:  # another conversion starts over
        assert writer.num_written == 0
        writer.abort(keep_partial=True)
    with pytest.raises(KeyboardInterrupt):
        with SceneWriter(path, resume_key="k1", **kwargs) as writer:
            writer.add(scenes[0])
            writer.flush()
            raise KeyboardInterrupt
    with SceneWriter(path, resume_key="k1", **kwargs) as writer:
        assert writer.num_written == 1
        for scene in scenes[1:]:
            writer.add(scene)
    read = SceneFile(path)
    assert read.names.tolist() == ["s0", "s1", "s2", "s3"]
    for i, scene in enumerate(scenes):
        assert_same(scene, read.scene(i))


def _break(path, edit):
    with h5py.File(path, "a") as f:
        edit(f)


def _replace(name, data):
    def edit(f):
        attrs = dict(f[name].attrs)
        del f[name]
        f[name] = data
        f[name].attrs.update(attrs)
    return edit


BROKEN = {
    "missing dataset": (lambda f: f.__delitem__("views/intrinsics"), "missing dataset views/intrinsics"),
    "wrong dtype": (_replace("views/rgb", np.zeros((18, H, W, 3), np.float32)), "views/rgb has dtype float32"),
    "wrong shape": (_replace("views/camera_to_world", np.zeros((18, 3, 4), np.float32)),
                    "views/camera_to_world has shape"),
    "nan camera": (lambda f: f["views/camera_to_world"].__setitem__((7, 0, 3), np.nan), "scene 2 .*non-finite camera"),
    "non-orthonormal rotation": (lambda f: f["views/camera_to_world"].__setitem__(
        (13, slice(0, 3), 1), [0.0, 2.0, 0.0]), "scene 4 .*not a rigid transform"),
    "not a scene file": (lambda f: f.attrs.__delitem__("format"), "not a scene file"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_validator_rejects_broken_files_with_exit_2_and_writes_nothing(tmp_path, kind):
    rng = np.random.default_rng(4)
    path = tmp_path / "broken.h5"
    write(path, [make_scene(rng, f"s{i}", 3) for i in range(6)], "raw")
    edit, message = BROKEN[kind]
    _break(path, edit)
    with pytest.raises(BadInput, match=message):
        validate_file(path)
    grid = tmp_path / "grid.png"
    result = run_command("info", path, "--grid", grid)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"scene-info: error: {path}: ")
    assert not grid.exists() and not list(tmp_path.glob(".*partial*"))


def test_corrupt_png_is_named(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "png.h5"
    write(path, [make_scene(rng, "s0", 2)], "png")
    with h5py.File(path, "a") as f:
        data = f["views/rgb"][1]
        f["views/rgb"][1] = data[: len(data) // 2]  # truncated PNG
    with pytest.raises(BadInput, match=r"views/rgb\[1\]: corrupt PNG"):
        SceneFile(path).scene(0)
    result = run_command("info", path, "--grid", tmp_path / "g.png")
    assert result.returncode == 2 and "views/rgb[1]: corrupt PNG" in result.stderr
    assert not (tmp_path / "g.png").exists()


def test_not_hdf5_and_missing_file(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file")
    with pytest.raises(BadInput, match="junk.h5: not a readable HDF5 file"):
        SceneFile(junk)
    with pytest.raises(BadInput, match="nope.h5: no such file"):
        SceneFile(tmp_path / "nope.h5")
