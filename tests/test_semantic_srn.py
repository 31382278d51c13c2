"""Semantic SRN: sizes against the reference, a head fitted on a frozen SRN (through
scene-train, starting from an SRN checkpoint), the joint model on whole images, and the
few-shot data selection (named scenes, given target views, images per item)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_command
from scenetools import checkpoint as ckpt
from scenetools import config as configs
from scenetools.convert import convert
from scenetools.data import SceneDataset, ViewSelection, make_dataset, scene_keys
from scenetools.errors import BadInput
from scenetools.models import build_model
from scenetools.models.base import encoder_inputs
from scenetools.models.layers import UNet
from scenetools.models.semantic_srn import SemanticSRN
from scenetools.models.srn import SRN
from scenetools.scenefile import SceneFile
from scenetools.sources.synthetic import SyntheticSource

SHIPPED_SRN = Path(__file__).resolve().parent.parent / "examples" / "demo-checkpoint" / "srn-synthetic.pt"
TINY = dict(latent_dim=8, phi_hidden=16, phi_layers=3, hyper_hidden=16, pixel_hidden=16, pixel_layers=2,
            tracing_steps=5)


def sets(*overrides):
    return [arg for override in overrides for arg in ("--set", override)]


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    """8 part-labelled chairs and tables (7 classes with the background), 8 views of 32 px."""
    path = tmp_path_factory.mktemp("semantic") / "objects.h5"
    convert(SyntheticSource(scenes=8, views=8, test_views=8, size=32, seed=0, kind="objects",
                            categories=("chair", "table")), path, codec="raw")
    return path


@pytest.fixture(scope="module")
def srn_checkpoint():
    """The shipped SRN demo checkpoint (examples/demo-checkpoint/srn-synthetic.pt)."""
    if not SHIPPED_SRN.is_file():
        pytest.skip("the shipped SRN demo checkpoint is not in this checkout")
    return SHIPPED_SRN


@pytest.fixture(scope="module")
def its_objects(tmp_path_factory):
    """Its first 6 training objects, regenerated (their codes are in it): 30 views of 64 px."""
    path = tmp_path_factory.mktemp("its-objects") / "objects.h5"
    convert(SyntheticSource(scenes=1000, views=30, test_views=50, size=64, seed=1, kind="objects"), path,
            codec="raw", splits=["train"], limit=6)
    return path


def test_parameter_counts_match_the_reference():
    """The issue's counts, measured by instantiating apsk14/semantic_scene_representations:
    SRNsModel(seg=True) 55,468,949 + 1,153·C + 256 per scene; LinearModel 257·C; MLP
    265,216 + 257·C."""
    for classes in (2, 7):
        joint = SemanticSRN(num_classes=classes)
        assert count(joint) == 55_468_949 + 1_153 * classes
        joint.use_training_scenes(torch.arange(3))
        assert count(joint) == 55_468_949 + 1_153 * classes + 3 * 256
        srn = {"phi_hidden": 256, "hyper_hidden": 4, "latent_dim": 4}  # the head sees phi's 256 features
        assert count(build_model("srn_head", {"num_classes": classes, "srn": srn}).head) == 257 * classes
        mlp = build_model("srn_head", {"num_classes": classes, "head": "mlp", "srn": srn}).head
        assert count(mlp) == 265_216 + 257 * classes
    assert count(UNet(256, 5)) == 3_599_616 + 1_153 * 5  # 3x3 output conv from 128 channels: 1,153 per class


def test_the_unet_keeps_the_image_size():
    unet = UNet(16, 5, nf0=8, num_down=3, max_channels=16)
    assert unet(torch.randn(2, 16, 24, 32)).shape == (2, 5, 24, 32)


@pytest.fixture(scope="module")
def head_run(its_objects, srn_checkpoint, tmp_path_factory):
    """scene-train srn_head from the shipped SRN: 40 steps on views 0-2 of 4 of its objects."""
    run = tmp_path_factory.mktemp("head") / "run"
    names = ",".join(f"object_{i:06d}" for i in range(4))
    result = run_command("train", "srn_head", its_objects, "--config", "srn_head/synthetic", "--init-from",
                         srn_checkpoint, "--out", run, "--max-steps", 40, *sets(f"data.train_scenes=[{names}]",
                         "data.num_rays=1024", "training.batch_size=4",
                         "training.validate_every=100", "training.visualize_every=100"))
    assert result.returncode == 0, result.stderr
    return run


def test_fitting_a_head_touches_no_srn_weight(srn_checkpoint, head_run):
    srn = torch.load(srn_checkpoint, weights_only=True)
    head = torch.load(head_run / "checkpoints" / "latest.pt", weights_only=True)
    assert head["model_name"] == "srn_head" and head["step"] == 40
    for key, value in srn["model"].items():
        assert torch.equal(head["model"][f"srn.{key}"], value), key
    config = configs.load_yaml(head_run / "config.yaml")
    assert config["model"]["srn"] == srn["config"]["model"]  # sizes taken from the checkpoint
    assert config["model"]["num_classes"] == 13  # from the file's semantic_classes
    assert (head_run / config["training"]["init_from"]).resolve() == srn_checkpoint.resolve()  # relative to the run
    torch.manual_seed(0)
    assert not torch.equal(head["model"]["head.weight"], build_model("srn_head", config["model"]).head.weight)


def test_a_short_run_beats_the_majority_class_baseline(its_objects, head_run, tmp_path):
    """On the 5 held-out views of the 6 training objects (4 of them labelled for the head),
    the head's mIoU beats the majority class per pixel of the training labels."""
    out = tmp_path / "m.json"
    result = run_command("eval", head_run, its_objects, "--split", "train", "--targets", "held_out", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())["results"]
    assert metrics["miou"] > metrics["baseline_majority_miou"] + 0.05, {k: v for k, v in metrics.items() if "miou" in k}


def test_the_head_trains_only_its_own_weights_in_process():
    """The optimizer sees the head alone, and the SRN stays in evaluation mode (no jitter)."""
    from scenetools.train import make_optimizer

    model = build_model("srn_head", {"num_classes": 7, "srn": TINY})
    model.train()
    assert not model.srn.training and model.head.training
    (group,) = make_optimizer(model, 1e-3, torch.device("cpu")).param_groups
    assert sum(p.numel() for p in group["params"]) == 17 * 7


def test_a_head_cannot_start_from_another_model(objects, tmp_path):
    other = ckpt.save(tmp_path / "srt.pt", model_name="srt", config={"model": {}}, model=torch.nn.Linear(1, 1),
                      step=1)
    result = run_command("train", "srn_head", objects, "--config", "srn_head/synthetic", "--init-from", other,
                         "--out", tmp_path / "run", *sets(f"model.srn={json.dumps(TINY)}", "data.train_scenes=null"))
    assert result.returncode == 2 and "checkpoint of model 'srt'" in result.stderr, result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_joint_model_learns_classes_on_whole_images(objects):
    torch.manual_seed(0)
    scenes = SceneFile(objects)
    model = SemanticSRN(num_classes=7, unet_channels=8, unet_levels=2, unet_max_channels=16, **TINY)
    dataset = SceneDataset(scenes, "train", ViewSelection(1, targets="all", num_targets=1), num_rays=None)
    model.use_training_scenes(scene_keys(scenes, dataset.scene_indices))
    item = dataset[0]
    assert item["image_size"].tolist() == [32, 32] and item["target_rays"].shape == (32 * 32, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(25):
        batch = {k: torch.stack([dataset[(step, i)][k] for i in range(4)]) for k in item}
        loss, logs = model(batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(logs["class_loss"]))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    model.eval()
    batch = {k: v[None] for k, v in item.items()}
    with torch.no_grad():
        scene = model.encode(encoder_inputs(batch))
        whole = model.render(scene, batch["target_camera_pos"], batch["target_rays"], None, None,
                             image_size=(32, 32))
        rays_only = model.render(scene, batch["target_camera_pos"], batch["target_rays"], None, None)
    assert whole["semantic"].shape == (1, 32 * 32, 7) and "semantic" not in rays_only
    assert torch.equal(whole["rgb"], rays_only["rgb"])
    sampled = SceneDataset(scenes, "train", ViewSelection(1), num_rays=64)[0]  # rays, not images
    with pytest.raises(BadInput, match="whole images"):
        model.train()({k: v[None] for k, v in sampled.items()}, 0)


def test_the_joint_model_starts_from_an_srn_keeping_its_codes_by_scene(its_objects, srn_checkpoint):
    shipped = torch.load(srn_checkpoint, weights_only=True)
    srn = shipped["model"]
    scenes = SceneFile(its_objects)
    model = SemanticSRN(num_classes=13, unet_channels=8, unet_levels=2, unet_max_channels=16,
                        **shipped["config"]["model"])
    keys = torch.cat([scene_keys(scenes, scenes.split("train")[::-1]), torch.tensor([12345])])  # + one it never saw
    model.use_training_scenes(keys)
    fresh = model.latent_codes.weight[-1].detach().clone()
    state = model.initial_state("srn", srn)
    model.load_state_dict(state)
    shipped_keys = srn["scene_keys"].tolist()
    for row, key in enumerate(keys[:-1].tolist()):
        assert torch.equal(model.latent_codes.weight[row], srn["latent_codes.weight"][shipped_keys.index(key)])
    assert torch.equal(model.latent_codes.weight[-1], fresh)
    last = f"pixel_generator.{len(model.pixel_generator) - 1}"  # RGB rows from the SRN, alpha fresh
    assert torch.equal(state[f"{last}.weight"][:3], srn[f"{last}.weight"])
    assert torch.equal(state["hypernetwork.layers.0.params.0.weight"], srn["hypernetwork.layers.0.params.0.weight"])


def test_named_scenes_and_given_target_views(objects):
    scenes = SceneFile(objects)
    config = {"num_inputs": 1, "target_views": [0, 1, 2], "num_rays": None,
              "train_scenes": ["object_000003", "object_000001"]}
    dataset = make_dataset(scenes, "train", config, seed=0)
    assert [scenes.names[i] for i in dataset.scene_indices] == ["object_000003", "object_000001"]
    assert dataset[0]["target_views"].tolist() == [0, 1, 2]
    with pytest.raises(BadInput, match="no scene 'object_999999'"):
        make_dataset(scenes, "train", {**config, "train_scenes": ["object_999999"]}, seed=0)
    with pytest.raises(BadInput, match="target view 9 does not exist"):
        make_dataset(scenes, "train", {**config, "target_views": [9]}, seed=0)
    drawn = SceneDataset(scenes, "train", ViewSelection(1, targets="all", num_targets=2), num_rays=None)
    views = {tuple(drawn[(epoch, 0)]["target_views"].tolist()) for epoch in range(6)}
    assert all(len(v) == 2 for v in views) and len(views) > 1  # two views, drawn per epoch
