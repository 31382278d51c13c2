"""LPIPS from local weight files (the hardening issue): the lpips package's AlexNet formula,
weights in torchvision's and lpips's own layouts, a clear error for a bad file, and a note
on stderr when scene-eval cannot score it."""
import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from scenetools import lpips
from scenetools.convert import convert
from scenetools.errors import BadInput
from scenetools.sources.synthetic import SyntheticSource
from conftest import assert_bad_input, run_command
import processes

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-checkpoint" / "srt-synthetic.pt"
CHANNELS = (64, 192, 384, 256, 256)


def torchvision_alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features``, written out layer by layer."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights saved as the two real files are: torchvision's AlexNet state dict and
    lpips's v0.1 linear layers (non-negative, as trained)."""
    folder = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    features = torchvision_alexnet_features()
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}
               | {"classifier.1.weight": torch.zeros(4, 9216)}, folder / lpips.BACKBONE_FILE)
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(CHANNELS)}
    torch.save(linear, folder / lpips.LINEAR_FILE)
    return folder, features, linear


def package_formula(features, linear, a, b):
    """The lpips package's LPIPS(net='alex', version='0.1'): scaling layer, the ReLU outputs
    of AlexNet's five convolutions, each unit-normalised over channels, squared difference,
    the linear layer, mean over pixels, summed over layers."""
    shift = torch.tensor([-.030, -.088, -.188])[None, :, None, None]
    scale = torch.tensor([.458, .448, .450])[None, :, None, None]
    taps = {1, 4, 7, 9, 11}

    def feats(x):
        out, x = [], (x - shift) / scale
        for i, layer in enumerate(features[:12]):  # the last max-pool feeds no tap
            x = layer(x)
            if i in taps:
                out.append(x)
        return out

    total = torch.zeros(a.shape[0])
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weight = linear[f"lin{k}.model.1.weight"][0, :, 0, 0]
        total += torch.einsum("nchw,c->nhw", (na - nb) ** 2, weight).mean((1, 2))
    return total


def test_lpips_is_the_package_formula_on_weights_in_their_own_files(weights):
    folder, features, linear = weights
    metric = lpips.from_folder(folder)
    torch.manual_seed(1)
    a, b = torch.rand(3, 3, 64, 48) * 2 - 1, torch.rand(3, 3, 64, 48) * 2 - 1
    expected = package_formula(features, linear, a, b)
    assert torch.allclose(metric(a, b), expected, rtol=1e-4, atol=1e-7)
    assert (expected > 0).all()
    assert torch.allclose(metric(a, a), torch.zeros(3), atol=1e-7)
    side = lpips.MIN_SIZE  # the smallest image AlexNet's max-pools leave a pixel of
    small_a, small_b = a[..., :side, :side], b[..., :side, :side]
    assert torch.allclose(metric(small_a, small_b), package_formula(features, linear, small_a, small_b), rtol=1e-4)


def test_a_missing_or_wrong_weight_file_is_bad_input_naming_it(weights, tmp_path):
    folder, _, linear = weights
    with pytest.raises(BadInput, match="no such weight file") as error:
        lpips.load(tmp_path / "absent.pth", folder / lpips.LINEAR_FILE)
    assert "absent.pth" in str(error.value)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(BadInput, match="not a readable weight file"):
        lpips.load(tmp_path / "junk.pth", folder / lpips.LINEAR_FILE)
    torch.save({k: v[:, :8] for k, v in linear.items()}, tmp_path / "narrow.pth")
    with pytest.raises(BadInput, match="has shape"):
        lpips.load(folder / lpips.BACKBONE_FILE, tmp_path / "narrow.pth")
    with pytest.raises(BadInput, match="no features.0.weight"):
        lpips.load(folder / lpips.LINEAR_FILE, folder / lpips.LINEAR_FILE)


@pytest.fixture(scope="module")
def scenes64(tmp_path_factory):
    path = tmp_path_factory.mktemp("lpips-scenes") / "scenes.h5"
    convert(SyntheticSource(scenes=3, views=10, size=64, seed=5, generator_version=2), path, codec="raw")
    return path


def test_scene_eval_scores_lpips_from_the_folder_given(weights, scenes64, tmp_path):
    folder, features, linear = weights
    out = tmp_path / "eval.json"
    result = run_command("eval", DEMO, scenes64, "--split", "train", "--scenes", "1", "--out", out,
                         "--lpips", folder)
    assert result.returncode == 0, result.stderr
    assert "LPIPS not scored" not in result.stderr
    assert json.loads(out.read_text())["results"]["lpips"] > 0


def test_scene_eval_rejects_a_lpips_folder_without_the_weights(scenes64, tmp_path):
    out = tmp_path / "eval.json"
    result = run_command("eval", DEMO, scenes64, "--split", "train", "--out", out, "--lpips", tmp_path)
    assert_bad_input(result, [tmp_path / lpips.BACKBONE_FILE, "no such weight file"], out)


def test_scene_eval_says_why_lpips_is_missing(scenes64, tmp_path):
    out = tmp_path / "eval.json"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home")}
    result = processes.run([sys.executable, "-m", "scenetools.cli.eval", str(DEMO), str(scenes64), "--split",
                            "train", "--scenes", "1", "--out", str(out)], env=env)
    assert result.returncode == 0, result.stderr
    assert "LPIPS not scored: no " + str(tmp_path / "torch-home" / "hub" / "checkpoints" / lpips.BACKBONE_FILE) \
        in result.stderr
    assert "lpips" not in json.loads(out.read_text())["results"]
