"""The whole training pipeline, data loading included: scene-train's throughput next to the
reference trainer's with its own loader, and each loader's rate next to what training consumes.

Usage: ``bench_pipeline.py [--ref DIR] [MODEL ...]`` (srt, osrt; DIR defaults to $BENCH_REF, as
in bench_train_step.py); ``BENCH_PIPELINE_STEPS`` steps per run (default 12, the first
WARMUP not counted), ``BENCH_THREADS`` torch's threads in the training processes.

Settings:

* the reference CLEVR3D size: srt/clevr3d and osrt/clevr3d at batch 2 and 1,024 target rays per
  scene, with the configs' own 8 loader workers, on an ObSuRF CLEVR3D folder in its on-disk
  layout (tests/fixtures/obsurf.py), which ours reads converted by ``scene-convert --from
  obsurf`` and the reference reads with its own dataset class;
* the shipped CPU presets, srt/synthetic and osrt/synthetic (batch 32, 5 input views, 1 loader
  worker) on generator scenes, which no reference reads: ours alone.

What runs, one process each, in the order reference fp32, ours fp32, reference bf16, ours bf16:

* ours: the ``scene-train`` command itself (``--max-steps``, a log line every step), its rays
  per second as train.py logs them (data loading, forward, backward, optimizer step, logging);
* the reference: its train.py loop, cut to what a step does (its DataLoader as train.py builds
  it: the config's workers, shuffled, its worker_init_fn, persistent workers; then
  ``trainer.train_step``), as it ships (fp32) and with bf16 autocast and fused Adam (as in
  bench_train_step.py); each step timed from asking for the batch to the loss, with the part
  spent waiting for the batch;
* each loader alone: batches per second through the same DataLoader (ours: train.py's
  ``stage_batches``), and its headroom, that rate over the batches per second training takes.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from common import apply_threads, models_and_reference, spread, write_result  # noqa: E402

MODELS = ("srt", "osrt")
BATCH, RAYS = 2, 1024
STEPS = int(os.environ.get("BENCH_PIPELINE_STEPS", 12))
WARMUP = min(3, STEPS // 2)
LOADER_BATCHES = 24
SYNTHETIC_SCENES = 200
BIN = Path(sys.executable).parent


CLEVR3D_OVERRIDES = [f"training.batch_size={BATCH}", f"data.num_rays={RAYS}"]


# ----------------------------------------------------------------------------- ours

def scene_train(name: str, preset: str, data: Path, precision: str, out: Path, overrides: list) -> dict:
    """Run the scene-train command for STEPS steps; its logged rays per second, per step."""
    from scenetools.config import load_yaml

    env = dict(os.environ)
    if os.environ.get("BENCH_THREADS"):
        env["OMP_NUM_THREADS"] = os.environ["BENCH_THREADS"]
    sets = [a for o in overrides + ["training.log_every=1", "training.validate_every=100000",
                                    "training.visualize_every=100000"] for a in ("--set", o)]
    subprocess.run([str(BIN / "scene-train"), name, str(data), "--config", preset, "--precision", precision,
                    "--max-steps", str(STEPS), "--out", str(out), "-q", *sets], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [line["rays_per_second"] for line in lines if line["split"] == "train" and line["step"] > WARMUP]
    config = load_yaml(out / "config.yaml")
    rays_per_step = config["training"]["batch_size"] * config["data"]["num_rays"]
    seconds = [rays_per_step / r for r in rates]
    return {"step_seconds": spread(seconds), "rays_per_second": round(rays_per_step / statistics.median(seconds)),
            "batch": config["training"]["batch_size"], "rays_per_scene": config["data"]["num_rays"],
            "loader_workers": config["training"]["num_workers"]}


def our_loader(name: str, preset: str, data: Path, overrides: list) -> dict:
    """(Child.) Batches per second of train.py's own loader for this config, alone."""
    from types import SimpleNamespace

    import torch

    from scenetools import config as configs
    from scenetools.data import make_dataset
    from scenetools.scenefile import SceneFile
    from scenetools.train import stage_batches, stages

    config = configs.resolve(name, preset, overrides)
    training = config["training"]
    train_set = make_dataset(SceneFile(data), "train", config["data"], training["seed"])
    process = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    batches = stage_batches(train_set, stages(training, config["data"])[0], 0, process, training)
    return _batches_per_second(batches, training["num_workers"])


def _batches_per_second(batches, workers: int) -> dict:
    for _ in range(2 * workers + 2):  # every worker has started (a new process imports torch) and delivered
        next(batches)
    start = time.perf_counter()
    for _ in range(LOADER_BATCHES):
        next(batches)
    return {"batches_per_second": round(LOADER_BATCHES / (time.perf_counter() - start), 2), "workers": workers}


# ----------------------------------------------------------------------------- the reference

def reference_run(name: str, variant: str, ref_dir: Path, folder: Path, work: Path) -> dict:
    """(Child.) The reference's loader alone, then its train.py loop for STEPS steps."""
    import importlib

    import torch

    from references import reference, trainer_for

    ref = reference(name, ref_dir, folder, RAYS, work / "out")
    dataset = ref.dataset()
    workers = ref.config["training"]["num_workers"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers, shuffle=True,
                                         worker_init_fn=importlib.import_module(f"{name}.data").worker_init_fn,
                                         persistent_workers=True)

    def forever():
        while True:
            yield from loader

    batches = forever()
    loader_rate = _batches_per_second(batches, workers)
    torch.manual_seed(0)
    trainer = trainer_for(ref, ref.model(), variant)
    steps, waits = [], []
    for it in range(STEPS):
        start = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter()
        ref.step(trainer, batch, it)
        if it >= WARMUP:
            steps.append(time.perf_counter() - start)
            waits.append(waited - start)
    return {"step_seconds": spread(steps), "rays_per_second": round(BATCH * RAYS / statistics.median(steps)),
            "data_wait_seconds": spread(waits), "batch": BATCH, "rays_per_scene": RAYS, "loader": loader_rate}


# ----------------------------------------------------------------------------- the run

def child(*args) -> dict:
    """Run this script's ``args`` in a child process; its JSON answer."""
    out = subprocess.run([sys.executable, __file__, *map(str, args)], stdout=subprocess.PIPE, check=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def headroom(loader: dict, run: dict) -> float:
    """Loader batches per second over the batches per second training takes."""
    return round(loader["batches_per_second"] * run["step_seconds"]["median"], 1)


def clevr3d(name: str, ref_dir, folder: Path, data: Path, work: Path) -> dict:
    preset, overrides = f"{name}/clevr3d", CLEVR3D_OVERRIDES
    runs = {}
    for precision in ("fp32", "bf16"):
        if ref_dir:
            runs[f"reference_{precision}"] = child("--reference", name, precision, ref_dir, folder, work)
        runs[f"ours_{precision}"] = scene_train(name, preset, data, precision, work / f"{name}-{precision}", overrides)
        print(name, precision, {k: v["rays_per_second"] for k, v in runs.items()}, file=sys.stderr)
    loader = child("--our-loader", name, preset, data, *overrides)
    for key, run in runs.items():
        run["loader_headroom"] = headroom(run["loader"] if "loader" in run else loader, run)
    result = {"preset": preset, "overrides": overrides, "our_loader": loader, "runs": runs}
    if ref_dir:
        result["speedup"] = {
            f"ours_{a}_vs_reference_{b}": round(runs[f"ours_{a}"]["rays_per_second"]
                                                / runs[f"reference_{b}"]["rays_per_second"], 2)
            for a, b in (("fp32", "fp32"), ("bf16", "fp32"), ("bf16", "bf16"))}
    return result


def synthetic(name: str, data: Path, work: Path) -> dict:
    preset = f"{name}/synthetic"
    run = scene_train(name, preset, data, "bf16", work / f"{name}-synthetic", [])
    loader = child("--our-loader", name, preset, data)
    run["loader_headroom"] = headroom(loader, run)
    return {"preset": preset, "precision": "bf16", "our_loader": loader, "run": run}


def main():
    models, ref_dir = models_and_reference(__doc__.splitlines()[0], MODELS, "default: both")
    if ref_dir is None:
        print("bench_pipeline: no REF given: the reference trainer is NOT measured", file=sys.stderr)
    from fixtures.obsurf import make_obsurf_dataset
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # A third of the scenes train: one scene per batch item for every loader batch and step.
        train_scenes = (LOADER_BATCHES + STEPS) * BATCH
        folder = make_obsurf_dataset(work / "clevr3d", 3 * train_scenes)["root"]
        convert = BIN / "scene-convert"
        # scene-convert prints its output's path; this bench's stdout is its JSON alone
        quiet = {"check": True, "stdout": subprocess.DEVNULL}
        subprocess.run([str(convert), "--from", "obsurf", str(folder), str(work / "clevr3d.h5"), "-q"], **quiet)
        subprocess.run([str(convert), "--from", "synthetic", str(work / "synthetic.h5"), "--scenes",
                        str(SYNTHETIC_SCENES), "-q"], **quiet)
        results = {name: {"clevr3d": clevr3d(name, ref_dir, folder, work / "clevr3d.h5", work),
                          "synthetic": synthetic(name, work / "synthetic.h5", work)} for name in models}
    write_result("pipeline", {"steps": STEPS, "warmup_steps": WARMUP, "loader_batches": LOADER_BATCHES,
                              "reference": {"measured": ref_dir is not None, "dir": str(ref_dir) if ref_dir else None},
                              "models": results})


if __name__ == "__main__":
    apply_threads()
    if sys.argv[1:2] == ["--reference"]:
        name, variant, ref_dir, folder, work = sys.argv[2:7]
        print(json.dumps(reference_run(name, variant, Path(ref_dir), Path(folder), Path(work))))
    elif sys.argv[1:2] == ["--our-loader"]:
        print(json.dumps(our_loader(sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5:])))
    else:
        main()
