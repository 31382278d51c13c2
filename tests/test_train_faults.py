"""Faults during training and evaluation (the reliability issue): a worker error, a
diverging run, kill -9 at random points, two runs on one folder, bad --set values, an
existing --images folder and a scene name that is a path. Every command runs in a session
of its own, and each case checks that no process of it outlives the command."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from scenetools.convert import convert
from scenetools.sources.synthetic import SyntheticSource
import processes
from test_train import TINY, assert_same_run, logged, train_args

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    convert(SyntheticSource(scenes=24, views=6, size=16, seed=5), folder / "scenes.h5", codec="raw")
    (folder / "tiny.yaml").write_text(TINY)
    return folder


def strict_json_lines(path):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")
    return [json.loads(line, parse_constant=refuse) for line in Path(path).read_text().splitlines()]


def test_a_data_worker_error_exits_2_naming_file_scene_and_view(data, tmp_path):
    broken = tmp_path / "broken.h5"
    broken.write_bytes((data / "scenes.h5").read_bytes())
    with h5py.File(broken, "r+") as f:  # every camera NaN: the first read, in the worker, meets one
        f["views/camera_to_world"][...] = np.nan
    run = tmp_path / "run"
    args = [sys.executable, "-m", "scenetools.cli.train", "srt", broken, "--config", data / "tiny.yaml", "--out", run,
            "--set", "training.num_workers=1", "--max-steps", "200"]
    result = processes.run(args, timeout=180)  # and no data worker outlives the trainer
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines[-1]) < 300 and "broken.h5" in lines[-1] and "non-finite camera" in lines[-1], result.stderr
    assert "view" in lines[-1] and "Traceback" not in result.stderr


def test_a_diverging_run_skips_bad_steps_then_stops_keeping_its_good_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    good = processes.run(train_args(data, run, "--max-steps", 10, "--set", "training.log_every=1"))
    assert good.returncode == 0, good.stderr
    diverging = processes.run(train_args(data, run, "--max-steps", 60, "--set", "training.lr=1e30", "--set",
                                          "training.lr_warmup=0", "--set", "training.log_every=1", "--set",
                                          "training.max_bad_steps=3", "--set", "training.checkpoint_every=1"))
    assert diverging.returncode == 1, diverging.stderr
    last = diverging.stderr.strip().splitlines()[-1]
    assert "3 steps in a row" in last and "Traceback" not in diverging.stderr, diverging.stderr
    for path in (run / "checkpoints").glob("*.pt"):
        weights = torch.load(path, weights_only=True)["model"]
        assert all(torch.isfinite(w).all() for w in weights.values()), path
    rows = strict_json_lines(run / "metrics.jsonl")  # NaN would be written as null, not as a bare NaN token
    assert any(row.get("skipped_steps", 0) > 0 or row.get("loss") is None for row in rows)


def test_a_resumed_run_logs_each_step_once_and_clears_stale_partials(data, tmp_path):
    run = tmp_path / "run"
    args = train_args(data, run, "--max-steps", 4000, "--set", "training.checkpoint_every=10", "--set",
                      "training.log_every=1")
    proc = processes.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 15):
        time.sleep(0.05)
    proc.kill()  # the trainer alone, as kill -9 PID does
    proc.wait()
    processes.assert_no_orphans(proc.pid)
    stale = run / "checkpoints" / ".step-30.partial.pt"
    stale.write_bytes(b"half a checkpoint")
    saved = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["step"]
    resumed = processes.run(train_args(data, run, "--max-steps", saved + 5, "--set", "training.log_every=1"))
    assert resumed.returncode == 0, resumed.stderr
    steps = [row["step"] for row in logged(run)]
    assert steps == list(range(1, saved + 6)), steps
    assert not stale.exists()


def test_kill_9_at_random_points_then_resume_equals_an_uninterrupted_run(data, tmp_path):
    """Same weights and the same logged losses as a run never killed, whatever the moments
    (between steps, during a checkpoint save, before the first one), with a data worker
    that must die with the trainer."""
    settings = ["--max-steps", 24, "--set", "training.log_every=1", "--set", "training.checkpoint_every=3",
                "--set", "training.num_workers=1", "--set", "training.validate_every=1000"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    started = time.time()
    assert processes.run(train_args(data, whole, *settings)).returncode == 0
    landed = processes.kill_at_random_points(train_args(data, killed, *settings), 3, time.time() - started, seed=1)
    assert landed >= 1
    assert_same_run(whole, killed, 24)


def test_a_second_run_on_the_same_folder_is_refused(data, tmp_path):
    run = tmp_path / "run"
    first = processes.start(train_args(data, run, "--max-steps", 100000), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "metrics.jsonl").exists():
            time.sleep(0.05)
        second = processes.run(train_args(data, run, "--max-steps", 100000), timeout=120)
    finally:
        first.kill()
        first.wait()
    processes.assert_no_orphans(first.pid)
    assert second.returncode == 2, second.stderr
    assert f"in use by process {first.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("setting, message", [("training.bacth_size=2", "did you mean training.batch_size"),
                                              ("training.lr=fast", "must be float")])
def test_bad_set_values_are_refused_before_anything_is_written(data, tmp_path, setting, message):
    run = tmp_path / "run"
    result = processes.run(train_args(data, run, "--set", setting))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not run.exists()


def test_numbers_in_exponent_notation_are_numbers(data, tmp_path):
    result = processes.run(train_args(data, tmp_path / "run", "--set", "training.lr=1e-3", "--dry-run"))
    assert result.returncode == 0, result.stderr
    assert '"lr": 0.001' in result.stdout


def test_sigterm_under_two_processes_exits_130_with_one_line(data, tmp_path):
    run = tmp_path / "run"
    proc = processes.start(train_args(data, run, "--gpus", 2, "--max-steps", 100000, "--set",
                                      "training.checkpoint_every=1000000"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(120)
    stderr = proc.stderr.read()
    processes.assert_no_orphans(proc.pid)
    assert code == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("training:", "no GPU here"))]
    assert len(lines) == 1 and lines[0].startswith("scene-train: interrupted at step"), stderr
    step = int(lines[0].split("step ")[1].split(",")[0])
    assert torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["step"] == step


def test_eval_refuses_a_non_empty_images_folder_and_keeps_names_inside_it(data, tmp_path):
    run = tmp_path / "run"
    assert processes.run(train_args(data, run, "--max-steps", 2)).returncode == 0
    images = tmp_path / "images"
    images.mkdir()
    (images / "precious.txt").write_text("keep me")
    args = [sys.executable, "-m", "scenetools.cli.eval", run, data / "scenes.h5", "--scenes", 1, "--images", images,
            "--out", tmp_path / "m.json"]
    refused = processes.run(args)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert (images / "precious.txt").read_text() == "keep me" and not (tmp_path / "m.json").exists()
    from scenetools.atomic import safe_name
    assert safe_name("..") == "_" and safe_name("../../etc") == "_.._etc" and "/" not in safe_name("a/b")


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB tmpfs, where the machine lets us mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_training_naming_the_file_and_leaving_no_partial(data, small_disk):
    run = small_disk / "run"
    result = processes.run(train_args(data, run, "--max-steps", 200, "--set", "training.checkpoint_every=5", "--set",
                                       "training.validate_every=1000", "--set", "training.visualize_every=1000"), timeout=300)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "no space left on device" in last.lower() and str(run) in last, result.stderr
    assert not list(run.rglob(".*partial*"))
    latest = run / "checkpoints" / "latest.pt"
    if latest.exists():  # what was saved before the disk filled still loads
        torch.load(latest, weights_only=True)
