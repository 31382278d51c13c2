"""Faults around scene files (the reliability issue): a full disk, a damaged partial file,
flipped bytes, HDF5 read errors, camera messages, orphaned workers, torch's warnings and
byte-identical conversions."""
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from scenetools import checkpoint, scenefile
from scenetools.convert import convert
from scenetools.errors import BadInput
from scenetools.scenefile import SceneFile, SceneWriter
from scenetools.sources.synthetic import SyntheticSource
import processes
from conftest import run_command
from test_scenefile import FIELDS, H, W, assert_same, make_scene, write

pytestmark = pytest.mark.faults


# ----------------------------------------------------------------------------- helpers

@pytest.fixture
def small_disk(tmp_path):
    """A folder on a 1 MiB tmpfs of its own (resize it with :func:`resize`)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", disk],
                                 capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", disk], check=True)


def resize(disk, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", "tmpfs", disk], check=True)


def one_error_line(result, prog: str, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    return lines[0]


def flip(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def arrays(path) -> dict:
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda name, obj: out.update({name: obj[:]}) if isinstance(obj, h5py.Dataset) else None)
        return out


def assert_same_data(a, b):
    a, b = arrays(a), arrays(b)
    assert a.keys() == b.keys()
    for name in a:
        if a[name].dtype.kind == "O":
            assert len(a[name]) == len(b[name]) and all(map(np.array_equal, a[name], b[name])), name
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def small_file(path, codec="raw", scenes=6):
    """Scenes s0, s1, ... of 3 views each (view rows 3 s ... 3 s + 2)."""
    rng = np.random.default_rng(7)
    write(path, [make_scene(rng, f"s{i}", 3) for i in range(scenes)], codec)
    return path


# ----------------------------------------------------------------------------- 3. disk full

CONVERT_IN_BLOCKS_OF_4 = ("from scenetools.scenefile import SceneWriter; SceneWriter.block_scenes = 4; "
                          "from scenetools.cli.convert import main; main()")


def test_full_disk_stops_conversion_cleanly_and_it_resumes(small_disk, tmp_path):
    """No crash, one line naming the partial file, exit 1; after room is made the same
    command resumes and gives the data of an uninterrupted conversion."""
    out, partial = small_disk / "s.h5", small_disk / ".s.partial.h5"
    args = [sys.executable, "-c", CONVERT_IN_BLOCKS_OF_4, "--from", "synthetic", out, "--scenes", 20, "--views", 4,
            "--size", 48, "--seed", 1]  # 1.5 MB
    full = processes.run(args + ["-q"])
    line = one_error_line(full, "scene-convert", 1)
    assert f"{partial}: no space left on device; the " in line and "run the same command again" in line
    kept = int(line.split("; the ")[1].split()[0])
    assert 0 < kept < 20 and partial.exists() and not out.exists()

    resize(small_disk, "8m")
    resumed = processes.run(args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming an interrupted conversion after {kept} of 20 scenes" in resumed.stderr
    convert(SyntheticSource(scenes=20, views=4, size=48, seed=1), tmp_path / "fresh.h5", codec="raw")
    assert_same_data(out, tmp_path / "fresh.h5")


def test_full_disk_for_a_contact_sheet(small_disk, tmp_path):
    data = small_file(tmp_path / "s.h5")
    with open(small_disk / "filler", "wb", buffering=0) as filler:  # fill the disk to the last byte
        try:
            while True:
                filler.write(bytes(4096))
        except OSError:
            pass
    grid = small_disk / "grid.png"
    line = one_error_line(run_command("info", data, "--grid", grid, "-q"), "scene-info", 1)
    assert line == f"scene-info: error: {grid}: no space left on device"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


# ----------------------------------------------------------------------------- 3. damaged partial files

def write_partial(path, scenes, codec, blocks_of=2):
    """The partial file of a resumable writer interrupted after all of ``scenes``."""
    with pytest.raises(KeyboardInterrupt):
        with SceneWriter(path, height=H, width=W, source="test", codec=codec, fields=FIELDS, resume_key="k") as writer:
            writer.block_scenes = blocks_of
            for scene in scenes:
                writer.add(scene)
            writer.flush()
            raise KeyboardInterrupt


def corrupt_last_scene(partial, codec):
    with h5py.File(partial, "r") as f:
        row = int(f["scenes/view_offset"][-1])
        if codec == "raw":
            info = f["views/rgb"].id.get_chunk_info_by_coord((row, 0, 0, 0))
            offset = info.byte_offset + info.size // 2
        else:
            png = f["views/rgb"][row].tobytes()
            offset = partial.read_bytes().find(png) + len(png) // 2
    flip(partial, offset)


@pytest.mark.parametrize("codec", ["raw", "png"])
def test_resume_keeps_the_scenes_before_a_damaged_one(tmp_path, codec, capsys):
    rng = np.random.default_rng(8)
    scenes = [make_scene(rng, f"s{i}", 3) for i in range(7)]
    path, partial = tmp_path / "out.h5", tmp_path / ".out.partial.h5"
    write_partial(path, scenes, codec)
    corrupt_last_scene(partial, codec)
    with SceneWriter(path, height=H, width=W, source="test", codec=codec, fields=FIELDS, resume_key="k") as writer:
        assert writer.num_written == 6
        writer.add(scenes[6])
    assert "views/rgb[18]" in capsys.readouterr().err  # the note says what was dropped
    read = SceneFile(path)
    assert read.num_scenes == 7 and not partial.exists() and not list(tmp_path.glob(".*partial*"))
    for i, scene in enumerate(scenes):
        assert_same(scene, read.scene(i))


def cut_tail(partial):
    with open(partial, "r+b") as f:
        f.truncate(partial.stat().st_size - 700)


def garbage_tail(partial):
    with open(partial, "r+b") as f:
        f.seek(-2000, os.SEEK_END)
        f.write(np.random.default_rng(0).bytes(2000))


def flip_scene_table(partial):
    with h5py.File(partial, "r") as f:
        info = f["scenes/view_count"].id.get_chunk_info(0)
    flip(partial, info.byte_offset + 9)


@pytest.mark.parametrize("damage", [cut_tail, garbage_tail, flip_scene_table])
def test_resume_from_a_broken_partial_file_never_crashes(tmp_path, damage, capsys):
    """It keeps the scenes before the damage, or starts over; a note says which and why."""
    rng = np.random.default_rng(9)
    scenes = [make_scene(rng, f"s{i}", 3) for i in range(7)]
    path, partial = tmp_path / "out.h5", tmp_path / ".out.partial.h5"
    write_partial(path, scenes, "raw")
    damage(partial)
    with SceneWriter(path, height=H, width=W, source="test", codec="raw", fields=FIELDS, resume_key="k") as writer:
        kept = writer.num_written
        for scene in scenes[kept:]:
            writer.add(scene)
    assert kept < 7 and "partial.h5: " in capsys.readouterr().err  # a note says why scenes were dropped
    read = SceneFile(path)
    for i, scene in enumerate(scenes):
        assert_same(scene, read.scene(i))


# ----------------------------------------------------------------------------- 10., 11. corruption and messages

@pytest.mark.parametrize("codec", ["raw", "png"])
def test_flipped_pixel_bytes_are_named_by_file_scene_and_view(tmp_path, codec):
    path = small_file(tmp_path / "s.h5", codec)
    with h5py.File(path, "r") as f:
        assert f["views/camera_to_world"].fletcher32 and (codec == "png" or f["views/rgb"].fletcher32)
    corrupt_last_scene(path, codec)  # scene 5, view 0: row 15
    line = one_error_line(run_command("info", path, "-q"), "scene-info", 2)
    assert line.startswith(f"scene-info: error: {path}: scene 5 (s5), view 0: views/rgb[15]: corrupt ")
    with pytest.raises(BadInput, match=r"scene 5 \(s5\), view 0: views/rgb\[15\]: corrupt"):
        SceneFile(path).read_views(5)


def test_files_without_checksums_still_read(tmp_path, monkeypatch):
    def without_checksums(f, name, shape, dtype, chunk_rows, **options):
        return f.create_dataset(name, (0,) + shape, dtype, maxshape=(None,) + shape, chunks=(chunk_rows,) + shape,
                                **options)

    monkeypatch.setattr(scenefile, "_create_dataset", without_checksums)
    path = small_file(tmp_path / "old.h5")
    with h5py.File(path, "r") as f:
        assert not f["views/rgb"].fletcher32
    assert run_command("info", path).returncode == 0
    assert SceneFile(path).scene(5).name == "s5"


def test_an_hdf5_read_error_names_the_file_scene_and_view(tmp_path):
    path = small_file(tmp_path / "s.h5", "png")
    raw = path.read_bytes()
    with h5py.File(path, "r") as f:
        at = raw.find(f["views/rgb"][17].tobytes())
    flip(path, raw.rfind(b"GCOL", 0, at))  # the heap collection holding the PNG of scene 5, view 2
    line = one_error_line(run_command("info", path, "-q"), "scene-info", 2)
    assert re.fullmatch(rf"scene-info: error: {path}: scene \d \(s\d\), view \d: views/rgb\[\d+\]: unreadable \(.*\)", line)
    with pytest.raises(BadInput, match=f"{path}: scene 5"):
        SceneFile(path).scene(5)


def test_a_bad_camera_is_named_by_its_view_within_the_scene(tmp_path):
    path = small_file(tmp_path / "s.h5")
    with h5py.File(path, "r+") as f:
        f["views/camera_to_world"][7, 0, 3] = np.nan  # scene 2, view 1
    line = one_error_line(run_command("info", path, "-q"), "scene-info", 2)
    assert line == f"scene-info: error: {path}: scene 2 (s2): non-finite camera (NaN or inf) in view 1"
    with pytest.raises(BadInput, match="in view 1$"):
        SceneFile(path).read_views(2, [1])


def test_a_refused_checkpoint_prints_no_torch_warning(tmp_path):
    import fractions

    import torch

    path = tmp_path / "unsafe.pt"
    torch.save({"weights": fractions.Fraction(1, 3)}, path, pickle_protocol=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadInput, match="not a readable checkpoint"):
            checkpoint.load(path)
    assert not caught, [str(w.message) for w in caught]


def test_two_conversions_are_byte_identical(tmp_path):
    files = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        convert(SyntheticSource(scenes=6, views=3, size=16, seed=2), tmp_path / name / "s.h5", shard_size=4)
        files += [tmp_path / name / "s.h5", tmp_path / name / "s-00001.h5"]
        time.sleep(1.1)  # HDF5 timestamps have a resolution of one second
    assert files[0].read_bytes() == files[2].read_bytes() and files[1].read_bytes() == files[3].read_bytes()


# ----------------------------------------------------------------------------- 5. orphans

def spawned(pids) -> list:
    """The multiprocessing workers among ``pids``."""
    return [pid for pid in pids if b"spawn_main" in read_or_nothing(f"/proc/{pid}/cmdline")]


def read_or_nothing(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_workers_die_with_a_killed_conversion(tmp_path):
    out = tmp_path / "s.h5"
    proc = subprocess.Popen([sys.executable, "-m", "scenetools.cli.convert", "--from", "synthetic", str(out),
                             "--scenes", "3000", "--views", "4", "--size", "24", "--workers", "2", "-q"],
                            stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (len(spawned(workers)) < 2 or not (tmp_path / ".s.partial.h5").exists()):
            time.sleep(0.1)
            workers = processes.children(proc.pid)
        assert len(spawned(workers)) == 2, "the conversion did not start its workers"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and any(map(processes.alive, workers)):
            time.sleep(0.1)
        assert not [pid for pid in workers if processes.alive(pid)], "workers outlived their parent"
    finally:
        proc.kill()
        for pid in filter(processes.alive, workers):
            os.kill(pid, signal.SIGKILL)


def test_kill_9_at_random_points_of_a_parallel_conversion_then_resume_equals_an_uninterrupted_one(tmp_path):
    """Three SIGKILLs of the main process at random moments: each time its workers die with
    it, and the resumed file equals a file converted in one go."""
    def args(out):
        return [sys.executable, "-m", "scenetools.cli.convert", "--from", "synthetic", out, "--scenes", 600,
                "--views", 4, "--size", 24, "--workers", 2, "-q"]
    whole, killed = tmp_path / "whole.h5", tmp_path / "killed.h5"
    started = time.time()
    assert processes.run(args(whole)).returncode == 0
    assert processes.kill_at_random_points(args(killed), 3, time.time() - started, seed=7) >= 1
    assert_same_data(whole, killed)
