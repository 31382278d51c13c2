"""Shared by the bench_*.py scripts: timing medians and writing results as JSON.

The machine is shared and noisy, so every figure is a median over repeats, and
comparisons are ratios measured in the same run.
"""
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def median_seconds(function, repeats: int) -> tuple:
    """Run ``function`` ``repeats`` times; return (median seconds, all times)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    result = {"benchmark": name, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                             "torch": torch.__version__, "threads": torch.get_num_threads()},
              **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return path
