"""Synthetic generation: 1,000 scenes x 10 views at 64x64 into a raw scene file (goal: < 60 s)."""
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, write_result  # noqa: E402

from scenetools import progress  # noqa: E402
from scenetools.convert import convert  # noqa: E402
from scenetools.sources.synthetic import SyntheticSource  # noqa: E402

SCENES, VIEWS, SIZE, REPEATS = 1000, 10, 64, 3


def main():
    progress.configure(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synthetic.h5"

        def generate():
            convert(SyntheticSource(scenes=SCENES, views=VIEWS, size=SIZE, seed=0), out, codec="raw")
            out.unlink()

        seconds, times = median_seconds(generate, REPEATS)
    write_result("synthetic_generation", {
        "setting": {"scenes": SCENES, "views": VIEWS, "size": SIZE, "codec": "raw", "repeats": REPEATS},
        "median_seconds": round(seconds, 2), "times": [round(t, 2) for t in times],
        "scenes_per_second": round(SCENES / seconds, 1), "goal_seconds": 60, "meets_goal": seconds < 60})


if __name__ == "__main__":
    main()
