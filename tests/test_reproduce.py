"""The reproduction targets (examples/reproduce.sh, `make reproduce-<row>[-smoke]`, `make
results`): the SRT rows' smoke twins through make, a rerun that continues instead of
starting over, and the results table against hand-made rows. The other rows' smoke twins:
test_reproduce_slots.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.smoke import assert_smoke_row, make_smoke, smoke_folder  # noqa: F401 (fixture "out")
from scenetools.results import write_results

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("row", ["srt-nmr", "srt-msn", "isrt-msn", "osrt-msn-hard"])
def test_smoke_twin(out, row):
    assert_smoke_row(out, row, make_smoke(row, out))


def test_running_a_target_again_continues_instead_of_starting_over(out):
    """After the smoke run of srt-nmr (above): the same pipeline again converts nothing,
    trains no step, rescores nothing (the metrics are newer than the checkpoint), and adds
    its seconds to the wall time."""
    metrics = out / "srt-nmr" / "metrics.json"
    if not metrics.exists():
        assert_smoke_row(out, "srt-nmr", make_smoke("srt-nmr", out))
    before = metrics.stat().st_mtime_ns, (out / "data" / "nmr.h5").stat().st_mtime_ns
    env = {**os.environ, "SMOKE": "1", "DATA": str(out / "datasets" / "nmr"), "OUT": str(out),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run([REPO / "examples" / "reproduce.sh", "srt-nmr"], env=env, cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"resuming {out / 'srt-nmr' / 'run'} from step 2" in result.stderr
    assert "evaluating" not in result.stderr
    assert (metrics.stat().st_mtime_ns, (out / "data" / "nmr.h5").stat().st_mtime_ns) == before
    assert len((out / "srt-nmr" / "wall-seconds").read_text().split()) == 2


def fake_row(out: Path, row: str, *, step=None, max_steps=1000, seconds=(), smoke=False) -> None:
    folder = out / row
    (folder / "run").mkdir(parents=True)
    figure = {"metric": "psnr", "file": "metrics.json", "value": 27.28, "steps": 3000000,
              "source": "stelzner/srt README", "checked": "read"}
    (folder / "row.json").write_text(json.dumps({"row": row, "dataset": "nmr", "data": "/d", "model": "srt",
                                                 "config": "srt/nmr", "gpus": 8, "accumulate": "1",
                                                 "smoke": smoke, "published": [figure]}))
    (folder / "run" / "config.yaml").write_text(f"training:\n  max_steps: {max_steps}\n")
    if step is not None:
        (folder / "metrics.json").write_text(json.dumps({"step": step, "results": {"psnr": 24.456}}))
    (folder / "wall-seconds").write_text("".join(f"{s}\n" for s in seconds))


def test_results_table_reports_complete_partial_unscored_and_smoke_rows(tmp_path):
    fake_row(tmp_path, "a-complete", step=1000, seconds=(3600, 125))
    fake_row(tmp_path, "b-partial", step=250, seconds=(59,))
    fake_row(tmp_path, "c-unscored")
    fake_row(tmp_path, "d-smoke", step=2, max_steps=2, smoke=True)
    lines = write_results(tmp_path).read_text().splitlines()
    cells = {line.split(" | ")[0][2:]: [c.strip() for c in line.strip("| ").split(" | ")]
             for line in lines if line.startswith("| ") and not line.startswith("| row")
             and not line.startswith("| ---")}
    assert cells["a-complete"][2:4] == ["24.46", "27.28"]
    assert cells["a-complete"][6:] == ["1,000 of 1,000; paper 3,000,000", "8", "1:02:05", "complete"]
    assert cells["b-partial"][8:] == ["0:00:59", "partial: 25% of the steps"]
    assert cells["c-unscored"][2] == "—" and cells["c-unscored"][9] == "not evaluated yet"
    assert cells["c-unscored"][8] == "—"  # no wall-seconds lines yet: sum 0 would claim a run
    assert cells["d-smoke"][9].startswith("smoke run")


def test_a_target_without_data_says_what_it_needs():
    result = subprocess.run(["make", "--no-print-directory", f"VENV={sys.prefix}", f"-o{sys.prefix}/.installed",
                             "reproduce-srt-nmr"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "DATA=<the downloaded dataset> is required" in result.stderr
