"""Training step: ours against the reference implementation's own trainer step, side by side.

Usage: ``bench_train_step.py [--ref DIR] [MODEL ...]`` (models: srt, osrt, obsurf, srn;
default all; DIR defaults to $BENCH_REF), or ``make bench REF=DIR``; ``BENCH_STEPS`` sets the
steps per variant (default 20), ``BENCH_THREADS`` torch's threads in every process (default:
torch's; see common.apply_threads). DIR holds the reference repositories unpacked by the user:
DIR/srt (stelzner/srt), DIR/osrt (stelzner/osrt), DIR/obsurf (stelzner/obsurf), DIR/srn
(vsitzmann/scene-representation-networks, its submodule vsitzmann/pytorch_prototyping in
DIR/srn/pytorch_prototyping).

Setting: the reference CLEVR3D configs (srt/clevr3d, osrt/clevr3d: batch 2, 1024 target rays,
one 120x160 input view; obsurf/clevr3d: batch 2, 4096 target points, one 240x320 input view)
on this machine's CPU. The data is an ObSuRF CLEVR3D folder in the real on-disk layout,
written by tests/fixtures/obsurf.py. SRN (srn/cars, the reference's train_configs/cars.yml)
has two stages, 64 px images at batch 64 and 128 px at batch 16 (the same 262,144 rays per
step), both scaled down 16 times here: batch 4 at 64 px, batch 1 at 128 px; its data is a
ShapeNet cars training folder in SRN's layout (instance folders of rgb/, pose/,
intrinsics.txt), written by tests/fixtures/srn.py. With DIR, the reference reads the folder
with its own dataset class, and ours trains on the same batches in our layout (bench/ours.py
says how).

For each model, four variants: the reference as it ships (fp32, Adam) and with bf16 autocast
and fused Adam applied at run time (bench/references.py); ours at precision fp32 and bf16
(our trainer's step; its Adam is always fused). Each variant is its own child process (its
peak memory is its own) holding its model. All four run **interleaved step by step**
(reference fp32, ours fp32, reference bf16, ours bf16, reference fp32, ...), so the shared
machine's load falls on all alike: a change of load between the fp32 and the bf16 steps
would otherwise reach the ratio of ours in bf16 to the reference in fp32. Both sides start from the same weights (the reference's
initialisation, mapped onto ours by our ``from_reference``) and take the same batches with
the same seed per step, so their losses after each step are comparable; ObSuRF's random
points are replayed (bench/ours.py).

Reported per variant: step time (median, min, max over the steps after warm-up), rays (or
points) per second, peak RSS, FLOPs per step (torch's FlopCounterMode, one extra step) and
the fraction of the matmul peak, measured in the same run; the loss after every step; and the
speedups of ours over the reference: ratios of the medians, and ("paired") the median of the
ratios of steps run in the same round, which a change of the machine's load affects least;
the goals are judged on the paired figures.
Without DIR the ratio is not measured: ours alone, fp32 and bf16 interleaved, on batches from
our own converter and loader over the same folder. The machine is shared, so figures are
noisy; ratios from the same run are the ones to read.
"""
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT), str(ROOT / "tests")]

from common import (Worker, apply_threads, matmul_peaks, models_and_reference, peak_rss_mb, serve, spread,  # noqa: E402
                    write_result)

#: rays (points) per scene, and the issues' goals: speedup over the reference in fp32, and
#: over the reference with bf16 autocast and fused Adam (None: no goal set). A model with
#: ``stages`` is timed at each (its image size, batch and rays per scene; ``reference_batch``:
#: the reference config's batch there); the others at batch BATCH.
MODELS = {"srt": {"rays": 1024, "goal_vs_fp32": 2.5, "goal_vs_bf16": 1.25},
          "osrt": {"rays": 1024, "goal_vs_fp32": 2.4, "goal_vs_bf16": 1.25},
          "obsurf": {"rays": 4096, "goal_vs_fp32": 2.0, "goal_vs_bf16": None},
          "srn": {"goal_vs_fp32": 2.0, "goal_vs_bf16": None,
                  "stages": [{"resolution": 64, "batch": 4, "rays": 64 * 64, "reference_batch": 64},
                             {"resolution": 128, "batch": 1, "rays": 128 * 128, "reference_batch": 16}]}}
BATCH = 2
STEPS = int(os.environ.get("BENCH_STEPS", 20))  # per variant; the first WARMUP are not timed
WARMUP = min(3, STEPS // 2)
SEED = 0
FOLDER_NOTES = {
    "obsurf": ("ObSuRF CLEVR3D on-disk layout (240x320 views, 3 per scene, depth PNGs) written by "
               "tests/fixtures/obsurf.py, enough training scenes for every step to take new ones"),
    "srn": ("SRN ShapeNet cars_train layout (instance folders of rgb/*.png, pose/*.txt, intrinsics.txt; 128x128 "
            "views, 50 or 51 per car, {cars} cars) written by tests/fixtures/srn.py")}
SRN_CARS = 20


def stages(name: str) -> list:
    """The settings model ``name`` is timed at: [{"label", "resolution", "batch", "rays", ...}]."""
    if "stages" in MODELS[name]:
        return [{"label": f"{s['resolution']}px", **s} for s in MODELS[name]["stages"]]
    return [{"label": None, "resolution": None, "batch": BATCH, "rays": MODELS[name]["rays"]}]


def tag(name: str, stage: dict) -> str:
    """A file-name prefix of one model at one stage."""
    return f"{name}-{stage['label']}" if stage["label"] else name


def fixture_kind(name: str) -> str:
    return "srn" if name == "srn" else "obsurf"


REQUIREMENTS = [line.strip() for line in (HERE / "ref_requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]


# ----------------------------------------------------------------------------- child processes

def prepare(name: str, stage: dict, ref_dir, folder, work) -> dict:
    """(Child.) The batches and initial weights both sides start from, saved in ``work``."""
    import numpy as np
    import torch

    batch = stage["batch"]
    batches_file, init_file = work / f"{tag(name, stage)}-batches.pt", work / f"{tag(name, stage)}-init.pt"
    if ref_dir is None:
        import ours
        torch.save(ours.own_batches(name, folder, work, STEPS, batch, stage["rays"], stage["resolution"]),
                   batches_file)
        return {"batches": str(batches_file), "init": None,
                "data": f"our own pipeline: the folder converted by scene-convert --from {fixture_kind(name)}, "
                        "read by our loader"}
    from references import collate, reference
    ref = reference(name, ref_dir, folder, stage["rays"], work / "out", stage["resolution"])
    np.random.seed(SEED)  # the reference datasets sample their target rays with numpy
    dataset = ref.dataset()
    order = np.random.RandomState(SEED).permutation(len(dataset))
    items = [int(order[i % len(order)]) for i in range(STEPS * batch)]
    torch.save([collate(ref, dataset, [dataset[i] for i in items[s * batch:(s + 1) * batch]]) for s in range(STEPS)],
               batches_file)
    torch.manual_seed(SEED)
    model = ref.model()
    torch.save(ref.state(model), init_file)
    return {"batches": str(batches_file), "init": str(init_file),
            "data": f"the reference's own {type(dataset).__module__}.{type(dataset).__name__}"}


def reference_runner(name: str, stage: dict, variant: str, ref_dir, folder, work, files: dict):
    """(Child.) (hello, step function) of the reference's trainer step."""
    import torch

    from references import reference, trainer_for
    ref = reference(name, ref_dir, folder, stage["rays"], work / "out", stage["resolution"])
    model = ref.model()
    ref.load(model, torch.load(files["init"]))
    trainer = trainer_for(ref, model, variant)
    batches = torch.load(files["batches"])
    hello = {"parameters": sum(p.numel() for p in model.parameters())}
    return hello, lambda index: ref.step(trainer, batches[index % len(batches)], index)


def our_runner(name: str, variant: str, work, files: dict):
    """(Child.) (hello, step function) of our trainer step, on the reference's batches mapped
    to our layout (with DIR) or on our own batches."""
    import torch

    import ours
    init = torch.load(files["init"]) if files["init"] else None
    model, config = ours.build(name, init, None if init else ours.training_keys(name, work))
    trainer = ours.Trainer(model, config, variant)
    batches = torch.load(files["batches"])
    hello = {"parameters": sum(p.numel() for p in model.parameters()), "replayed_points": False}
    draws = [None] * len(batches)
    if init is not None:
        reference_batches = batches
        batches, draws = ours.from_reference_batches(name, reference_batches, config)
        hello["frame_agreement"] = ours.frame_agreement(reference_batches, batches)
        hello["replayed_points"] = draws[0] is not None
        if name == "srn":
            hello["ray_agreement"] = ours.ray_agreement(reference_batches, batches)

    def step(index):
        with ours.replayed_rand_like(draws[index % len(batches)]):
            return trainer.step(batches[index % len(batches)], index)
    return hello, step


def worker(side: str, name: str, stage: dict, variant: str, ref_dir, folder, work, files: dict) -> None:
    """(Child.) Serve "step" (one timed step of the given index, the torch seed set to
    SEED + index first) and "finish" (peak memory, and FLOPs of one more step)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def start():
        if side == "reference":
            hello, step = reference_runner(name, stage, variant, ref_dir, folder, work, files)
        else:
            hello, step = our_runner(name, variant, work, files)

        def timed_step(index):
            torch.manual_seed(SEED + index)
            begin = time.perf_counter()
            loss = step(index)
            return {"seconds": time.perf_counter() - begin, "loss": loss}

        def finish():
            peak = peak_rss_mb()  # of the timed steps, before the counted one
            torch.manual_seed(SEED + STEPS)
            with FlopCounterMode(display=False) as counter:
                step(STEPS)
            return {"flops": counter.get_total_flops(), "peak_rss_mb": peak}
        return hello, {"step": timed_step, "finish": finish}
    serve(start)


# ----------------------------------------------------------------------------- the parent

def interleave(pairs: list, name: str, stage: dict, ref_dir, folder, work, files: dict) -> dict:
    """Run the (side, variant) workers step by step in turn; return their records."""
    workers = {}
    try:
        for side, variant in pairs:
            argv = [__file__, "--worker", side, name, stages(name).index(stage), variant, ref_dir or "-", folder, work,
                    files["batches"], files["init"] or "-"]
            workers[side, variant] = Worker(argv, work / f"{tag(name, stage)}-{side}-{variant}.log")
        steps = {key: [] for key in workers}
        for index in range(STEPS):
            for key, child in workers.items():
                steps[key].append(child.call("step", index=index))
            print(f"  {tag(name, stage)} step {index + 1}/{STEPS}: " + ", ".join(
                f"{side} {variant} {steps[side, variant][-1]['seconds']:.2f}s" for side, variant in workers),
                file=sys.stderr)
        return {key: {"hello": child.hello, "steps": steps[key], **child.call("finish")}
                for key, child in workers.items()}
    finally:
        for child in workers.values():
            child.close()


def significant(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def describe(record: dict, stage: dict, peaks: dict, variant: str) -> dict:
    """One variant's figures."""
    times = [s["seconds"] for s in record["steps"]]
    seconds = spread(times[WARMUP:])
    median = seconds["median"]
    out = {"step_seconds": seconds, "rays_per_second": round(stage["batch"] * stage["rays"] / median),
           "peak_rss_mb": round(record["peak_rss_mb"]), "parameters": record["hello"]["parameters"],
           "flops_per_step": record["flops"], "achieved_tflops": round(record["flops"] / median / 1e12, 3),
           "fraction_of_matmul_peak": round(record["flops"] / median / peaks[variant], 3),
           "losses": [significant(s["loss"]) for s in record["steps"]],
           "all_step_seconds": [round(t, 3) for t in times]}
    out.update({k: v for k, v in record["hello"].items() if k != "parameters"})
    return out


def compare_losses(first: list, second: list, names=("reference", "ours")) -> dict:
    """First and last losses of two runs, the mean of their last five, and the relative
    differences (second - first) / |first|."""
    def relative(a, b):
        return significant((b - a) / abs(a), 3) if a else None
    tail = min(5, len(first))
    (a, b), out = names, {}
    for label, pick in (("first", lambda x: x[0]), ("last", lambda x: x[-1]),
                        (f"mean_last_{tail}", lambda x: significant(sum(x[-tail:]) / tail))):
        out.update({f"{a}_{label}": pick(first), f"{b}_{label}": pick(second),
                    f"relative_difference_{label}": relative(pick(first), pick(second))})
    return out


def speedup(variants: dict, slower: str, faster: str) -> float:
    """Median step time of variant ``slower`` / that of ``faster``."""
    return round(variants[slower]["step_seconds"]["median"] / variants[faster]["step_seconds"]["median"], 2)


def paired_speedup(variants: dict, slower: str, faster: str) -> float:
    """Median over the timed steps of (step time of ``slower`` / that of ``faster``) for
    variants timed in turn: each ratio compares two steps run back to back, so a change of
    the machine's load between steps cancels out."""
    pairs = zip(variants[slower]["all_step_seconds"][WARMUP:], variants[faster]["all_step_seconds"][WARMUP:])
    return round(statistics.median(a / b for a, b in pairs), 2)


def speedups(variants: dict, setting: dict) -> dict:
    """Ours over the reference (ratios of the medians; "paired": the median of the ratios of
    steps run in the same round), with the issues' goals, judged on the paired figures."""
    out = {"ours_fp32_vs_reference_fp32_paired": paired_speedup(variants, "reference_fp32", "ours_fp32"),
           "ours_bf16_vs_reference_fp32_paired": paired_speedup(variants, "reference_fp32", "ours_bf16"),
           "ours_bf16_vs_reference_bf16_fused_paired": paired_speedup(variants, "reference_bf16", "ours_bf16"),
           "reference_bf16_fused_vs_reference_fp32_paired": paired_speedup(variants, "reference_fp32",
                                                                           "reference_bf16"),
           "ours_fp32_vs_reference_fp32": speedup(variants, "reference_fp32", "ours_fp32"),
           "ours_bf16_vs_reference_fp32": speedup(variants, "reference_fp32", "ours_bf16"),
           "ours_bf16_vs_reference_bf16_fused": speedup(variants, "reference_bf16", "ours_bf16"),
           "reference_bf16_fused_vs_reference_fp32": speedup(variants, "reference_fp32", "reference_bf16"),
           "goal_ours_bf16_vs_reference_fp32": setting["goal_vs_fp32"],
           "goal_ours_bf16_vs_reference_bf16_fused": setting["goal_vs_bf16"]}
    out["meets_goals"] = out["ours_bf16_vs_reference_fp32_paired"] >= setting["goal_vs_fp32"] and (
        setting["goal_vs_bf16"] is None or out["ours_bf16_vs_reference_bf16_fused_paired"] >= setting["goal_vs_bf16"])
    return out


VARIANT_NOTES = {
    "reference_fp32": "the reference's model and trainer step as it ships: fp32, torch.optim.Adam (unfused)",
    "reference_bf16": "the same with bf16 autocast around its compute_loss and Adam(fused=True), applied at run time",
    "ours_fp32": "our trainer's step at precision fp32 (its Adam is always fused: scenetools.train.make_optimizer)",
    "ours_bf16": "our trainer's step at precision bf16 (scenetools.device.autocast), fused Adam",
}


def measure(name: str, stage: dict, ref_dir, folder: Path, work: Path) -> tuple:
    """(records of every variant, matmul peaks, prepared files) of one model at one stage."""
    peaks = matmul_peaks()
    preparation = Worker([__file__, "--prepare", name, stages(name).index(stage), ref_dir or "-", folder, work],
                         work / f"{tag(name, stage)}-prepare.log")
    files = preparation.hello
    preparation.close()
    run = lambda pairs: interleave(pairs, name, stage, ref_dir, folder, work, files)  # noqa: E731
    if ref_dir:
        records = run([("reference", "fp32"), ("ours", "fp32"), ("reference", "bf16"), ("ours", "bf16")])
    else:
        records = run([("ours", "fp32"), ("ours", "bf16")])
    after = matmul_peaks()
    return records, {k: max(v, after[k]) for k, v in peaks.items()}, files


def report(name: str, stage: dict, ref_dir, records: dict, peaks: dict, files: dict) -> dict:
    """The JSON of one model at one stage."""
    import ours
    setting = MODELS[name]
    variants = {f"{side}_{variant}": {**describe(r, stage, peaks, variant),
                                      "what": VARIANT_NOTES[f"{side}_{variant}"]}
                for (side, variant), r in records.items()}
    size = {}
    if stage["resolution"]:
        size = {"resolution": stage["resolution"], "reference_batch": stage["reference_batch"],
                "scaling": f"batch {stage['batch']} instead of the reference config's {stage['reference_batch']} "
                           f"(1/{stage['reference_batch'] // stage['batch']}), whole {stage['resolution']}x"
                           f"{stage['resolution']} images as in the reference"}
    result = {"setting": {"config": ours.PRESETS[name], **size, "batch": stage["batch"],
                          "rays_per_scene": stage["rays"], "steps": STEPS, "warmup_steps": WARMUP,
                          "seed_per_step": f"{SEED} + step", "lr": ours.run_config(name)["training"]["lr"],
                          "data_folder": FOLDER_NOTES[fixture_kind(name)].format(cars=SRN_CARS),
                          "data": files["data"], "interleaved": "step by step, all variants in turn, one child process each"},
              "matmul_peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()},
              "variants": variants}
    if not ref_dir:
        return {**result,
                "reference": {"measured": False, "note": "ratio against the reference not measured: no REF given "
                                                         "(make bench REF=DIR)"},
                "speedup": {"vs_reference": "not measured (no REF)",
                            "ours_bf16_vs_ours_fp32": speedup(variants, "ours_fp32", "ours_bf16")},
                "loss_comparison": {"ours_bf16_vs_ours_fp32": compare_losses(
                    variants["ours_fp32"]["losses"], variants["ours_bf16"]["losses"], ("fp32", "bf16"))}}
    method = ("same initial weights (the reference's, mapped by our from_reference), same batches, same torch seed "
              "per step")
    if name == "obsurf":
        method += "; ObSuRF's random points replayed from the reference's (bench/ours.py)"
    if name == "srn":
        method += ("; our rays through the same pixels (ray_agreement: largest difference from the reference's "
                   "ray directions); the reference starts marching at camera depth 0.05, ours at 0.05 along the "
                   "ray, so the losses agree closely but not exactly")
    return {**result,
            "reference": {"measured": True, "dir": str(ref_dir), "packages": REQUIREMENTS,
                          "stand_ins": STAND_INS[name],
                          **({"run_time_changes": RUN_TIME_CHANGES[name]} if name in RUN_TIME_CHANGES else {})},
            "speedup": speedups(variants, setting),
            "loss_comparison": {"method": method, **{
                v: compare_losses(variants[f"reference_{v}"]["losses"], variants[f"ours_{v}"]["losses"])
                for v in ("fp32", "bf16")}}}


STAND_INS = {name: "torchvision (bench/ref_shims: ResNet basic blocks for ObSuRF's encoder)"
             for name in ("srt", "osrt", "obsurf")}
STAND_INS["srn"] = "torchvision (bench/ref_shims: utils.make_grid, which SRN's forward pass calls for its log)"
RUN_TIME_CHANGES = {"srn": "bench/references.py SrnReference: .cuda() is the identity; the ray marcher's "
                           "every-100th-forward tensorboard figure is not drawn; no tensorboard logging; bf16 "
                           "variant: geometry.depth_from_world outside autocast"}


def write_fixture(root: Path, kind: str) -> Path:
    """The data folder of ``kind``: an ObSuRF CLEVR3D folder with enough training items for
    STEPS batches, or an SRN cars_train folder (SRN_CARS cars of 50 or 51 128x128 views)."""
    if kind == "srn":
        from fixtures.srn import make_srn_dataset
        truth = make_srn_dataset(root / "srn", SRN_CARS, "cars", views=50, size=128, splits=("train",))
        return truth["root"] / "cars_train"
    from fixtures.obsurf import make_obsurf_dataset
    train_scenes = math.ceil(STEPS * BATCH / 3)  # 3 items (input views) per scene
    return make_obsurf_dataset(root / "clevr3d", 3 * train_scenes)["root"]


def check_reference(ref_dir: Path, names) -> None:
    missing = [f"{ref_dir / n}" for n in names if not (ref_dir / n).is_dir()]
    submodule = ref_dir / "srn/pytorch_prototyping/pytorch_prototyping.py"
    if "srn" in names and (ref_dir / "srn").is_dir() and not submodule.is_file():
        missing.append(f"{submodule} (SRN's submodule)")
    if missing:
        sys.exit(f"bench_train_step: REF={ref_dir} lacks {', '.join(missing)} (unpack stelzner/srt, stelzner/osrt, "
                 "stelzner/obsurf and vsitzmann/scene-representation-networks there, the last with its "
                 "pytorch_prototyping submodule)")


def main():
    models, ref_dir = models_and_reference(__doc__.splitlines()[0], MODELS, "default: all")
    if ref_dir:
        check_reference(ref_dir, models)
    else:
        print("bench_train_step: no REF given: the ratio against the reference is NOT measured", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work, folders = Path(tmp), {}
        for name in models:
            kind = fixture_kind(name)
            if kind not in folders:
                folders[kind] = write_fixture(work, kind)
            results = {}
            for stage in stages(name):
                records, peaks, files = measure(name, stage, ref_dir, folders[kind], work)
                results[stage["label"]] = report(name, stage, ref_dir, records, peaks, files)
            if list(results) == [None]:
                write_result(f"train_step_{name}", results[None])
            else:
                write_result(f"train_step_{name}", {"stages": results})


def child_main(argv):
    """``--prepare NAME STAGE REF FOLDER WORK`` or ``--worker SIDE NAME STAGE VARIANT REF FOLDER
    WORK BATCHES INIT``; STAGE indexes :func:`stages`; "-" stands for none."""
    def path(arg):
        return None if arg == "-" else Path(arg)
    if argv[0] == "--prepare":
        name, stage, ref_dir, folder, work = argv[1], int(argv[2]), path(argv[3]), Path(argv[4]), Path(argv[5])
        serve(lambda: (prepare(name, stages(name)[stage], ref_dir, folder, work), {}))
    else:
        side, name, stage, variant, ref_dir, folder, work, batches, init = argv[1:10]
        worker(side, name, stages(name)[int(stage)], variant, path(ref_dir), Path(folder), Path(work),
               {"batches": batches, "init": None if init == "-" else init})


if __name__ == "__main__":
    apply_threads()
    if sys.argv[1:2] in (["--prepare"], ["--worker"]):
        child_main(sys.argv[1:])
    else:
        main()
