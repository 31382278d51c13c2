"""Conversion throughput (scenes/s) per source, and peak memory at 100 and 1,000 scenes.

Each source converts a fixture generated in the exact on-disk layout of the real dataset
(tests/fixtures/), raw storage, one process. Every conversion runs in a fresh process whose
peak RSS is its VmHWM (getrusage's ru_maxrss would carry the parent's over exec), so the
memory figures do not mix. Memory must not grow
with the scene count: the ratio of the 1,000-scene peak to the 100-scene peak should be ~1.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).parent))


def _kubric(root, n):
    from fixtures.kubric import make_kubric_dataset
    return make_kubric_dataset(root, n, version="2.8.0", size=128)["path"]


def _nerfstudio(root, n):
    from fixtures.nerfstudio import make_nerfstudio_dataset
    return make_nerfstudio_dataset(root, n)["path"]


#: source -> (fixture setting, function(root, num_scenes) -> IN path)
FIXTURES = {
    "nmr": ("24 views 64x64", lambda root, n: __import__("fixtures.nmr", fromlist=["x"]).make_nmr_dataset(root, n)["root"]),
    "obsurf": ("CLEVR3D, 3 views 320x240 with depth and masks",
               lambda root, n: __import__("fixtures.obsurf", fromlist=["x"]).make_obsurf_dataset(root, n)["root"]),
    "srn": ("cars, 10 views 128x128 RGBA",
            lambda root, n: __import__("fixtures.srn", fromlist=["x"]).make_srn_dataset(root, n, views=10, size=128)["root"]),
    "semantic": ("Chair, 10 views 128x128 with seg maps",
                 lambda root, n: __import__("fixtures.semantic", fromlist=["x"]).make_semantic_dataset(
                     root, n, views=10, size=128)["object_folder"]),
    "kubric": ("MSN-hard 2.8.0 layout, 10 views 128x128 with depth, instance and category", _kubric),
    # One capture: the count is frames, and a scene is a whole split of them, so its memory
    # grows with the frames of a split by design.
    "nerfstudio": ("one transforms.json capture; the count is its number of frames", _nerfstudio),
}
SCENE_COUNTS = (100, 1000)


def child(source_name, input_path, out):
    """Run one conversion in this process; print seconds and peak RSS as JSON."""
    sys.path.insert(0, str(ROOT))
    from common import peak_rss_mb
    from scenetools import progress
    from scenetools.convert import convert
    from scenetools.sources import source_class

    progress.configure(quiet=True)
    source = source_class(source_name)(Path(input_path))
    start = time.perf_counter()
    convert(source, out, codec="raw")
    seconds = time.perf_counter() - start
    scenes = len(source.scan())
    print(json.dumps({"seconds": seconds, "scenes": scenes, "peak_rss_mb": peak_rss_mb()}))


def measure(source_name, build, count, tmp):
    root = Path(tmp) / f"{source_name}-{count}"
    root.mkdir()
    input_path = build(root, count)
    out = Path(tmp) / f"{source_name}-{count}.h5"
    result = subprocess.run([sys.executable, __file__, "--child", source_name, str(input_path), str(out)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main():
    from common import write_result

    results = {}
    for name, (setting, build) in FIXTURES.items():
        try:
            with tempfile.TemporaryDirectory() as tmp:
                runs = {count: measure(name, build, count, tmp) for count in SCENE_COUNTS}
        except ImportError as error:  # kubric without tensorflow, or a fixture not yet there
            results[name] = {"skipped": str(error)}
            continue
        big, small = runs[SCENE_COUNTS[-1]], runs[SCENE_COUNTS[0]]
        results[name] = {
            "fixture": setting,
            "scenes_per_second": round(big["scenes"] / big["seconds"], 1),
            "peak_rss_mb": {str(c): round(r["peak_rss_mb"], 1) for c, r in runs.items()},
            "peak_rss_ratio_1000_vs_100": round(big["peak_rss_mb"] / small["peak_rss_mb"], 3),
            "scenes_converted": {str(c): r["scenes"] for c, r in runs.items()},
        }
        print(name, results[name], file=sys.stderr)
    write_result("conversion", {"setting": {"codec": "raw", "workers": 1, "scene_counts": list(SCENE_COUNTS)},
                                "sources": results})


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(*sys.argv[2:5])
    else:
        main()
