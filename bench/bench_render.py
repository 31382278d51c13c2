"""Render speed: frames per second along an orbit, at 64x64 and 128x128, for SRT, OSRT and
ObSuRF (rgb alone: ObSuRF volume-renders, coarse and fine samples through every slot).

Two sizes of each model: the CPU configs the demos render with (*/synthetic) and the
reference CLEVR3D sizes (*/clevr3d), each in fp32 and in bf16 autocast (scene-render
--precision). The scene is encoded once (timed separately); each frame decodes every pixel's
ray in chunks of 8192, as scene-render does. Weights are random: speed does not depend on them.
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import random_batch, write_result  # noqa: E402

from scenetools import cameras  # noqa: E402
from scenetools import config as configs  # noqa: E402
from scenetools.camera_paths import SceneFrame, motion_path  # noqa: E402
from scenetools.device import autocast  # noqa: E402
from scenetools.models import build_model  # noqa: E402
from scenetools.render import render_path  # noqa: E402

MODELS = {"srt": ("srt/synthetic", "srt/clevr3d"), "osrt": ("osrt/synthetic", "osrt/clevr3d"),
          "obsurf": ("obsurf/synthetic", "obsurf/clevr3d")}
SIZES, FRAMES = (64, 128), 6


def measure(model_name, preset, size, precision="fp32"):
    torch.manual_seed(0)
    model = build_model(model_name, configs.resolve(model_name, preset)["model"]).eval()
    data = random_batch()
    start = time.perf_counter()
    with torch.no_grad():
        scene = model.encode({k: v[:1] for k, v in data.items() if k.startswith("input_")})
    encode_seconds = time.perf_counter() - start
    base = cameras.look_at([10.0, 0.0, 5.0], [0.0, 0.0, 0.0])
    K = cameras.intrinsics(1.1 * size, 1.1 * size, size / 2, size / 2)
    path = motion_path("rotate", base, K, SceneFrame(base[None], [0, 0, 1]), FRAMES + 1)
    times, last = [], time.perf_counter()
    cpu = torch.device("cpu")
    for _ in render_path(model, scene, path, size, size, (0.5, 60.0), cpu, outputs=(),  # rgb
                         autocast=autocast(cpu, precision)):
        now = time.perf_counter()
        times.append(now - last)
        last = now
    seconds = statistics.median(times[1:])  # the first frame includes warm-up
    return {"frames_per_second": round(1 / seconds, 2), "median_frame_seconds": round(seconds, 4),
            "rays_per_second": round(size * size / seconds), "encode_seconds": round(encode_seconds, 3)}


def main():
    results = {}
    for model_name, presets in MODELS.items():
        for preset in presets:
            for size in SIZES:
                for precision in ("fp32", "bf16"):
                    key = f"{preset}@{size}x{size}/{precision}"
                    results[key] = measure(model_name, preset, size, precision)
                    print(key, results[key], file=sys.stderr)
    write_result("render_speed", {"setting": {"frames": FRAMES, "chunk": 8192, "precision": "fp32 and bf16",
                                              "threads": torch.get_num_threads()}, "results": results,
                                  "note": "weights are random; speed does not depend on them"})


if __name__ == "__main__":
    main()
