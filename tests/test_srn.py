"""SRN: sizes against the reference, the ray marcher on an analytic scene, the loss by hand,
latent codes found by scene key (never by row), test-time latent fitting, and the generic
pieces it brought (resolution curriculum, resized views)."""
import json

import numpy as np
import pytest
import torch

from conftest import run_command
from scenetools import checkpoint as ckpt
from scenetools import config as configs
from scenetools.data import SceneDataset, ViewSelection, resize_views, scene_keys
from scenetools.errors import BadInput
from scenetools.models import build_model
from scenetools.models.base import encoder_inputs
from scenetools.models.layers import LSTMRayMarcher
from scenetools.models.srn import SRN
from scenetools.scenefile import SceneFile
from scenetools.train import stages

TINY = dict(latent_dim=16, phi_hidden=32, phi_layers=3, hyper_hidden=32, pixel_hidden=32, pixel_layers=2,
            tracing_steps=6)


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_match_the_reference():
    model = SRN()  # the released cars / chairs models
    assert count(model.hypernetwork) == 51_519_232
    assert count(model.ray_marcher) == 17_553
    assert count(model.pixel_generator) == 332_291
    assert count(model) == 51_869_076  # no training scenes yet
    model.use_training_scenes(torch.arange(7))
    assert count(model) == 51_869_076 + 7 * 256
    for preset in ("cars", "chairs"):
        config = configs.resolve("srn", f"srn/{preset}")
        assert count(build_model("srn", config["model"])) == 51_869_076
        assert config["training"]["lr"] == 5e-5


def test_curriculum_follows_the_reference():
    cars = stages(*(lambda c: (c["training"], c["data"]))(configs.resolve("srn", "srn/cars")))
    chairs = stages(*(lambda c: (c["training"], c["data"]))(configs.resolve("srn", "srn/chairs")))
    assert [(s.start, s.end, s.batch_size, s.resolution) for s in cars] == [(0, 5000, 64, 64),
                                                                           (5000, 175000, 16, 128)]
    assert [(s.start, s.end, s.batch_size, s.resolution) for s in chairs] == [(0, 20000, 64, 64),
                                                                             (20000, 574000, 16, 128)]
    cut = stages({"max_steps": 100, "batch_size": 4, "curriculum": [{"steps": 150, "resolution": 8}, {"steps": 9}]},
                 {"num_rays": 10})
    assert [(s.start, s.end, s.batch_size, s.resolution, s.num_rays) for s in cut] == [(0, 100, 4, 8, 10)]


def test_the_ray_marcher_reaches_a_sphere():
    """With the LSTM wired to pass phi's signed distance through (input gate open, forget gate
    shut, tanh in its linear range, the step layer undoing the scale), the marcher is sphere
    tracing and must stop on the sphere's surface."""
    marcher = LSTMRayMarcher(feature_dim=4, hidden=16, steps=30)
    scale = 1e-3
    with torch.no_grad():
        for p in marcher.parameters():
            p.zero_()
        H = 16  # gate order: input, forget, cell, output
        marcher.lstm.bias_ih[:H] = 20.0  # input gate 1
        marcher.lstm.bias_ih[H:2 * H] = -20.0  # forget gate 0
        marcher.lstm.weight_ih[2 * H, 0] = scale  # cell input tanh(scale * sdf)
        marcher.lstm.bias_ih[3 * H:] = 20.0  # output gate 1
        marcher.out_layer.weight[0, 0] = 1 / scale  # h = tanh(tanh(scale sdf)) ~ scale sdf
    centre, radius = torch.tensor([0.3, -0.2, 5.0]), 1.0
    phi = lambda x: torch.cat([(x - centre).norm(dim=-1, keepdim=True) - radius, torch.zeros(*x.shape[:-1], 3)], -1)
    g = torch.Generator().manual_seed(0)
    target = centre + 0.6 * (torch.rand(1, 50, 3, generator=g) - 0.5)  # points inside the sphere
    origins = torch.zeros(1, 50, 3)
    directions = torch.nn.functional.normalize(target - origins, dim=-1)
    points, distance = marcher(phi, origins, directions, torch.full((1, 50), 0.05))
    # analytic first hit: |o + t d - c| = r
    b = (directions * (origins - centre)).sum(-1)
    c = ((origins - centre) ** 2).sum(-1) - radius ** 2
    hit = -b - torch.sqrt(b ** 2 - c)
    assert torch.allclose(distance, hit, atol=2e-3), (distance - hit).abs().max()
    assert torch.allclose(points, origins + hit[..., None] * directions, atol=2e-3)


def test_the_loss_by_hand():
    model = SRN(**TINY)
    colour = torch.tensor([[[0.5, -1.0, 0.0], [1.0, 1.0, 1.0]]])  # [-1, 1]
    target = torch.tensor([[[0.5, 0.0, 0.5], [1.0, 1.0, 1.0]]])  # [0, 1] -> [0, -1, 0], [1, 1, 1]
    distance = torch.tensor([[-0.1, 2.0]])
    code = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    loss, logs = model.loss(colour, distance, code, target)
    image = (0.5 ** 2 + 0 + 0) / 6  # one off value, 6 channels
    latent = 4.0 / 4
    depth = (0.01 / 2) * 10000
    assert float(loss[0]) == pytest.approx(200 * image + latent + 1e-3 * depth)
    assert float(logs["mse"]) == pytest.approx(image / 4)  # in [0, 1] units


def test_codes_are_found_by_scene_key_and_a_missing_one_is_a_clear_error(synthetic_file):
    scenes = SceneFile(synthetic_file)
    train = scenes.split("train")
    model = SRN(**TINY).train()
    model.use_training_scenes(scene_keys(scenes, train[::-1]))  # table rows in another order than file rows
    dataset = SceneDataset(scenes, "train", ViewSelection(1), num_rays=8)
    item = {k: v[None] for k, v in dataset[0].items()}
    row = int(item["scene_index"])
    code = model.encode(encoder_inputs(item))["code"]
    assert torch.equal(code[0], model.latent_codes.weight[len(train) - 1 - list(train).index(row)])
    unseen = {k: v[None] for k, v in SceneDataset(scenes, "test", ViewSelection(1), num_rays=8)[0].items()}
    with pytest.raises(BadInput, match="no latent code"):
        model.encode(encoder_inputs(unseen))  # training: no fitting
    model.eval()
    with torch.no_grad(), pytest.raises(BadInput, match="model.fit.steps"):
        model.encode(encoder_inputs(unseen))  # no gradients: no fitting


def _train_tiny(scenes, steps=40):
    torch.manual_seed(0)
    model = SRN(**TINY, fit={"steps": 60, "lr": 2e-2, "rays": 576})
    dataset = SceneDataset(scenes, "train", ViewSelection(1, targets="all"), num_rays=256)
    model.use_training_scenes(scene_keys(scenes, dataset.scene_indices))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        batch = {k: torch.stack([dataset[(step, i)][k] for i in range(len(dataset))]) for k in dataset[0]}
        loss, _ = model(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _view_error(model, code, item, view):
    """MSE of a render with ``code``: of the input view, or of the target view whose camera is
    nearest the input camera (``nearest``: held out, seen from close by)."""
    if view == "input":
        rays = item["input_rays"].reshape(1, -1, 3)
        pos = item["input_camera_pos"][:, :, None, None].expand(item["input_rays"].shape).reshape(1, -1, 3)
        truth = item["input_images"].permute(0, 1, 3, 4, 2).reshape(1, -1, 3)
    else:
        per_view = item["target_rays"].shape[1] // len(item["target_views"][0])
        gap = (item["target_camera_pos"][0, ::per_view] - item["input_camera_pos"][0, :1]).norm(dim=-1)
        pick = slice(int(gap.argmin()) * per_view, (int(gap.argmin()) + 1) * per_view)
        rays, pos, truth = (item[k][:, pick] for k in ("target_rays", "target_camera_pos", "target_pixels"))
    with torch.no_grad():
        rgb = model.render({"code": code}, pos, rays, None, None)["rgb"]
    return float(((rgb.clamp(0, 1) - truth) ** 2).mean())


def test_latent_fitting_lowers_the_error_on_the_fitted_and_a_held_out_view(synthetic_file, tmp_path):
    scenes = SceneFile(synthetic_file)
    model = _train_tiny(scenes)
    item = {k: v[None] for k, v in SceneDataset(scenes, "test", ViewSelection(1, "given", "rest", (0,)),
                                                 num_rays=None)[0].items()}
    start = torch.randn(1, TINY["latent_dim"], generator=torch.Generator().manual_seed(5)) * 0.01
    model.use_run_folder(tmp_path, "weights")
    fitted = model.encode(encoder_inputs(item))["code"]  # grad enabled, eval mode: fits
    assert not fitted.requires_grad
    assert _view_error(model, fitted, item, "input") < _view_error(model, start, item, "input")
    assert _view_error(model, fitted, item, "nearest") < _view_error(model, start, item, "nearest")
    # kept in the run folder and reused: a second model with the same weights fits nothing
    again = SRN(**TINY, fit=model.fit).eval()
    again.size_for_state(model.state_dict())
    again.load_state_dict(model.state_dict())
    again.use_run_folder(tmp_path, "weights")
    again.fit_codes = lambda inputs: pytest.fail("fitted again instead of reusing the saved code")
    assert torch.equal(again.encode(encoder_inputs(item))["code"], fitted)
    assert (tmp_path / "latents" / "weights.pt").is_file()


def test_keys_follow_the_scene_not_the_row(synthetic_file, tmp_path):
    from scenetools.convert import convert
    from scenetools.sources.synthetic import SyntheticSource

    scenes = SceneFile(synthetic_file)
    other_seed = tmp_path / "other.h5"  # the same scene names, other scenes
    convert(SyntheticSource(scenes=12, views=6, size=24, seed=4), other_seed, codec="raw")
    keys, other = scene_keys(scenes, range(12)), scene_keys(SceneFile(other_seed), range(12))
    assert len(set(keys.tolist())) == 12
    assert not set(keys.tolist()) & set(other.tolist())
    assert scenes.names.tolist() == SceneFile(other_seed).names.tolist()


def test_a_missing_code_through_the_cli_exits_2(synthetic_file, tmp_path):
    config = configs.resolve("srn", "srn/synthetic", [f"model.{k}={v}" for k, v in TINY.items()])
    model = SRN(**config["model"])
    scenes = SceneFile(synthetic_file)
    model.use_training_scenes(scene_keys(scenes, scenes.split("train")))
    path = ckpt.save(tmp_path / "srn.pt", model_name="srn", config=config, model=model, step=1)
    result = run_command("eval", path, synthetic_file, "--split", "test", "--set", "model.fit.steps=0",
                         "--out", tmp_path / "m.json")
    assert result.returncode == 2, result.stderr
    assert "no latent code" in result.stderr and "model.fit.steps" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_held_out_views_of_training_scenes_are_scored_with_their_trained_codes(synthetic_file, tmp_path):
    """Novel views of the scenes SRN trained on (data.held_out_views, scene-eval --targets
    held_out): their own codes render them, so nothing is fitted (fit.steps 0 would refuse)."""
    config = configs.resolve("srn", "srn/synthetic", [f"model.{k}={v}" for k, v in TINY.items()]
                             + ["data.held_out_views=2"])
    model = SRN(**config["model"])
    scenes = SceneFile(synthetic_file)
    model.use_training_scenes(scene_keys(scenes, scenes.split("train")))
    path = ckpt.save(tmp_path / "srn.pt", model_name="srn", config=config, model=model, step=1)
    out = tmp_path / "m.json"
    result = run_command("eval", path, synthetic_file, "--split", "train", "--targets", "held_out", "--set",
                         "model.fit.steps=0", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["targets"] == "held-out views only" and metrics["num_items"] == len(scenes.split("train"))
    assert "fitting" not in result.stderr


def test_reference_keys_map_onto_ours():
    model = SRN(**TINY)
    ours = model.state_dict()
    reference = {"latent_codes.weight": torch.zeros(3, TINY["latent_dim"])}
    for layer in range(TINY["phi_layers"]):
        for block, part in ((0, 0), (0, 1), (1, 0), (1, 1)):
            for kind in ("weight", "bias"):
                name = f"hypernetwork.layers.{layer}.params.{3 * block + part}.{kind}"
                reference[f"hyper_phi.layers.{layer}.hyper_linear.hypo_params.net.{block}.net.{part}.{kind}"] = ours[name]
        for kind in ("weight", "bias"):
            reference[f"hyper_phi.layers.{layer}.hyper_linear.hypo_params.net.2.{kind}"] = \
                ours[f"hypernetwork.layers.{layer}.params.6.{kind}"]
    for key in ("lstm.weight_ih", "lstm.weight_hh", "lstm.bias_ih", "lstm.bias_hh", "out_layer.weight",
                "out_layer.bias"):
        reference[f"ray_marcher.{key}"] = ours[f"ray_marcher.{key}"]
    for block in range(TINY["pixel_layers"]):
        for part in (0, 1):
            for kind in ("weight", "bias"):
                reference[f"pixel_generator.net.{block}.net.{part}.{kind}"] = ours[f"pixel_generator.{3 * block + part}.{kind}"]
    for kind in ("weight", "bias"):
        reference[f"pixel_generator.net.{TINY['pixel_layers']}.{kind}"] = ours[f"pixel_generator.{3 * TINY['pixel_layers']}.{kind}"]
    state = SRN.from_reference({"model": reference, "optimizer": {}})
    assert set(state) == set(ours) and state["scene_keys"].tolist() == [-1, -2, -3]
    assert ckpt.is_reference(reference) and ckpt.is_reference({"model": reference})
    with pytest.raises(BadInput, match="unknown keys"):
        SRN.from_reference({"model": {**reference, "rendering_net.x": torch.zeros(1)}})


def test_resized_views_keep_the_rays_through_the_same_image_points(synthetic_file):
    from scenetools import cameras

    data = SceneFile(synthetic_file).read_views(0, [0, 1])
    small, H, W = resize_views(data, 12, 12)
    assert small["rgb"].shape == (2, 12, 12, 3)
    expected = data["rgb"][0, :2, :2].reshape(-1, 3).astype(float).mean(0)
    assert np.abs(small["rgb"][0, 0, 0] - expected).max() <= 0.5  # area average of the 2 x 2 block
    # the ray through the centre of small pixel (0, 0) is the ray through the corner shared by
    # the original pixels (0, 0)-(1, 1)
    a = cameras.rays_through(small["intrinsics"][0], data["camera_to_world"][0], np.array([[0.5, 0.5]]))
    b = cameras.rays_through(data["intrinsics"][0], data["camera_to_world"][0], np.array([[1.0, 1.0]]))
    assert np.allclose(a, b, atol=1e-9)
