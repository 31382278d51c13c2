"""Reader throughput: random training batches per second from a scene file, raw and PNG.

Setting: synthetic 64x64 scenes with 10 views, the MSN protocol (5 random input views,
1024 target rays from the other 5), batches of 16 scenes, shuffled, through a DataLoader
with 0 and 2 workers.
"""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, write_result  # noqa: E402

from torch.utils.data import DataLoader  # noqa: E402

from scenetools import progress  # noqa: E402
from scenetools.convert import convert  # noqa: E402
from scenetools.data import PROTOCOLS, SceneDataset, ShardedSampler  # noqa: E402
from scenetools.sources.synthetic import SyntheticSource  # noqa: E402

SCENES, BATCH, BATCHES, REPEATS = 1000, 16, 40, 5


def batches_per_second(path, workers):
    dataset = SceneDataset(path, "train", PROTOCOLS["msn"], num_rays=1024)
    sampler = ShardedSampler(len(dataset), seed=0)
    loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True)
    epoch = [0]

    def read():
        epoch[0] += 1
        sampler.set_epoch(epoch[0])
        for i, _ in enumerate(loader):
            if i + 1 == BATCHES:
                return
        raise RuntimeError("fewer batches per epoch than BATCHES")

    read()  # warm up: workers started, page cache filled
    seconds, _ = median_seconds(read, REPEATS)
    return BATCHES / seconds


def main():
    progress.configure(quiet=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for codec in ("raw", "png"):
            path = Path(tmp) / f"{codec}.h5"
            convert(SyntheticSource(scenes=SCENES, views=10, size=64, seed=0), path, codec=codec)
            for workers in (0, 2):
                results[f"{codec}_workers{workers}"] = round(batches_per_second(path, workers), 2)
    write_result("reader_throughput", {
        "setting": {"scenes": SCENES, "views": 10, "size": 64, "protocol": "msn (5 inputs, 1024 rays)",
                    "batch_size": BATCH, "batches_per_repeat": BATCHES, "repeats": REPEATS},
        "batches_per_second": results,
        "png_vs_raw_ratio": {w: round(results[f"png_workers{w}"] / results[f"raw_workers{w}"], 3) for w in (0, 2)}})


if __name__ == "__main__":
    main()
