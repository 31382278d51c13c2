import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from scenetools import checkpoint as ckpt
from scenetools import config as configs
from scenetools.convert import convert
from scenetools.sources.synthetic import SyntheticSource
from scenetools.train import learning_rate
from conftest import assert_bad_input, run_command

TINY = """
model:
  encoder: {num_conv_blocks: 2, num_att_blocks: 1, dim: 32, heads: 2, dim_head: 16, mlp_dim: 64, conv_channels: 8}
  decoder: {type: lightfield, num_att_blocks: 1, heads: 2, hidden: 32}
  canonical_frame: true
data: {protocol: msn, num_inputs: 2, num_rays: 64}
training:
  batch_size: 4
  lr: 2.0e-3
  lr_warmup: 5
  lr_decay_steps: 1000
  max_steps: 60
  log_every: 5
  checkpoint_every: 20
  backup_every: 30
  visualize_every: 30
  validate_every: 30
  validate_scenes: 4
  num_workers: 0
  precision: fp32
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    path = folder / "scenes.h5"
    convert(SyntheticSource(scenes=24, views=6, size=16, seed=5), path, codec="raw")
    (folder / "tiny.yaml").write_text(TINY)
    return folder


def train_args(data, run, *extra):
    return [sys.executable, "-m", "scenetools.cli.train", "srt", str(data / "scenes.h5"), "--config",
            str(data / "tiny.yaml"), "--out", str(run), *map(str, extra)]


def logged(run, split="train"):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["split"] == split]


@pytest.fixture(scope="module")
def trained(data):
    run = data / "run"
    result = subprocess.run(train_args(data, run), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return run


def test_training_learns_and_writes_the_run_folder(data, trained):
    losses = [row["loss"] for row in logged(trained)]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2])
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["run"] == {"model": "srt", "data": "../scenes.h5"}  # relative to the run folder
    assert (trained / config["run"]["data"]).resolve() == (data / "scenes.h5").resolve()
    for name in ("latest.pt", "step-30.pt", "step-60.pt"):
        state = torch.load(trained / "checkpoints" / name, weights_only=True)
        assert state["model_name"] == "srt" and state["config"]["model"] == config["model"]
        assert state["step"] == int(name[5:7]) if name != "latest.pt" else state["step"] == 60
        assert state["optimizer"]["state"] and set(state["model"]) >= {"encoder.patch_embedding"}
    assert sorted(p.name for p in (trained / "renders").iterdir()) == ["step-30.png", "step-60.png"]
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    val = logged(trained, "val")
    assert [row["step"] for row in val] == [30, 60] and val[0]["scenes"] == 2


def test_moved_run_folder_still_works(data, trained, tmp_path):
    """A run folder moved together with its data (same relative place) finds its data,
    knows its checkpoints' run, and trains on from where it stopped."""
    import shutil
    moved = tmp_path / "moved"
    shutil.copytree(trained, moved / "run")
    shutil.copy(data / "scenes.h5", moved / "scenes.h5")
    shutil.copy(data / "tiny.yaml", moved / "tiny.yaml")
    config = yaml.safe_load((moved / "run" / "config.yaml").read_text())
    assert (moved / "run" / config["run"]["data"]).resolve() == (moved / "scenes.h5").resolve()
    model, checkpoint, run = ckpt.load_model(moved / "run" / "checkpoints" / "step-30.pt")
    assert run == moved / "run" and checkpoint["step"] == 30
    result = subprocess.run(train_args(moved, moved / "run", "--max-steps", 65), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"resuming {moved / 'run'} from step 60" in result.stderr
    assert torch.load(moved / "run" / "checkpoints" / "latest.pt", weights_only=True)["step"] == 65
    assert torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)["step"] == 60  # the original stays


def test_eval_at_a_lower_resolution_leaves_out_ssim_below_its_window(data, trained, tmp_path):
    """data.evaluation.resolution: the views resized to 8 px high, under SSIM's 11 x 11 window,
    so SSIM is absent (it crashed the command before) and PSNR is still scored."""
    out = tmp_path / "m.json"
    result = run_command("eval", trained, data / "scenes.h5", "--split", "val", "--out", out, "--set",
                         "data.evaluation.resolution=8")
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())["results"]
    assert "ssim" not in results and np.isfinite(results["psnr"])


def test_eval_writes_metrics_json_csv_and_images(data, trained, tmp_path):
    out, images = tmp_path / "m.json", tmp_path / "images"
    result = run_command("eval", trained, data / "scenes.h5", "--split", "val", "--out", out, "--images", images)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["method_name"] == "srt" and metrics["step"] == 60 and metrics["split"] == "val"
    assert metrics["num_scenes"] == 2 == metrics["num_items"]
    results = metrics["results"]
    for key in ("psnr", "psnr_objects", "ssim", "baseline_mean_colour_psnr", "baseline_background_psnr_objects"):
        assert np.isfinite(results[key]) and np.isfinite(results[key + "_std"])
    assert 5 < results["psnr"] < 40 and 0 < results["ssim"] <= 1
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("scene,scene_index,input_views,psnr,psnr_objects,ssim")
    sheets = sorted(images.glob("*.png"))
    assert len(sheets) == 2  # one labelled sheet per scene: inputs, then per target view pred | truth | error
    import imageio.v3 as iio
    assert iio.imread(sheets[0]).shape[0] > 5 * 96
    assert "PSNR object pixels" in result.stdout and "background" in result.stdout


def test_sigterm_saves_a_checkpoint_and_stops(data, tmp_path):
    """SIGTERM to the whole process group, data workers included, as Slurm's scancel sends it."""
    run = tmp_path / "run"
    proc = subprocess.Popen(train_args(data, run, "--max-steps", 100000, "--set", "training.checkpoint_every=1000000",
                                       "--set", "training.num_workers=1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 130, proc.stderr.read()
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["step"] >= 5  # saved at the step the signal arrived, not at a checkpoint interval


def test_dry_run_prints_model_and_batch_without_a_run_folder(data, tmp_path):
    result = subprocess.run(train_args(data, tmp_path / "run", "--dry-run"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "parameters" in result.stdout and "input_images             (4, 2, 3, 16, 16)" in result.stdout
    assert "target_rays              (4, 64, 3)" in result.stdout
    memory = next(line for line in result.stdout.splitlines() if line.startswith("memory per process (estimate): "))
    assert " GiB weights, gradients and Adam state (16 B x " in memory and " parameters) + " in memory
    assert memory.endswith(" per scene x 4 scenes per micro-batch)") and "at fp32" in result.stdout
    assert not (tmp_path / "run").exists()


def test_a_run_folder_of_another_model_or_config_is_refused(data, trained):
    result = subprocess.run([sys.executable, "-m", "scenetools.cli.train", "isrt", str(data / "scenes.h5"), "--config",
                             str(data / "tiny.yaml"), "--out", str(trained)], capture_output=True, text=True)
    assert result.returncode == 2 and "holds a run with another run config" in result.stderr


def test_bad_checkpoints_exit_2(data, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = run_command("eval", junk, data / "scenes.h5", "--out", tmp_path / "m.json")
    assert_bad_input(result, ["junk.pt", "not a readable checkpoint"], tmp_path / "m.json")
    other = tmp_path / "other.pt"
    torch.save({"format": "something else"}, other)
    assert_bad_input(run_command("eval", other, data / "scenes.h5", "--out", tmp_path / "m.json"),
                     ["other.pt", "not a scenetools checkpoint"], tmp_path / "m.json")


def test_learning_rate_schedule():
    training = configs.resolve("srt", "srt/nmr")["training"]
    assert learning_rate(0, training) == 0 and learning_rate(1250, training) == pytest.approx(5e-5)
    assert learning_rate(2500, training) == pytest.approx(1e-4)
    assert learning_rate(2500 + 4_000_000, training) == pytest.approx(1.6e-5)


def ddp_worker(data, run, config):
    from scenetools.train import Options, train
    torch.set_num_threads(1)
    result = train("srt", data, config, run, Options())
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_ddp_two_cpu_processes_stay_in_sync(data, tmp_path):
    from scenetools.distributed import launch
    config = configs.merge(configs.DEFAULTS, yaml.safe_load(TINY))
    config["training"].update(max_steps=16, validate_every=1000, visualize_every=1000, backup_every=1000)
    run = tmp_path / "ddp"
    results = launch(2, ddp_worker, str(data / "scenes.h5"), str(run), config)
    assert set(results) == {0, 1}
    for key, value in results[0].items():
        assert torch.equal(value, results[1][key]), key
    losses = [row["loss"] for row in logged(run)]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])
    model, checkpoint, _ = ckpt.load_model(run)  # loads in a single process
    assert checkpoint["step"] == 16
    for key, value in model.state_dict().items():
        assert torch.equal(value, results[0][key])


def kill_after_checkpoint(args, run, at_least: int):
    """Start training, kill -9 its whole process group once latest.pt holds ``at_least``
    steps, and return the step it holds."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    latest = run / "checkpoints" / "latest.pt"
    deadline = time.time() + 240
    step = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            step = torch.load(latest, weights_only=True)["step"] if latest.exists() else 0
        except Exception:  # noqa: BLE001 - read while it was being replaced
            step = 0
        if step >= at_least:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return torch.load(latest, weights_only=True)["step"]


def test_a_killed_and_resumed_ddp_run_equals_an_uninterrupted_one(data, tmp_path):
    """Same weights and the same logged losses after the same steps, with two DDP processes:
    resume restores the weights, the optimizer, the schedule and the data position, not just
    the step count. (One process: test_train_faults kills it at random points.)"""
    settings = ["--gpus", 2, "--set", "training.log_every=1", "--set", "training.checkpoint_every=8", "--set",
                "training.validate_every=1000", "--set", "training.visualize_every=1000"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert subprocess.run(train_args(data, whole, "--max-steps", 24, *settings), capture_output=True).returncode == 0
    saved = kill_after_checkpoint(train_args(data, resumed, "--max-steps", 24, *settings), resumed, 8)
    assert 8 <= saved < 24
    finished = subprocess.run(train_args(data, resumed, "--max-steps", 24, *settings), capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert_same_run(whole, resumed, 24, compare_from=saved + 1)


def assert_same_run(whole, resumed, steps: int, compare_from: int = 1) -> None:
    """``resumed`` ended where the uninterrupted ``whole`` did: the same weights after ``steps``
    steps, every step logged once, and the same loss at each step from ``compare_from``."""
    a, b = (torch.load(run / "checkpoints" / "latest.pt", weights_only=True) for run in (whole, resumed))
    assert a["step"] == b["step"] == steps
    for key, value in a["model"].items():
        assert torch.allclose(value, b["model"][key], rtol=0, atol=1e-6), key
    losses = [{row["step"]: row["loss"] for row in logged(run)} for run in (whole, resumed)]
    assert sorted(losses[1]) == list(range(1, steps + 1))
    assert all(losses[1][s] == pytest.approx(losses[0][s], rel=1e-6) for s in range(compare_from, steps + 1))


def test_accumulated_gradients_are_those_of_the_mean_loss_over_all_batches():
    """Least squares on 4 rows given as 2 batches of 2: the summed gradient equals the gradient
    of the mean over all 4 rows, 2/N * sum((x.w - y) x), computed here by hand."""
    import contextlib

    from scenetools.train import forward_backward

    class LeastSquares(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))

        def forward(self, batch, step):
            loss = ((batch["x"] @ self.w - batch["y"]) ** 2).mean()
            return loss, {"mse": loss.detach()}

    x = torch.tensor([[1.0, 0.0, 2.0], [0.5, 1.0, -1.0], [2.0, 2.0, 0.0], [-1.0, 0.5, 1.0]])
    y = torch.tensor([1.0, 0.0, -1.0, 2.0])
    model = LeastSquares()
    halves = iter([{"x": x[:2], "y": y[:2]}, {"x": x[2:], "y": y[2:]}])
    loss, logs, _, _ = forward_backward(model, halves, 0, contextlib.nullcontext(), 2, torch.device("cpu"))
    residual = x @ torch.tensor([1.0, -2.0, 0.5]) - y
    assert torch.allclose(model.w.grad, 2 / 4 * (residual[:, None] * x).sum(0))
    assert float(loss) == pytest.approx(float((residual ** 2).mean())) == pytest.approx(float(logs["mse"]))


def test_accumulated_batches_give_the_update_of_one_batch_of_their_size(data, tmp_path):
    """Batch 4 in one step, and 2 + 2 accumulated: the same weights and losses after 3 steps
    (both see the same items in the same order within the first epoch); batch 2 alone does not."""
    settings = ["--max-steps", 3, "--set", "training.log_every=1", "--set", "training.lr_warmup=0"]
    runs = {"one": [], "accumulated": ["--accumulate", 2], "half": ["--set", "training.batch_size=2"]}
    for name, extra in runs.items():
        result = subprocess.run(train_args(data, tmp_path / name, *settings, *extra), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    a, b, c = (torch.load(tmp_path / name / "checkpoints" / "latest.pt", weights_only=True)["model"] for name in runs)
    for key, value in a.items():
        assert torch.allclose(value, b[key], rtol=0, atol=1e-5), key
    assert not all(torch.allclose(value, c[key], rtol=0, atol=1e-5) for key, value in a.items())
    losses = [[row["loss"] for row in logged(tmp_path / name)] for name in ("one", "accumulated")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_dry_run_prints_what_it_can_then_lists_every_problem(data, tmp_path):
    small = subprocess.run(train_args(data, tmp_path / "run", "--dry-run", "--set", "training.batch_size=256"),
                           capture_output=True, text=True)
    assert small.returncode == 2 and "fewer than a batch of 256" in small.stderr
    assert "parameters" in small.stdout  # the model was still built and summarised
    assert "per scene x 256 scenes per micro-batch)" in small.stdout  # and its memory estimated
    both = subprocess.run(train_args(data, tmp_path / "run", "--dry-run", "--set", "model.bogus=1", "--set",
                                     "data.num_inputs=9"), capture_output=True, text=True)
    assert both.returncode == 2 and "2 problems" in both.stderr, both.stderr
    assert "bogus" in both.stderr and "at least 10 views" in both.stderr
    no_data = subprocess.run(train_args(data, tmp_path / "run", "--dry-run", "--set", "data.num_inputs=9"),
                             capture_output=True, text=True)
    assert no_data.returncode == 2 and "at least 10 views" in no_data.stderr
    assert "Adam state (16 B x " in no_data.stdout and "activations not measured: no training data" in no_data.stdout
    assert not (tmp_path / "run").exists()


def test_init_from_starts_a_new_run_from_existing_weights(data, trained, tmp_path):
    run = tmp_path / "finetune"
    result = subprocess.run(train_args(data, run, "--max-steps", 1, "--set", "training.lr=1e-12", "--set",
                                       "training.lr_warmup=0", "--init-from", trained / "checkpoints" / "latest.pt"),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "trained to step 1" in result.stderr and "checkpoint" in result.stderr
    before = torch.load(trained / "checkpoints" / "latest.pt", weights_only=True)["model"]
    after = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert after["step"] == 1 and after["init_from"].endswith("latest.pt")
    for key, value in before.items():  # one step at lr 1e-12 from the same weights
        assert torch.allclose(value, after["model"][key], atol=1e-6), key


def test_device_cuda_without_cuda_exits_2_writing_nothing(data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = subprocess.run(train_args(data, tmp_path / "run", "--device", "cuda"), capture_output=True, text=True)
    assert result.returncode == 2 and "no CUDA device" in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("limit", [None, 0.5, 100.0])
def test_clip_gradients_returns_the_norm_before_clipping_and_clips_only_above_a_limit(limit):
    from scenetools.train import clip_gradients
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    values = [torch.tensor([[3.0, 0.0], [0.0, 4.0]]), torch.tensor([0.0, 12.0]), None, torch.tensor([0.0])]
    for parameter, grad in zip(model.parameters(), values):  # one parameter without a gradient
        parameter.grad = grad
    norm = clip_gradients(model, limit)
    assert norm == pytest.approx(13.0)  # sqrt(9 + 16 + 144), by hand
    scale = min(1.0, limit / 13.0) if limit else 1.0
    assert float(model[0].weight.grad[1, 1]) == pytest.approx(4.0 * scale, rel=1e-5)
    assert float(model[0].bias.grad[1]) == pytest.approx(12.0 * scale, rel=1e-5)
