"""SRN's test-time latent fitting: seconds per unseen scene, one scene at a time against
several fitted at once.

A scene SRN has not trained on gets its code by optimisation (``SRN.fit_codes``: Adam on the
codes alone, the networks frozen, each step marching ``fit.rays`` random rays of the input
views). Setting: the srn/cars preset's fit settings (lr, rays per step: a whole 128x128
image) and its one-shot protocol (input view 64 of each car, ``data.evaluation``), on unseen
cars of an SRN ShapeNet ``cars_test`` folder (tests/fixtures/srn.py: 128x128, 65 or 66 views)
converted by ``scene-convert --from srn`` and read by our loader, as ``scene-eval`` reads
them. The weights are random (the time does not depend on them). ``BENCH_FIT_STEPS`` (default
2) replaces the preset's 1,136 steps; the time per step is what scales.

Two ways, interleaved (one call of each in turn, ``REPEATS`` times, the first call of each
not timed): one scene per call (``B = 1``), and ``BATCHED`` scenes in one call (their codes
are independent; ``scene-eval`` fits a whole batch at once). Reported: seconds per call,
per step, per scene and per scene-step (medians), the batched speedup per scene (the median
over the paired calls), and the preset's whole fit (1,136 steps) per scene extrapolated from
the time per step. fp32 only. Not timed against the reference: its one-shot fitting is its
training step with the networks frozen (train_configs/cars_one_shot.yml), which
bench_train_step.py times unfrozen.
"""
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

import torch  # noqa: E402

from common import apply_threads, spread, write_result  # noqa: E402

PRESET = "srn/cars"
STEPS = int(os.environ.get("BENCH_FIT_STEPS", 2))
BATCHED = 4
REPEATS = 3  # calls of each way; the first is warm-up
CARS = BATCHED + 1


def scenes(work: Path, data: dict):
    """The fixture's unseen cars as our loader gives them to scene-eval (one item each)."""
    from fixtures.srn import make_srn_dataset

    from scenetools import progress
    from scenetools.convert import convert
    from scenetools.data import evaluation_config, make_dataset
    from scenetools.scenefile import SceneFile
    from scenetools.sources.srn import SRNSource

    progress.configure(quiet=True)
    truth = make_srn_dataset(work / "srn", CARS, "cars", views=65, size=128, splits=("test",))
    path = work / "cars_test.h5"
    convert(SRNSource(truth["root"] / "cars_test"), path, codec="raw")
    dataset = make_dataset(SceneFile(path), "test", evaluation_config(data), seed=0)
    return [dataset[i] for i in range(len(dataset))]


def main():
    from scenetools import config as configs
    from scenetools.models import build_model

    config = configs.resolve("srn", PRESET)
    fit = dict(config["model"]["fit"], steps=STEPS)
    torch.manual_seed(0)
    model = build_model("srn", dict(config["model"], fit=fit)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with tempfile.TemporaryDirectory() as tmp:
        items = scenes(Path(tmp), config["data"])
    fields = ("input_images", "input_rays", "input_camera_pos", "scene_key", "input_views")

    def batch(indices):
        return {k: torch.stack([torch.as_tensor(items[i][k]) for i in indices]) for k in fields}
    ways = {"one_scene": batch([0]), f"{BATCHED}_scenes": batch(range(1, 1 + BATCHED))}
    counts = {"one_scene": 1, f"{BATCHED}_scenes": BATCHED}
    times = {way: [] for way in ways}
    for repeat in range(REPEATS):
        for way, inputs in ways.items():
            start = time.perf_counter()
            model.fit_codes(inputs)
            times[way].append(time.perf_counter() - start)
            print(f"  fit {way} call {repeat + 1}/{REPEATS}: {times[way][-1]:.2f}s", file=sys.stderr)
    one, many = "one_scene", f"{BATCHED}_scenes"
    out = {}
    for way, seconds in times.items():
        timed, scenes_per_call = seconds[1:], counts[way]
        median = statistics.median(timed)
        out[way] = {"scenes_per_call": scenes_per_call, "call_seconds": spread(timed),
                    "seconds_per_step": round(median / STEPS, 3),
                    "seconds_per_scene": round(median / scenes_per_call, 3),
                    "seconds_per_scene_step": round(median / STEPS / scenes_per_call, 3),
                    f"preset_fit_seconds_per_scene_{config['model']['fit']['steps']}_steps":
                        round(median / STEPS / scenes_per_call * config["model"]["fit"]["steps"], 1),
                    "all_call_seconds": [round(t, 3) for t in seconds]}
    paired = statistics.median(a / (b / BATCHED) for a, b in zip(times[one][1:], times[many][1:]))
    n_input = ways[one]["input_images"].shape[1]
    pixels = n_input * ways[one]["input_images"].shape[-1] * ways[one]["input_images"].shape[-2]
    write_result("fit_srn", {
        "setting": {"config": PRESET, "fit": fit, "preset_fit_steps": config["model"]["fit"]["steps"],
                    "input_views": [int(v) for v in ways[one]["input_views"][0]],
                    "input_pixels_per_scene": pixels, "rays_per_step_per_scene": min(fit["rays"], pixels),
                    "repeats": REPEATS, "warmup_calls": 1, "precision": "fp32",
                    "data": "SRN cars_test layout (tests/fixtures/srn.py, 128x128, 65 or 66 views per car) converted "
                            "by scene-convert --from srn, read by our loader with the preset's evaluation section",
                    "weights": "random (build_model from the preset, seed 0); networks frozen"},
        "ways": out,
        "batched_speedup_per_scene_paired": round(paired, 2),
        "note": "fit_codes, as scene-eval calls it for scenes without a code; the reference's one-shot fitting "
                "(its training step with the networks frozen) is not timed here"})


if __name__ == "__main__":
    apply_threads()
    main()
