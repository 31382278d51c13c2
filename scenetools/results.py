"""`make results`: every reproduction row under OUT (``examples/reproduce.sh``) in one table,
OUT/results.md: our figure next to the published one, the steps trained, GPUs and wall time,
and whether the row is complete, partial or a smoke run (formats/reproduction.md).

    python -m scenetools.results OUT
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from .atomic import atomic_output
from .errors import BadInput

COLUMNS = ("row", "metric", "ours", "published", "source", "checked", "steps trained", "GPUs", "wall time",
           "status")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise BadInput(f"not readable JSON ({error})", path) from None


def max_steps(run: Path) -> int | None:
    """The step the row's training stops at (its config.yaml), None before training began."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as error:
        raise BadInput(f"not readable YAML ({error})", run / "config.yaml") from None
    return config["training"]["max_steps"]


def wall_time(folder: Path) -> str:
    """Seconds summed over every run of the row's pipeline (one line each), as h:mm:ss."""
    try:
        runs = [int(line) for line in (folder / "wall-seconds").read_text().split()]
    except FileNotFoundError:
        runs = []
    except (OSError, ValueError) as error:
        raise BadInput(f"not a list of seconds ({error})", folder / "wall-seconds") from None
    if not runs:
        return "—"
    seconds = sum(runs)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def number(value, metric: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if "psnr" in metric else f"{value:.3f}"


def row_lines(folder: Path) -> list[list[str]]:
    """One table line per published figure of the row in ``folder``."""
    row = read_json(folder / "row.json")
    target = max_steps(folder / "run")
    lines = []
    for figure in row["published"]:
        metrics = read_json(folder / figure["file"])
        ours = metrics["results"].get(figure["metric"]) if metrics else None
        step = metrics["step"] if metrics else None
        if row["smoke"]:
            status = "smoke run (tiny data, shrunk model: not the paper's figure)"
        elif metrics is None:
            status = "not evaluated yet"
        elif target is not None and step < target:
            status = f"partial: {step / target:.0%} of the steps"
        else:
            status = "complete"
        paper_steps = f"; paper {figure['steps']:,}" if figure["steps"] else ""
        steps = ("—" if step is None else f"{step:,}") + (f" of {target:,}" if target else "") + paper_steps
        label = figure["metric"] + (f" ({figure['file'].removeprefix('metrics-').removesuffix('.json')})"
                                    if figure["file"] != "metrics.json" else "")
        lines.append([row["row"], label, number(ours, figure["metric"]), number(figure["value"], figure["metric"]),
                      figure["source"], figure["checked"], steps, str(row["gpus"]), wall_time(folder), status])
    return lines


def table(out: Path) -> str:
    lines = [line for folder in sorted(out.iterdir()) if (folder / "row.json").is_file()
             for line in row_lines(folder)]
    rows = [COLUMNS, ["---"] * len(COLUMNS), *lines]
    return ("# Reproduction results\n\nWritten by `make results` from the rows under this folder "
            "(examples/reproduce.sh). Published figures marked other than \"read\" were not checked "
            "against their source.\n\n" + "\n".join("| " + " | ".join(cells) + " |" for cells in rows) + "\n")


def write_results(out: Path) -> Path:
    if not out.is_dir():
        raise BadInput("no such folder (run a reproduce target first)", out)
    path = out / "results.md"
    text = table(out)
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m scenetools.results OUT", file=sys.stderr)
        return 2
    try:
        path = write_results(Path(argv[0]))
    except BadInput as error:
        print(f"results: error: {error}", file=sys.stderr)
        return 2
    print(path.read_text(), end="")
    print(f"written {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
