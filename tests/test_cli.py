import os
import signal
import subprocess
import sys
import time

import click
import h5py
import numpy as np
import pytest

from scenetools.cli import COMMANDS, common
from scenetools.errors import BadInput
from conftest import run_command


@pytest.mark.parametrize("module", ["convert", "info"])
def test_help_has_an_example(module):
    result = run_command(module, "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout and "scene-" in result.stdout


def test_every_command_is_declared_as_a_console_script():
    setup = open("setup.cfg").read()
    for name, module in COMMANDS.items():
        assert f"{name} = {module}:main" in setup


def test_convert_then_info(tmp_path):
    out = tmp_path / "s.h5"
    result = run_command("convert", "--from", "synthetic", out, "--scenes", 10, "--views", 3, "--size", 16)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    info = run_command("info", out, "--grid", tmp_path / "sheet.png")
    assert info.returncode == 0
    assert "scenes          10 (train 8, val 1, test 1)" in info.stdout
    assert "fields          rgb, camera_to_world, intrinsics, depth (float32), instance (uint8)" in info.stdout
    import imageio.v3 as iio
    sheet = iio.imread(tmp_path / "sheet.png")
    assert sheet.shape[0] > 3 * 96 and sheet.shape[2] == 3  # rows of views, depth and masks
    again = run_command("convert", "--from", "synthetic", out, "--scenes", 10)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_convert_creates_the_output_folder_and_removes_it_on_bad_input(tmp_path):
    """The Quick start's first command writes into a data/ folder that does not exist yet."""
    out = tmp_path / "data" / "synthetic.h5"
    assert run_command("convert", "--from", "synthetic", out, "--scenes", 3, "--views", 2, "--size", 8).returncode == 0
    assert out.is_file()
    bad = run_command("convert", "--from", "srn", tmp_path / "missing", tmp_path / "new" / "deeper" / "x.h5")
    assert bad.returncode == 2 and not (tmp_path / "new").exists()


def test_bad_usage_exits_2_with_one_line(tmp_path):
    cases = [
        ("convert", "--from", "synthetic"),  # no output
        ("convert", "--from", "synthetic", tmp_path / "x.h5", "--scenes", 0),
        ("convert", "--from", "synthetic", tmp_path / "x.h5", "--split", "nope"),
        ("info", tmp_path / "missing.h5"),
        ("info", "--bogus"),
    ]
    for args in cases:
        result = run_command(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"scene-{args[0]}: error: ")
    assert not list(tmp_path.rglob("*.h5"))


def test_exit_codes_and_debug_traceback(capsys):
    @click.command("scene-demo")
    @click.argument("what")
    @common.options
    def demo(what):
        if what == "bad":
            raise BadInput("cannot use this", "in.h5")
        if what == "crash":
            raise RuntimeError("disk on fire\nsecond line")

    main = common.entry_point(demo)
    for argv, code, message in [(["ok"], 0, ""), (["bad"], 2, "scene-demo: error: in.h5: cannot use this"),
                                (["crash"], 1, "scene-demo: error: RuntimeError: disk on fire second line")]:
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == code
        assert capsys.readouterr().err.strip() == message
    with pytest.raises(SystemExit):
        main(["crash", "--debug"])
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("disk on fire second line")


def _dataset_arrays(path):
    with h5py.File(path) as f:
        return {name: f[name][:] for name in ["views/rgb", "views/depth", "views/camera_to_world", "scenes/name"]}


def _convert_args(out, scenes):
    return [sys.executable, "-m", "scenetools.cli.convert", "--from", "synthetic", str(out),
            "--scenes", str(scenes), "--views", "4", "--size", "24"]


def _interrupt_midway(args, partial, sig=signal.SIGINT):
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not partial.exists() or partial.stat().st_size < 3_000_000):
        time.sleep(0.05)
    os.killpg(proc.pid, sig)  # the whole group, as Ctrl-C and Slurm's scancel do
    assert proc.wait(30) == 130, proc.stderr.read()


def test_interrupted_conversion_resumes_and_matches_an_uninterrupted_one(tmp_path):
    out, partial = tmp_path / "big.h5", tmp_path / ".big.partial.h5"
    _interrupt_midway(_convert_args(out, 1500), partial)
    assert not out.exists() and partial.exists()

    other = subprocess.run(_convert_args(out, 300), capture_output=True, text=True)
    assert other.returncode == 0  # other arguments: a fresh conversion, not a resume
    assert "resuming" not in other.stderr
    out.unlink()

    _interrupt_midway(_convert_args(out, 1500), partial)
    resumed = subprocess.run(_convert_args(out, 1500), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming an interrupted conversion after" in resumed.stderr
    done = int(resumed.stderr.split("after ")[1].split(" of")[0])
    assert 0 < done < 1500
    fresh = tmp_path / "fresh.h5"
    subprocess.run(_convert_args(fresh, 1500), check=True, capture_output=True)
    a, b = _dataset_arrays(out), _dataset_arrays(fresh)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_sigterm_stops_parallel_conversion_cleanly(tmp_path):
    """Workers leave the signal to the main process, which stops after a whole batch."""
    out, partial = tmp_path / "big.h5", tmp_path / ".big.partial.h5"
    _interrupt_midway(_convert_args(out, 1500) + ["--workers", "2"], partial, signal.SIGTERM)
    assert not out.exists()
    with h5py.File(partial, "r") as f:
        assert 0 < f.attrs["scenes_written"] < 1500


def test_split_limit_and_shards(tmp_path):
    out = tmp_path / "sel.h5"
    result = run_command("convert", "--from", "synthetic", out, "--scenes", 30, "--views", 2, "--size", 8,
                         "--split", "train,test", "--limit", 5, "--shard-size", 4, "--codec", "png")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel-00000.h5", "sel-00001.h5", "sel.h5"]
    info = run_command("info", out)
    assert "scenes          8 (train 5, test 3)" in info.stdout and "png storage, 2 shards" in info.stdout
