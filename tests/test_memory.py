"""The memory estimate of --dry-run and --accumulate auto: saved-for-backward bytes against
hand counts, its scaling with the micro-batch, and the choice of N for a faked device."""
import math

import pytest
import torch
import yaml

from scenetools import config as configs
from scenetools import memory
from scenetools.cli.train import main
from scenetools.distributed import Process
from scenetools.models import build_model
from scenetools.train import build_inputs, memory_estimates
from conftest import assert_bad_input

TINY = """
model:
  encoder: {num_conv_blocks: 2, num_att_blocks: 1, dim: 32, heads: 2, dim_head: 16, mlp_dim: 64, conv_channels: 8}
  decoder: {type: lightfield, num_att_blocks: 1, heads: 2, hidden: 32}
data: {protocol: msn, num_inputs: 2, num_rays: 64}
training: {batch_size: 8, max_steps: 1, num_workers: 0, validate_scenes: 2, lr_warmup: 0}
"""


class TwoLayers(torch.nn.Module):
    """Linear(4, 8) -> ReLU -> Linear(8, 2), summed: the training objective of a batch {"x": [B, 4]}."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def forward(self, batch, step):
        return self.net(batch["x"]).sum(), {}


@pytest.mark.parametrize("rows", [1, 5])
def test_saved_bytes_are_those_autograd_keeps_counted_by_hand(rows):
    """The first Linear keeps its input x [B, 4]; ReLU keeps its output [B, 8], which the second
    Linear keeps too (one storage, counted once); the weights are parameters (not counted);
    sum keeps nothing: 4 bytes x B x (4 + 8)."""
    model = TwoLayers()
    assert memory.activation_bytes(model, {"x": torch.randn(rows, 4)}) == 4 * rows * (4 + 8)


def test_a_view_of_a_saved_tensor_counts_once_and_whole():
    """h = relu(x W1^T + b1) [3, 8]: h @ h.T keeps h and h.T (a view of h's storage), relu keeps h
    too, the first Linear keeps x [3, 4]; one storage of h: 4 x 3 x (4 + 8) bytes."""
    layer = torch.nn.Linear(4, 8)
    x = torch.randn(3, 4)

    def objective():
        h = torch.relu(layer(x))
        return (h @ h.T).sum()

    _, count = memory.saved_tensor_bytes(objective, exclude=list(layer.parameters()))
    assert count == 4 * 3 * (4 + 8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, synthetic_file):
    folder = tmp_path_factory.mktemp("memory")
    (folder / "tiny.yaml").write_text(TINY)
    config = configs.merge(configs.DEFAULTS, yaml.safe_load(TINY))
    model, _, train_set, _, _ = build_inputs("srt", synthetic_file, config, Process())
    return folder / "tiny.yaml", config, model, train_set


def with_training(config, **values):
    return configs.merge(config, {"training": values})


def test_the_estimate_is_16_bytes_per_parameter_plus_activations_linear_in_the_micro_batch(tiny):
    _, config, model, train_set = tiny
    parameters = sum(p.numel() for p in build_model("srt", config["model"]).parameters())
    cases = {(8, 1, 1): 8, (4, 1, 1): 4, (8, 1, 2): 4, (8, 2, 1): 4, (8, 2, 4): 1}  # batch, processes, N: scenes
    estimates = {case: memory_estimates(model, train_set, with_training(config, batch_size=case[0],
                                                                         accumulate=case[2]), case[1])[0]
                 for case in cases}
    per_scene = estimates[(8, 1, 1)].per_scene
    assert per_scene > 0
    for case, scenes in cases.items():
        estimate = estimates[case]
        assert estimate.persistent == 16 * parameters
        assert estimate.scenes == scenes
        assert estimate.activations == scenes * per_scene
        assert estimate.total == 16 * parameters + scenes * per_scene
        assert f"16 B x {parameters:,} parameters" in estimate.line()
        assert f"x {scenes:,} scenes per micro-batch" in estimate.line()


def test_one_scene_times_the_batch_is_what_a_whole_batch_keeps(tiny):
    """The linear scaling itself: the tensors a 4-scene batch keeps are 4 times one scene's,
    to within the few that do not grow with the batch."""
    _, config, model, train_set = tiny
    loader = torch.utils.data.DataLoader(train_set, batch_size=4)
    four = memory.activation_bytes(model, next(iter(loader)))
    one = memory_estimates(model, train_set, with_training(config, batch_size=1), 1)[0].per_scene
    assert four == pytest.approx(4 * one, rel=0.02)


def test_choose_accumulate_takes_the_smallest_divisor_that_fits_with_10_percent_to_spare():
    gib = 2 ** 30
    stage = memory.Estimate(parameters=gib // 16, scenes=12, per_scene=gib)  # 1 GiB state + 1 GiB per scene
    fits = {1: 13, 2: 7, 3: 5, 4: 4, 6: 3, 12: 2}  # N: GiB at N
    for n, total in fits.items():
        assert memory.choose_accumulate([stage], math.ceil(1.1 * total * gib)) == (n, stage.accumulated(n))
        assert memory.choose_accumulate([stage], math.ceil(1.1 * total * gib) - 1)[0] != n
    assert memory.choose_accumulate([stage], int(2.2 * gib) - 1)[0] is None
    second = memory.Estimate(parameters=gib // 16, scenes=8, per_scene=3 * gib)  # a curriculum stage: N | 4
    assert memory.choose_accumulate([stage, second], 9 * gib)[0] == 4  # at 2: 7 and 13 GiB; at 4: 4 and 7


def auto(tiny_config, data, run, monkeypatch, capsys, per_scene, available):
    """scene-train --accumulate auto in this process, with ``per_scene`` activation bytes and
    ``available`` bytes of device memory. Returns (exit status, stderr)."""
    monkeypatch.setattr(memory, "activation_bytes", lambda model, batch, step=0: per_scene)
    monkeypatch.setattr(memory, "device_memory", lambda device: (available, "free on fake:0"))
    with pytest.raises(SystemExit) as done:
        main(["srt", str(data), "--config", str(tiny_config), "--out", str(run), "--accumulate", "auto"])
    return done.value.code, capsys.readouterr().err


def test_accumulate_auto_picks_the_rule_s_n_and_writes_it_into_config_yaml(tiny, synthetic_file, tmp_path,
                                                                            monkeypatch, capsys):
    """Batch 8 on one process, 100 MiB per scene: N = 4 is the first to fit in 1.1 x (state + 2 x
    100 MiB); N = 2 needs 4 x 100 MiB."""
    path, config, _, _ = tiny
    state = 16 * sum(p.numel() for p in build_model("srt", config["model"]).parameters())
    per_scene = 100 * 2 ** 20
    status, err = auto(path, synthetic_file, tmp_path / "run", monkeypatch, capsys, per_scene,
                       math.ceil(1.1 * (state + 2 * per_scene)))
    assert status == 0, err
    assert "--accumulate auto: 4 (estimate " in err and "free on fake:0)" in err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["training"]["accumulate"] == 4


def test_accumulate_auto_exits_2_with_one_line_when_nothing_fits(tiny, synthetic_file, tmp_path, monkeypatch, capsys):
    path, _, _, _ = tiny
    status, err = auto(path, synthetic_file, tmp_path / "run", monkeypatch, capsys, 2 ** 30, 2 ** 30)

    class Result:
        returncode, stderr = status, err

    assert_bad_input(Result, ["--accumulate auto", str(path), "GiB per process", "1.0 GiB free on fake:0"],
                     tmp_path / "run")


@pytest.mark.parametrize("value, ok", [(1, True), (8, True), ("auto", True), (None, True), (0, False),
                                       (-2, False), (2.5, False), ("4", False), ("automatic", False), (True, False)])
def test_training_accumulate_is_an_integer_of_at_least_1_or_auto(value, ok):
    config = configs.merge(configs.DEFAULTS, {"model": {}, "training": {"accumulate": value}})
    if ok:
        configs.validate(config)
    else:
        with pytest.raises(Exception, match="training.accumulate"):
            configs.validate(config)


def test_keep_freed_memory_lets_a_freed_block_be_reused_without_faulting_its_pages_in_again():
    """device.keep_freed_memory (scene-train on the CPU): a 64 MB tensor freed and made again,
    as a training step does, comes back from malloc's heap once the heap has grown to hold it.
    By default glibc unmaps it on free and each new one faults all of its 16,384 pages in."""
    import resource

    from scenetools.device import keep_freed_memory

    if not keep_freed_memory():
        pytest.skip("the C library is not glibc")

    def faults_making_a_64_mb_tensor() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.ones(16 * 2 ** 20)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        del block
        return faults

    faults_making_a_64_mb_tensor(), faults_making_a_64_mb_tensor()
    assert faults_making_a_64_mb_tensor() < 1_000
