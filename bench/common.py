"""Shared by the bench_*.py scripts: timing, peak memory, matmul peaks, child processes that
answer commands, and writing results as JSON.

The machine is shared and noisy, so every figure is a median over repeats, and
comparisons are ratios measured in the same run. torch is imported where it is used, so
that a child which only measures its memory (bench_convert) does not load it.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def apply_threads() -> None:
    """``BENCH_THREADS=N``: torch uses N threads in this process (default: torch's own choice,
    one per core). On a machine whose cores other work keeps busy, torch's threads wait for
    each other at every operation; one thread then steps several times faster, and the ratios
    measure the code rather than the load."""
    threads = os.environ.get("BENCH_THREADS")
    if threads:
        import torch
        torch.set_num_threads(int(threads))


def median_seconds(function, repeats: int) -> tuple:
    """Run ``function`` ``repeats`` times; return (median seconds, all times)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def spread(times) -> dict:
    """Median, min and max of a list of seconds, rounded to the millisecond."""
    return {"median": round(statistics.median(times), 3), "min": round(min(times), 3), "max": round(max(times), 3)}


def models_and_reference(description: str, known, default_note: str) -> tuple:
    """The command line ``[--ref DIR] [MODEL ...]`` of a bench against the references (DIR
    defaults to $BENCH_REF): (the models, all of ``known`` by default; DIR resolved, or None)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ref", type=Path, default=os.environ.get("BENCH_REF") or None,
                        help="folder holding the reference repositories (default: $BENCH_REF)")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"any of {', '.join(known)} ({default_note})")
    args = parser.parse_args()
    models = args.models or list(known)
    if set(models) - set(known):
        parser.error(f"unknown models {sorted(set(models) - set(known))}; known: {', '.join(known)}")
    return models, args.ref.resolve() if args.ref else None


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB. Unlike getrusage's ru_maxrss it is
    not carried over exec from a parent, so a child's figure is its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def matmul_peak(dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on this CPU (median of ``repeats``, after warm-up)."""
    import torch
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    seconds, _ = median_seconds(lambda: a @ b, repeats)
    return 2 * n ** 3 / seconds


def matmul_peaks() -> dict:
    """{"fp32": FLOP/s, "bf16": FLOP/s} measured now."""
    import torch
    return {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}


class Worker:
    """A child process that holds state (a model, its optimizer) and answers commands one at a
    time: the parent writes one JSON line, the child (see :func:`serve`) answers one. The
    child's own prints go to ``log``; its peak memory is its own."""

    def __init__(self, argv: list, log: Path):
        self.log = Path(log)
        self.process = subprocess.Popen([sys.executable, *map(str, argv)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True)
        self.hello = self._receive()

    def call(self, command: str, **arguments) -> dict:
        self.process.stdin.write(json.dumps({"command": command, **arguments}) + "\n")
        self.process.stdin.flush()
        return self._receive()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()

    def _receive(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            tail = "\n".join(self.log.read_text().splitlines()[-25:])
            raise RuntimeError(f"worker exited with code {self.process.returncode}; its log ends:\n{tail}")
        return json.loads(line)


def serve(start) -> None:
    """The child's side of :class:`Worker`. Everything printed from here on (the reference code
    prints a lot) goes to stderr, the log; the protocol keeps the real stdout. ``start()``
    builds the state and returns (hello, handlers); then each command is answered with
    ``handlers[command](**arguments)`` until stdin closes."""
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message):
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    hello, handlers = start()
    send(hello)
    for line in sys.stdin:
        message = json.loads(line)
        send(handlers[message.pop("command")](**message))


def random_batch(batch: int = 2, rays: int = 1024, input_hw=(120, 160), seed: int = 0) -> dict:
    """A fixed-seed batch in our layout: one random input view per scene (a camera 10 units
    from the origin looking at it) and random target rays and pixels."""
    import numpy as np
    import torch

    from scenetools import cameras
    g = torch.Generator().manual_seed(seed)
    H, W = input_hw
    az = torch.rand(batch, generator=g).numpy() * 6.28
    eyes = np.stack([10 * np.cos(az), 10 * np.sin(az), np.full(batch, 5.0)], -1)[:, None]
    c2w = cameras.look_at(eyes, np.zeros(3))
    K = cameras.intrinsics(175.0, 175.0, W / 2, H / 2)
    f = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    directions = torch.nn.functional.normalize(torch.randn(batch, rays, 3, generator=g), dim=-1)
    return {"input_images": torch.rand(batch, 1, 3, H, W, generator=g), "input_camera_pos": f(eyes),
            "input_rays": f(cameras.ray_directions(K, c2w, H, W)), "input_camera_to_world": f(c2w),
            "input_intrinsics": f(K).expand(batch, 1, 3, 3),
            "target_camera_pos": f(eyes).expand(batch, rays, 3).contiguous(), "target_rays": directions,
            "target_pixels": torch.rand(batch, rays, 3, generator=g),
            "render_range": torch.tensor([[0.5, 60.0]]).expand(batch, 2)}


def write_result(name: str, result: dict) -> Path:
    import torch
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                             "torch": torch.__version__, "threads": torch.get_num_threads(),
                                             "bench_threads": os.environ.get("BENCH_THREADS") or "torch's default"},
              **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
