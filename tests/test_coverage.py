"""Paths of the tools that no other test walks (the hardening issue): scene-eval on the
"each view" protocols and with --targets, the zoom and eyeroll motions through the CLI,
bf16 training, and the shipped demo checkpoint."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scenetools import checkpoint as ckpt
from scenetools.convert import convert
from scenetools.scenefile import SceneFile
from scenetools.sources.synthetic import SyntheticSource
from scenetools.models import count_parameters
from conftest import run_command
from test_train import data, logged, train_args, trained  # noqa: F401  (the trained tiny SRT run)
import processes

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-checkpoint" / "srt-synthetic.pt"
DEMO_SRN = DEMO.with_name("srn-synthetic.pt")


def evaluate(trained, data, out, *options):  # noqa: F811
    result = run_command("eval", trained, data / "scenes.h5", "--split", "val", "--out", out, *options)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    return json.loads(out.read_text()), rows


@pytest.mark.parametrize("protocol", ["nmr", "clevr3d"])
def test_each_view_protocols_take_every_view_as_the_input_once(data, trained, tmp_path, protocol):  # noqa: F811
    metrics, rows = evaluate(trained, data, tmp_path / "m.json", "--set", f"data.protocol={protocol}", "--set",
                             "data.num_inputs=1")
    assert metrics["num_scenes"] == 2 and metrics["num_items"] == len(rows) == 2 * 6  # 2 val scenes x 6 views
    for scene in {row["scene"] for row in rows}:
        assert sorted(int(row["input_views"]) for row in rows if row["scene"] == scene) == list(range(6))


def test_targets_all_scores_the_input_views_too(data, trained, tmp_path):  # noqa: F811
    """--targets all scores the 2 input views as well as the 4 others: other figures, and two
    more target rows on each scene's sheet."""
    import imageio.v3 as iio

    rest, _ = evaluate(trained, data, tmp_path / "rest.json", "--targets", "rest", "--images", tmp_path / "r")
    every, _ = evaluate(trained, data, tmp_path / "all.json", "--targets", "all", "--images", tmp_path / "a")
    assert every["results"]["psnr"] != rest["results"]["psnr"]
    assert (rest["targets"], every["targets"]) == ("novel views only", "all views")
    heights = [iio.imread(next((tmp_path / d).glob("*.png"))).shape[0] for d in ("r", "a")]
    assert heights[1] > heights[0]


@pytest.mark.parametrize("motion", ["zoom", "eyeroll"])
def test_zoom_and_eyeroll_render_through_the_cli(trained, tmp_path, motion):  # noqa: F811
    frames = tmp_path / motion
    result = run_command("render", trained, "--motion", motion, "--frames", 3, "-o", frames)
    assert result.returncode == 0, result.stderr
    pictures = sorted((frames / "rgb").glob("*.png"))
    assert len(pictures) == 3
    first, last = (np.asarray(__import__("imageio.v3", fromlist=["imread"]).imread(p), float) for p in pictures[::2])
    assert np.abs(first - last).mean() > 1  # the camera moved


def test_bf16_training_runs_and_keeps_float32_weights(data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    result = processes.run(train_args(data, run, "--precision", "bf16", "--max-steps", 6, "--set",
                                      "training.log_every=1"))
    assert result.returncode == 0, result.stderr
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert state["config"]["training"]["precision"] == "bf16"
    assert all(w.dtype == torch.float32 and torch.isfinite(w).all() for w in state["model"].values())
    assert all(np.isfinite(row["loss"]) for row in logged(run)) and len(logged(run)) == 6


@pytest.mark.skipif(not DEMO.is_file(), reason="the shipped demo checkpoint is not in this checkout")
def test_the_shipped_srt_beats_the_mean_colour_of_its_inputs_on_scenes_it_never_saw(tmp_path):
    """Eight scenes of the generator version it was trained on, from another seed (its data
    was seed 1): on the novel views of each, SRT beats predicting the mean colour of that
    item's input views, computed here from the file on the same pixels, by 5 dB on average
    and 2 dB on every scene. A broken encoder, decoder, canonical frame or camera convention
    falls to that baseline."""
    unseen = tmp_path / "unseen.h5"
    convert(SyntheticSource(scenes=10, views=10, size=64, seed=5, generator_version=2), unseen, codec="raw")
    out = tmp_path / "eval.json"
    result = run_command("eval", DEMO, unseen, "--split", "train", "--targets", "rest", "--out", out)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    scenes = SceneFile(unseen)
    margins = []
    for row in rows:
        rgb = scenes.read_views(int(row["scene_index"]), fields=("rgb",))["rgb"].astype(np.float64) / 255
        inputs = [int(v) for v in row["input_views"].split()]
        targets = np.delete(rgb, inputs, axis=0)
        mean_colour = rgb[inputs].mean(axis=(0, 1, 2))
        baseline = -10 * np.log10(((targets - mean_colour) ** 2).mean())
        margins.append(float(row["psnr"]) - baseline)
    assert len(margins) == 8 and np.mean(margins) > 5 and min(margins) > 2, margins


@pytest.mark.skipif(not DEMO_SRN.is_file(), reason="the shipped SRN demo checkpoint is not in this checkout")
def test_the_shipped_srn_beats_the_white_background_on_held_out_views_of_its_training_objects(tmp_path):
    """The first 6 training objects of the SRN checkpoint's recipe, regenerated (an object and
    its views depend only on the seed, its index and the number of views): on the 5 views of
    each that training held out, rendered from its trained code, the object pixels of every
    object beat the white background, computed here on the same pixels, by 5 dB (issue 13's
    bar), and by 8 dB on average (measured: 7.3 to 14.3, mean 10.5; with the pixel coordinates
    transposed, 1.3 to 10.4, mean 7.1)."""
    objects = tmp_path / "objects.h5"
    convert(SyntheticSource(scenes=1000, views=30, test_views=50, size=64, seed=1, kind="objects"), objects,
            codec="raw", splits=["train"], limit=6)
    out = tmp_path / "eval.json"
    result = run_command("eval", DEMO_SRN, objects, "--split", "train", "--targets", "held_out", "--set",
                         "model.fit.steps=0", "--out", out)  # a missing code would have to be fitted: refused
    assert result.returncode == 0, result.stderr
    rows = {int(row["scene_index"]): row for row in csv.DictReader(out.with_suffix(".csv").open())}
    scenes = SceneFile(objects)
    margins = []
    for index, row in rows.items():
        views = scenes.read_views(index, np.arange(25, 30), ("rgb", "instance"))
        target = views["rgb"][views["instance"] > 0].astype(np.float64) / 255
        white = -10 * np.log10(((1.0 - target) ** 2).mean())
        margins.append(float(row["psnr_objects"]) - white)
    assert len(margins) == 6 and min(margins) > 5 and np.mean(margins) > 8, margins


@pytest.mark.skipif(not DEMO.is_file(), reason="the shipped demo checkpoint is not in this checkout")
def test_the_shipped_demo_checkpoint_loads_and_renders_its_preview(tmp_path):
    model, state, run = ckpt.load_model(DEMO)
    assert run is None and state["model_name"] == "srt" and state["step"] == 17000
    assert state["optimizer"] is None and count_parameters(model) == sum(v.numel() for v in state["model"].values())
    assert state["preview"]["name"] == "scene_008000" and len(state["preview"]["rgb_png"]) == 10
    result = run_command("render", DEMO, "--frames", 2, "--size", "16x16", "-o", tmp_path / "frames")
    assert result.returncode == 0 and len(list((tmp_path / "frames" / "rgb").glob("*.png"))) == 2, result.stderr
