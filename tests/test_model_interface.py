"""The model interface: a model from outside scenetools trains, evaluates and renders
through the commands, and evaluation never hands a model what it is scored on."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tiny_model
from scenetools import config as configs
from scenetools.evaluate import evaluate
from scenetools.scenefile import SceneFile

TESTS = Path(__file__).parent
TINY_CONFIG = """model: {hidden: 8}
data: {protocol: msn, num_inputs: 2, num_rays: 64}
training: {batch_size: 4, lr: 1.0e-2, lr_warmup: 1, max_steps: 12, log_every: 4, checkpoint_every: 4,
           validate_every: 6, visualize_every: 12, validate_scenes: 2, num_workers: 0}
"""


def run_with_plugin(module, *args, cwd):
    env = dict(os.environ, SCENETOOLS_PLUGINS="tiny_model",
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", f"scenetools.cli.{module}", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env)


def test_a_plugin_model_trains_evaluates_and_renders_through_the_commands(synthetic_file, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    run = tmp_path / "run"
    trained = run_with_plugin("train", "tiny", synthetic_file, "--config", config, "--out", run, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_losses = [entry["loss"] for entry in logged if entry["split"] == "train"]
    assert len(train_losses) == 3 and all("psnr" in e for e in logged)
    assert any(entry["split"] == "val" and "fg_ari" in entry for entry in logged)

    out = tmp_path / "eval.json"
    evaluated = run_with_plugin("eval", run, synthetic_file, "--split", "test", "--out", out, cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    results = json.loads(out.read_text())["results"]
    for key in ("psnr", "ssim", "ari", "fg_ari", "ari_input", "baseline_random_fg_ari", "depth_mae"):
        assert results[key] is not None, key

    frames = tmp_path / "frames"
    rendered = run_with_plugin("render", run, "--frames", 3, "--outputs", "rgb,segmentation,depth", "-o", frames,
                               cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert len(list(frames.rglob("*.png"))) == 9


def test_evaluation_hands_encode_only_the_input_views(synthetic_file):
    seen = []

    class Recording(tiny_model.TinyModel):
        def encode(self, inputs):
            seen.append(sorted(inputs))
            return super().encode(inputs)

    data = configs.merge(configs.DEFAULTS["data"], {"num_inputs": 2, "num_rays": 64})
    evaluate(Recording(), SceneFile(synthetic_file), "test", data, torch.device("cpu"), max_scenes=2)
    assert seen and all(not any(k.startswith("target_") for k in keys) for keys in seen)
    assert {"input_images", "input_rays", "input_camera_to_world"} <= set(seen[0])


def test_3d_ari_at_surface_points_matches_sklearn(synthetic_file):
    """The 3D ARI scores each true surface point by the slot with the highest density there:
    here a model whose slots split space at x = 0, against sklearn on the same points."""
    from sklearn.metrics import adjusted_rand_score

    from scenetools.data import make_dataset
    from scenetools.evaluate import surface_segmentation

    class HalfSpaces(tiny_model.TinyModel):
        def point_segmentation(self, scene, points):
            right = (points[..., :1] > 0).float()
            return torch.cat([right, 1 - right], -1)

    scenes = SceneFile(synthetic_file)
    data = configs.merge(configs.DEFAULTS["data"], {"num_inputs": 2})
    item = make_dataset(scenes, "test", data, seed=0, num_rays=None)[0]
    batch = {k: v[None] for k, v in item.items()}
    scores = surface_segmentation(HalfSpaces(), {}, batch)
    depth = item["target_depth"]
    hit = torch.isfinite(depth) & (depth > 0)
    points = item["target_camera_pos"][hit] + depth[hit, None] * item["target_rays"][hit]
    truth, slots = item["target_instance"][hit].numpy(), (points[:, 0] > 0).long().numpy()
    assert scores["ari_3d"] == pytest.approx(adjusted_rand_score(truth, slots), abs=1e-9)
    fg = truth > 0
    assert scores["fg_ari_3d"] == pytest.approx(adjusted_rand_score(truth[fg], slots[fg]), abs=1e-9)
    assert abs(scores["baseline_random_ari_3d"]) < 0.05
