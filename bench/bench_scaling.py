"""The cost curve of a training step: SRT and OSRT at the reference CLEVR3D size (one 120x160
input view per scene), batch 1, 2 and 4 scenes x 1, 2 and 4 x 1,024 target rays per scene.

For each setting: our trainer's step (bench/ours.py: forward, backward, gradient norm, fused
Adam) in the precision of ``BENCH_PRECISION`` (default bf16, as the CPU configs train), the
median of ``BENCH_SCALING_STEPS`` (default 3) steps after one warm-up; the peak resident
memory of the process doing it (each setting runs in its own process); and the memory
``scene-train --dry-run`` estimates for it (scenetools.memory): the persistent state (16 bytes
per parameter) and the activations autograd keeps for the backward pass, counted in fp32 on
that very batch.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import apply_threads, peak_rss_mb, random_batch, write_result  # noqa: E402

import ours  # noqa: E402
from scenetools import memory  # noqa: E402

MODELS = ("srt", "osrt")
BATCHES, RAYS = (1, 2, 4), (1024, 2048, 4096)
STEPS = int(os.environ.get("BENCH_SCALING_STEPS", 3))
PRECISION = os.environ.get("BENCH_PRECISION", "bf16")
MB = 2 ** 20


def measure(name: str, batch_size: int, rays: int) -> dict:
    model, config = ours.build(name)
    batch = random_batch(batch_size, rays)
    activations = memory.activation_bytes(model, batch)
    trainer = ours.Trainer(model, config, PRECISION)
    times = []
    for step in range(STEPS + 1):
        start = time.perf_counter()
        trainer.step(batch, step)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    return {"batch": batch_size, "rays_per_scene": rays, "step_seconds": round(seconds, 3),
            "rays_per_second": round(batch_size * rays / seconds),
            "peak_rss_mb": round(peak_rss_mb()), "estimated_activation_mb": round(activations / MB),
            "estimated_persistent_mb": round(memory.BYTES_PER_PARAMETER * memory.trainable_parameters(model) / MB)}


def main():
    apply_threads()
    results = {}
    for name in MODELS:
        rows = []
        for batch_size in BATCHES:
            for rays in RAYS:
                child = subprocess.run([sys.executable, __file__, "--one", name, str(batch_size), str(rays)],
                                       stdout=subprocess.PIPE, check=True, text=True)
                rows.append(json.loads(child.stdout.splitlines()[-1]))
                print(name, rows[-1], file=sys.stderr)
        results[name] = {"preset": ours.PRESETS[name], "rows": rows}
    write_result("scaling", {"precision": PRECISION, "steps": STEPS, "models": results})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:  # one setting, in a process of its own: its own peak memory
        apply_threads()
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
