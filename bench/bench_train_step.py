"""Training step time at the reference CLEVR3D model size, fp32 vs bf16, plain vs fused Adam.

Setting (the issue's): the srt/clevr3d config (73.9M parameters), batch 2, one 120x160 input
view (CLEVR3D's downsampled input), 1024 target rays per scene, on this machine's CPU.
Each variant runs in its own process (its peak RSS is its own) on fixed random inputs:
median step time over timed steps after warm-up, rays/s, FLOPs per step (torch's
FlopCounterMode), achieved FLOP/s as a fraction of a matmul peak measured in the same run,
and the loss over the first steps on real synthetic scenes for fp32 and bf16 from the same
seed, to show that quality holds.

The reference (stelzner/srt) takes about 1.7 s per step here: fp32, unfused Adam and
explicit softmax attention; ``fp32`` below is our equivalent of it, measured in this run.
"""
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REFERENCE_SECONDS = {"srt": 1.7, "osrt": 2.95}  # the issues' figures for the reference on this class of machine
PRESETS = {"srt": "srt/clevr3d", "osrt": "osrt/clevr3d"}
BATCH, RAYS, INPUT_HW, WARMUP, TIMED, CURVE_STEPS = 2, 1024, (120, 160), 3, 10, 30
VARIANTS = {"fp32": ("fp32", False), "fp32_fused_adam": ("fp32", True), "bf16": ("bf16", False),
            "bf16_fused_adam": ("bf16", True)}


def batch(seed=0):
    from scenetools import cameras
    import numpy as np
    g = torch.Generator().manual_seed(seed)
    H, W = INPUT_HW
    az = torch.rand(BATCH, generator=g).numpy() * 6.28
    eyes = np.stack([10 * np.cos(az), 10 * np.sin(az), np.full(BATCH, 5.0)], -1)[:, None]
    c2w = cameras.look_at(eyes, np.zeros(3))
    K = cameras.intrinsics(175.0, 175.0, W / 2, H / 2)
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    rays = torch.nn.functional.normalize(torch.randn(BATCH, RAYS, 3, generator=g), dim=-1)
    return {"input_images": torch.rand(BATCH, 1, 3, H, W, generator=g), "input_camera_pos": f(eyes),
            "input_rays": f(cameras.ray_directions(K, c2w, H, W)), "input_camera_to_world": f(c2w),
            "target_camera_pos": f(eyes).expand(BATCH, RAYS, 3).contiguous(), "target_rays": rays,
            "target_pixels": torch.rand(BATCH, RAYS, 3, generator=g),
            "render_range": torch.tensor([[0.5, 60.0]]).expand(BATCH, 2)}


def build(model_name, fused):
    from scenetools import config as configs
    from scenetools.models import build_model
    torch.manual_seed(0)
    model = build_model(model_name, configs.resolve(model_name, PRESETS[model_name])["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    return model, optimizer


def step(model, optimizer, data, precision):
    from scenetools.device import autocast
    device = torch.device("cpu")
    with autocast(device, precision):
        loss, _ = model(data, 0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def child(model_name, variant):
    """Time one variant; print JSON."""
    precision, fused = VARIANTS[variant]
    model, optimizer = build(model_name, fused)
    data = batch()
    for _ in range(WARMUP):
        step(model, optimizer, data, precision)
    times = []
    for _ in range(TIMED):
        start = time.perf_counter()
        step(model, optimizer, data, precision)
        times.append(time.perf_counter() - start)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        step(model, optimizer, data, precision)
    print(json.dumps({"median_seconds": statistics.median(times), "times": times, "flops": counter.get_total_flops(),
                      "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024


def matmul_peak(dtype, n=2048, repeats=10):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)


def loss_curves(model_name):
    """Loss over the first steps, fp32 and bf16, same seed and data (synthetic 128x128 scenes)."""
    from torch.utils.data import DataLoader
    from scenetools import config as configs, progress
    from scenetools.convert import convert
    from scenetools.sources.synthetic import SyntheticSource
    from scenetools.data import make_dataset
    from scenetools.scenefile import SceneFile
    progress.configure(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenes.h5"
        convert(SyntheticSource(scenes=CURVE_STEPS * BATCH + 10, views=3, size=128, seed=0), path, codec="raw")
        config = configs.resolve(model_name, PRESETS[model_name])
        config["data"]["num_rays"] = RAYS
        dataset = make_dataset(SceneFile(path), "train", config["data"], seed=0)
        batches = list(DataLoader(dataset, batch_size=BATCH))[:CURVE_STEPS]
        curves = {}
        for precision in ("fp32", "bf16"):
            model, optimizer = build(model_name, fused=True)
            for group in optimizer.param_groups:
                group["lr"] = 1e-4
            curves[precision] = [round(step(model, optimizer, b, precision), 5) for b in batches]
    return curves


def run(model_name):
    results = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--child", model_name, variant],
                             capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout)
        print(model_name, variant, round(results[variant]["median_seconds"], 3), file=sys.stderr)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    base = results["fp32"]["median_seconds"]
    summary = {}
    for variant, r in results.items():
        precision = VARIANTS[variant][0]
        seconds = r["median_seconds"]
        summary[variant] = {
            "median_step_seconds": round(seconds, 3), "rays_per_second": round(BATCH * RAYS / seconds),
            "peak_rss_mb": round(r["peak_rss_mb"]), "flops_per_step": r["flops"],
            "achieved_tflops": round(r["flops"] / seconds / 1e12, 3),
            "fraction_of_matmul_peak": round(r["flops"] / seconds / peaks[precision], 3),
            "speedup_vs_fp32": round(base / seconds, 2),
            "speedup_vs_reference_figure": round(REFERENCE_SECONDS[model_name] / seconds, 2)}
    curves = loss_curves(model_name)
    return {"setting": {"config": PRESETS[model_name], "batch": BATCH, "rays": RAYS, "input": list(INPUT_HW),
                        "warmup_steps": WARMUP, "timed_steps": TIMED},
            "matmul_peak_tflops": {k: round(v / 1e12, 3) for k, v in peaks.items()},
            "reference_seconds_per_step": REFERENCE_SECONDS[model_name], "variants": summary,
            "loss_curves_first_steps": curves}


def main():
    from common import write_result
    models = sys.argv[1:] or list(PRESETS)
    for model_name in models:
        write_result(f"train_step_{model_name}", run(model_name))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], sys.argv[3])
    else:
        main()
