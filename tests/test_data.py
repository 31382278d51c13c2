import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from scenetools import cameras
from scenetools.data import PROTOCOLS, SceneDataset, ShardedSampler, ViewSelection
from scenetools.scenefile import SceneFile


def pixel_of(item, r, scenes):
    """The (view, row, col) a target ray was taken from, found by projecting it."""
    scene = int(item["scene_index"])
    data = scenes.read_views(scene, fields=("rgb", "camera_to_world", "intrinsics", "depth", "instance"))
    point = item["target_camera_pos"][r].double().numpy() + 3.0 * item["target_rays"][r].double().numpy()
    for v in range(len(data["rgb"])):
        if np.allclose(data["camera_to_world"][v, :3, 3], item["target_camera_pos"][r].numpy(), atol=1e-4):
            uv, z = cameras.project(point, data["intrinsics"][v], data["camera_to_world"][v])
            return v, int(uv[1]), int(uv[0]), data
    raise AssertionError("no view has this camera position")


def test_target_rays_carry_the_colour_of_their_pixel(synthetic_file):
    scenes = SceneFile(synthetic_file)
    item = SceneDataset(scenes, "train", ViewSelection(2), num_rays=64)[3]
    for r in range(0, 64, 7):
        v, i, j, data = pixel_of(item, r, scenes)
        np.testing.assert_allclose(item["target_pixels"][r].numpy() * 255, data["rgb"][v, i, j], atol=1e-3)
        assert int(item["target_instance"][r]) == data["instance"][v, i, j]
        assert float(item["target_depth"][r]) == pytest.approx(float(data["depth"][v, i, j]))
        assert v not in item["input_views"].tolist()


def test_input_views_and_rays(synthetic_file):
    scenes = SceneFile(synthetic_file)
    item = SceneDataset(scenes, "val", ViewSelection(2), num_rays=10)[0]
    assert item["input_images"].shape == (2, 3, 24, 24) and item["input_rays"].shape == (2, 24, 24, 3)
    data = scenes.read_views(int(item["scene_index"]), item["input_views"].numpy())
    np.testing.assert_allclose(item["input_images"].permute(0, 2, 3, 1).numpy() * 255, data["rgb"], atol=1e-3)
    expected = cameras.ray_directions(data["intrinsics"], data["camera_to_world"], 24, 24)
    np.testing.assert_allclose(item["input_rays"].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(item["input_camera_pos"].numpy(), data["camera_to_world"][:, :3, 3], atol=1e-6)
    assert int(item["scene_index"]) in scenes.split("val")


@pytest.mark.parametrize("protocol, inputs, targets_include_input, items_per_scene", [
    ("nmr", 1, False, 6), ("msn", 5, False, 1), ("clevr3d", 1, True, 6)])
def test_reference_protocols(synthetic_file, protocol, inputs, targets_include_input, items_per_scene):
    dataset = SceneDataset(synthetic_file, "train", PROTOCOLS[protocol], num_rays=None)
    assert len(dataset) == 10 * items_per_scene
    firsts = set()
    for index in range(len(dataset)):
        item = dataset[index]
        views = item["input_views"].tolist()
        assert len(views) == inputs == len(set(views))
        targets = item["target_views"].tolist()
        assert (views[0] in targets) == targets_include_input
        expected = 6 if targets_include_input else 6 - inputs
        assert len(targets) == expected and item["target_pixels"].shape == (expected * 24 * 24, 3)
        firsts.add((int(item["scene_index"]), views[0]))
    if protocol != "msn":  # every (scene, view) pair is an input once per epoch
        assert len(firsts) == 60


def test_items_are_deterministic_per_seed_epoch_and_index(synthetic_file):
    a = SceneDataset(synthetic_file, "train", ViewSelection(2), num_rays=32, seed=7)
    b = SceneDataset(synthetic_file, "train", ViewSelection(2), num_rays=32, seed=7)
    assert torch.equal(a[4]["target_rays"], b[4]["target_rays"])
    assert torch.equal(a[(1, 4)]["target_rays"], b[(1, 4)]["target_rays"])
    b.set_epoch(1)
    assert not torch.equal(a[4]["target_rays"], b[4]["target_rays"])
    assert torch.equal(a[(1, 4)]["target_rays"], b[4]["target_rays"])


def test_sampler_shards_across_ranks():
    orders = [[i for _, i in ShardedSampler(10, rank, 3, seed=1)] for rank in range(3)]
    assert all(len(o) == 4 for o in orders)
    flat = sum(orders, [])
    assert set(flat) == set(range(10)) and len(flat) == 12  # 2 wrapped around to even out
    assert sorted(np.bincount(flat).tolist()) == [1] * 8 + [2] * 2
    even = [{i for _, i in ShardedSampler(12, rank, 3, seed=1)} for rank in range(3)]
    assert even[0].isdisjoint(even[1]) and even[1].isdisjoint(even[2]) and even[0].isdisjoint(even[2])
    resumed = ShardedSampler(10, 1, 3, seed=1)
    resumed.set_epoch(0, start=2)
    assert list(resumed) == [(0, i) for i in orders[1][2:]] and len(resumed) == 2
    other = ShardedSampler(10, 0, 3, seed=1)
    other.set_epoch(1)
    assert [e for e, _ in other] == [1] * 4 and [i for _, i in other] != orders[0]


def test_dataloader_workers_each_item_once_and_file_opened_per_worker(synthetic_file):
    scenes = SceneFile(synthetic_file)
    scenes.read_views(0)  # the parent has an open handle before the workers fork
    dataset = SceneDataset(scenes, "train", ViewSelection(1), num_rays=16)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, sampler=ShardedSampler(len(dataset), seed=0))
    seen = torch.cat([batch["scene_index"] for batch in loader]).tolist()
    assert sorted(seen) == sorted(scenes.split("train").tolist())
    serial = torch.cat([b["target_pixels"] for b in DataLoader(dataset, batch_size=3,
                                                               sampler=ShardedSampler(len(dataset), seed=0))])
    parallel = torch.cat([b["target_pixels"] for b in loader])
    assert torch.equal(serial, parallel)  # the same rays whichever worker read them


@pytest.mark.parametrize("inputs, targets", [("random", "rest"), ("random", "all"), ("each", "all")])
def test_held_out_views_are_never_inputs_or_targets_of_training_items(synthetic_file, inputs, targets):
    """Scenes of 6 views with the last 2 held out: every item, over several epochs, takes its
    inputs and targets from views 0 to 3 only (and uses all four); `each` makes 4 items per scene."""
    dataset = SceneDataset(synthetic_file, "train", ViewSelection(2, inputs, targets, held_out=2), num_rays=None)
    assert len(dataset) == 10 * (4 if inputs == "each" else 1)
    inputs_seen, targets_seen = set(), set()
    for epoch in range(3):
        for index in range(len(dataset)):
            item = dataset[epoch, index]
            inputs_seen.update(item["input_views"].tolist())
            targets_seen.update(item["target_views"].tolist())
    assert inputs_seen == targets_seen == {0, 1, 2, 3}


def test_held_out_targets_are_exactly_the_held_out_views(synthetic_file):
    dataset = SceneDataset(synthetic_file, "train", ViewSelection(1, "random", "held_out", held_out=2), num_rays=None)
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["target_views"].tolist() == [4, 5] and item["input_views"].item() < 4
    with pytest.raises(ValueError, match="needs held-out views"):
        ViewSelection(1, "random", "held_out")
    with pytest.raises(ValueError, match="at least 8 views"):
        SceneDataset(synthetic_file, "train", ViewSelection(5, held_out=2))


def test_too_few_views_for_protocol(synthetic_file):
    with pytest.raises(ValueError, match="at least 7 views"):
        SceneDataset(synthetic_file, "train", ViewSelection(6))


def test_input_stride_keeps_every_other_pixel_and_its_ray(synthetic_file):
    full = SceneDataset(synthetic_file, "train", ViewSelection(1, "first"), num_rays=8)[0]
    half = SceneDataset(synthetic_file, "train", ViewSelection(1, "first"), num_rays=8, input_stride=2)[0]
    assert half["input_images"].shape == (1, 3, 12, 12)
    assert torch.equal(half["input_images"], full["input_images"][:, :, 1::2, 1::2])
    assert torch.equal(half["input_rays"], full["input_rays"][:, 1::2, 1::2])
    # the adjusted intrinsics give the kept pixels' rays
    K, c2w = half["input_intrinsics"][0].double().numpy(), half["input_camera_to_world"][0].double().numpy()
    np.testing.assert_allclose(cameras.ray_directions(K, c2w, 12, 12), half["input_rays"][0].numpy(), atol=1e-6)


def test_infinite_sampler_runs_whole_batches_across_epochs_and_resumes_by_step():
    sampler = ShardedSampler(10, rank=1, world_size=2, seed=3, batch_size=2, infinite=True)
    assert sampler.batches_per_epoch == 2  # 5 items per rank -> 2 whole batches of 2
    stream = [next(it) for it in [iter(sampler)] for _ in range(12)]
    assert [e for e, _ in stream] == [0] * 4 + [1] * 4 + [2] * 4
    assert [i for _, i in stream[:4]] == sampler.epoch_order(0)
    # resuming at step 3 (epoch 1, batch 1) continues the same stream
    resumed = ShardedSampler(10, rank=1, world_size=2, seed=3, batch_size=2, infinite=True)
    resumed.set_epoch(1, start=2)
    assert [next(it) for it in [iter(resumed)] for _ in range(6)] == stream[6:12]
